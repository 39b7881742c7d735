// Package audit appends control actions to a hash-chained log in etcd.
//
// Each entry carries the sha256 of the previous entry; audit/head holds the
// last sequence number and hash. An append is one etcd transaction that
// compares the head's mod revision, so entries are strictly ordered and no
// two writers fork the chain. Callers put their own writes (e.g. deleting the
// approval) in the same transaction, so an action and its audit entry are
// committed together or not at all.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/state"
)

// Entry is one audited control action.
type Entry struct {
	Seq      uint64    `json:"seq"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Outcome  string    `json:"outcome"`
	Reason   string    `json:"reason,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	Source   string    `json:"source,omitempty"`
	PrevHash string    `json:"prev_hash"`
	Hash     string    `json:"hash"`
}

// ComputeHash is the sha256 of the entry's fields other than Hash.
func (e Entry) ComputeHash() string {
	c := e
	c.Hash = ""
	c.At = c.At.UTC()
	b, _ := json.Marshal(c) // fields are plain; Marshal cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ErrPrecondition means the caller's compares failed: nothing was written.
var ErrPrecondition = errors.New("precondition failed")

// Log is the audit log under a key prefix.
type Log struct {
	cli  *clientv3.Client
	keys state.Keys
	now  func() time.Time
}

// New returns a Log.
func New(cli *clientv3.Client, keys state.Keys) *Log {
	return &Log{cli: cli, keys: keys, now: time.Now}
}

// Append writes e (Seq, At, PrevHash and Hash are filled in) together with
// ops, if every cmp holds. It returns ErrPrecondition, having written
// nothing, when a cmp fails. The response is that of the committing txn.
func (l *Log) Append(ctx context.Context, e Entry, cmps []clientv3.Cmp, ops []clientv3.Op) (Entry, *clientv3.TxnResponse, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return Entry{}, nil, err
		}
		hresp, err := l.cli.Get(ctx, l.keys.AuditHead())
		if err != nil {
			return Entry{}, nil, fmt.Errorf("read audit head: %w", err)
		}
		var h head
		var headRev int64
		if len(hresp.Kvs) == 1 {
			headRev = hresp.Kvs[0].ModRevision
			if err := json.Unmarshal(hresp.Kvs[0].Value, &h); err != nil {
				return Entry{}, nil, fmt.Errorf("audit head is corrupt: %w", err)
			}
		}
		ne := e
		ne.Seq = h.Seq + 1
		if ne.At.IsZero() {
			ne.At = l.now()
		}
		ne.At = ne.At.UTC().Truncate(time.Microsecond)
		ne.PrevHash = h.Hash
		ne.Hash = ne.ComputeHash()
		eb, _ := json.Marshal(ne)
		hb, _ := json.Marshal(head{Seq: ne.Seq, Hash: ne.Hash})
		all := append([]clientv3.Op{
			clientv3.OpPut(l.keys.AuditEntry(ne.Seq), string(eb)),
			clientv3.OpPut(l.keys.AuditHead(), string(hb)),
		}, ops...)
		inner := clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(l.keys.AuditHead()), "=", headRev)},
			all, nil)
		resp, err := l.cli.Txn(ctx).If(cmps...).Then(inner).Commit()
		if err != nil {
			return Entry{}, nil, fmt.Errorf("append audit entry: %w", err)
		}
		if !resp.Succeeded {
			return Entry{}, resp, ErrPrecondition
		}
		if resp.Responses[0].GetResponseTxn().Succeeded {
			return ne, resp, nil
		}
		// Another writer appended first: read the new head and try again.
	}
}

// Filter selects audit entries; zero fields select everything.
type Filter struct {
	Action string
	Actor  string
	Since  time.Time
	Until  time.Time
	// Limit keeps the newest Limit matching entries when > 0.
	Limit int
}

func (f Filter) match(e Entry) bool {
	return (f.Action == "" || e.Action == f.Action) && (f.Actor == "" || e.Actor == f.Actor) &&
		(f.Since.IsZero() || !e.At.Before(f.Since)) && (f.Until.IsZero() || e.At.Before(f.Until))
}

// Snapshot returns the entries f selects, oldest first, and the chain's
// head (the newest entry's sequence number and hash; 0, "" when empty), all
// read at one etcd revision so that a verifier sees a consistent log.
func (l *Log) Snapshot(ctx context.Context, f Filter) ([]Entry, uint64, string, error) {
	hresp, err := l.cli.Get(ctx, l.keys.AuditHead())
	if err != nil {
		return nil, 0, "", fmt.Errorf("read audit head: %w", err)
	}
	var h head
	if len(hresp.Kvs) == 1 {
		if err := json.Unmarshal(hresp.Kvs[0].Value, &h); err != nil {
			return nil, 0, "", fmt.Errorf("audit head is corrupt: %w", err)
		}
	}
	resp, err := l.cli.Get(ctx, l.keys.AuditEntries(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
		clientv3.WithRev(hresp.Header.Revision))
	if err != nil {
		return nil, 0, "", fmt.Errorf("read audit log: %w", err)
	}
	var out []Entry
	for _, kv := range resp.Kvs {
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, 0, "", fmt.Errorf("audit entry %s is corrupt: %w", kv.Key, err)
		}
		if f.match(e) {
			out = append(out, e)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, h.Seq, h.Hash, nil
}

// Verify recomputes the chain and returns the sequence number of the first
// broken link (0 when the chain is intact) with a reason.
func (l *Log) Verify(ctx context.Context) (uint64, string, error) {
	entries, seq, hash, err := l.Snapshot(ctx, Filter{})
	if err != nil {
		return 0, "", err
	}
	bad, why := VerifyChain(entries, seq, hash)
	return bad, why, nil
}

// VerifyChain checks a whole log, oldest first: sequence numbers 1..n
// without gaps, each entry's hash over its content, each prev_hash equal to
// the previous entry's hash, and the newest entry equal to the head
// (headSeq, headHash) the controller keeps, so that a log cut short is
// caught too. It returns the first broken link's sequence number (0: the
// chain is intact) and why.
func VerifyChain(entries []Entry, headSeq uint64, headHash string) (uint64, string) {
	prev := ""
	for i, e := range entries {
		if e.Seq != uint64(i+1) {
			return uint64(i + 1), fmt.Sprintf("entry %d is missing (found %d in its place)", i+1, e.Seq)
		}
		if e.PrevHash != prev {
			return e.Seq, "prev_hash does not match the previous entry's hash"
		}
		if e.ComputeHash() != e.Hash {
			return e.Seq, "hash does not match the entry's content (the entry was altered)"
		}
		prev = e.Hash
	}
	n := uint64(len(entries))
	switch {
	case headSeq > n:
		return n + 1, fmt.Sprintf("the head says %d entries but only %d are present (entries %d..%d were removed)", headSeq, n, n+1, headSeq)
	case headSeq < n:
		return headSeq + 1, fmt.Sprintf("entries after the head (%d) were added outside the log", headSeq)
	case n > 0 && headHash != prev:
		return n, "the newest entry's hash differs from the head's"
	}
	return 0, ""
}
