package dnsupdate

import (
	"context"
	"errors"
)

// transport is what this package needs of a DNS library: one UPDATE, one
// query, and the library's canonical text for record values. miekg.go
// implements it on github.com/miekg/dns v1; a move to v2 replaces that file.
type transport interface {
	update(ctx context.Context, u updateMsg) (reply, error)
	query(ctx context.Context, name, typ string) (reply, error)
	canonical(name, typ string, values []string) ([]string, error)
}

// updateMsg is one RFC 2136 UPDATE: prerequisite on old, replace with new.
type updateMsg struct {
	zone, name, typ string
	ttl             uint32
	// old: the RRset must exist with exactly these values; empty: it must
	// not exist.
	old []string
	// new replaces the RRset; empty deletes it.
	new []string
}

// reply is what came back from the server.
type reply struct {
	rcode         string // "NOERROR", "REFUSED", ...
	tsigError     string // "BADSIG", ... "" when none
	signed        bool   // the reply carried a TSIG record
	verifyErr     error  // the reply's TSIG did not verify
	authoritative bool
	records       []record // the answer's records of the asked name and type
}

type record struct {
	ttl   uint32
	value string
}

// errNotSent wraps a transport error that happened before the message left
// (dial failed): the server cannot have acted on it.
type errNotSent struct{ err error }

func (e errNotSent) Error() string { return e.err.Error() }
func (e errNotSent) Unwrap() error { return e.err }

func notSent(err error) bool {
	var ns errNotSent
	return errors.As(err, &ns)
}
