package dnsupdate

import (
	"errors"
	"fmt"
	"strings"
)

// Kinds of failure; test with errors.Is(err, ErrConflict).
var (
	// ErrRefused: the server did not accept the key or its policy forbids
	// the change (REFUSED, NOTAUTH). Nothing was changed.
	ErrRefused = errors.New("refused by the server")
	// ErrConflict: the records are not what the change expected: someone
	// else changed them (YXRRSET, NXRRSET, YXDOMAIN, NXDOMAIN). Nothing was
	// changed.
	ErrConflict = errors.New("the records changed since they were read")
	// ErrUnreachable: no answer (timeout, connection refused).
	ErrUnreachable = errors.New("server unreachable")
	// ErrServer: the server failed (SERVFAIL, NOTIMP, FORMERR, ...).
	// Nothing was changed.
	ErrServer = errors.New("server error")
	// ErrInvalid: the change is malformed (a name outside the zone, a bad
	// value or TTL); nothing was sent.
	ErrInvalid = errors.New("invalid change")
	// ErrNotConfirmed: the server accepted the update but did not answer
	// the new data within the confirmation timeout, or its reply's
	// signature did not verify.
	ErrNotConfirmed = errors.New("update not confirmed")
)

// Error is a failed Apply or Query.
type Error struct {
	Op     string // "update" or "query"
	Server string // host:port
	Name   string // the record's owner name
	Type   string // the record's type
	// Rcode is the server's answer ("REFUSED"), "" when it gave none.
	Rcode string
	// TSIGError is the TSIG error the server reported ("BADSIG", "BADKEY",
	// "BADTIME"), "" when none.
	TSIGError string
	// Kind is one of the Err* sentinels.
	Kind error
	// Detail is the lower layer's explanation, already redacted.
	Detail string
	// Changed says whether the records were changed: false for every kind
	// but ErrNotConfirmed (true: the server said NOERROR) and ErrUnreachable
	// (unknown when Unknown is set).
	Changed bool
	// Unknown is set when the outcome of an update cannot be told (the
	// server stopped answering after the update was sent).
	Unknown bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dns %s %s %s at %s: %v", e.Op, e.Name, e.Type, e.Server, e.Kind)
	if e.Rcode != "" {
		fmt.Fprintf(&b, " (%s", e.Rcode)
		if e.TSIGError != "" {
			fmt.Fprintf(&b, ", TSIG %s", e.TSIGError)
		}
		b.WriteString(")")
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	if hint := e.hint(); hint != "" {
		b.WriteString(": ")
		b.WriteString(hint)
	}
	return b.String()
}

func (e *Error) hint() string {
	if e.Op != "update" {
		switch e.Kind {
		case ErrRefused:
			return "check the zone's key_name and key_file and the server's allow-query"
		case ErrUnreachable:
			return "check that the server runs and the address is right"
		}
		return ""
	}
	if e.Unknown {
		return "the update was sent but its outcome is unknown: the record is either all old or all new (an update is atomic); `golive-controller dns show " + e.Name + "` tells which"
	}
	switch e.Kind {
	case ErrRefused:
		return "the server rejected the key or its update policy forbids this change; check key_name, key_algorithm and key_file, and the zone's update-policy/ACL for the key; nothing was changed"
	case ErrConflict:
		return "someone else changed the record; nothing was changed: run `golive-controller dns show " + e.Name + "` and retry against what it shows"
	case ErrServer, ErrInvalid:
		return "nothing was changed"
	case ErrUnreachable:
		return "nothing was changed; check that the server runs and the address is right"
	case ErrNotConfirmed:
		return "the server accepted the update; `golive-controller dns show " + e.Name + "` shows what it answers now"
	}
	return ""
}

// Is makes errors.Is(err, ErrConflict) work on an *Error.
func (e *Error) Is(target error) bool { return target == e.Kind }

// redact removes the secret from text that came from below (a library's
// error message). No known path puts it there; this keeps it so.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[redacted]")
}
