package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
)

func setup(t *testing.T, n int) (*audit.Log, state.Keys, func() context.Context, *clientv3.Client) {
	t.Helper()
	cl := etcdtest.Start(t, 1)
	cli := cl.Client(t)
	keys := state.NewKeys("/golive/")
	l := audit.New(cli, keys)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	actors := []string{"alice", "bob"}
	for i := 0; i < n; i++ {
		if _, _, err := l.Append(ctx(), audit.Entry{Actor: actors[i%2], Action: fmt.Sprintf("act%d", i%3), Outcome: "ok", Source: "127.0.0.1:1"}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return l, keys, ctx, cli
}

func TestVerifyFindsTheFirstBrokenLink(t *testing.T) {
	l, keys, ctx, cli := setup(t, 6)
	if seq, why, err := l.Verify(ctx()); err != nil || seq != 0 {
		t.Fatalf("intact chain: %d %q %v", seq, why, err)
	}
	entries, _, _, err := l.Snapshot(ctx(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) {
		if _, err := cli.Put(ctx(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		if _, err := cli.Delete(ctx(), k); err != nil {
			t.Fatal(err)
		}
	}

	// Rewrite entry 3's actor: 3 is the first broken link.
	tampered := entries[2]
	tampered.Actor = "mallory"
	b, _ := json.Marshal(tampered)
	put(keys.AuditEntry(3), string(b))
	seq, why, err := l.Verify(ctx())
	if err != nil || seq != 3 || !strings.Contains(why, "altered") {
		t.Fatalf("altered entry 3: %d %q %v", seq, why, err)
	}
	// Recomputing its hash does not help: entry 4's prev_hash breaks.
	tampered.Hash = tampered.ComputeHash()
	b, _ = json.Marshal(tampered)
	put(keys.AuditEntry(3), string(b))
	if seq, why, _ := l.Verify(ctx()); seq != 4 || !strings.Contains(why, "prev_hash") {
		t.Fatalf("rehashed entry 3: %d %q", seq, why)
	}
	// Restore, then delete entry 2.
	b, _ = json.Marshal(entries[2])
	put(keys.AuditEntry(3), string(b))
	del(keys.AuditEntry(2))
	if seq, why, _ := l.Verify(ctx()); seq != 2 || !strings.Contains(why, "missing") {
		t.Fatalf("deleted entry 2: %d %q", seq, why)
	}
	b, _ = json.Marshal(entries[1])
	put(keys.AuditEntry(2), string(b))
	// Cut the newest two entries off: the head still says 6.
	del(keys.AuditEntry(6))
	del(keys.AuditEntry(5))
	if seq, why, _ := l.Verify(ctx()); seq != 5 || !strings.Contains(why, "removed") {
		t.Fatalf("truncated log: %d %q", seq, why)
	}
}

func TestSnapshotFilters(t *testing.T) {
	l, _, ctx, _ := setup(t, 9)
	got, _, _, err := l.Snapshot(ctx(), audit.Filter{Actor: "alice", Action: "act0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if e.Actor != "alice" || e.Action != "act0" {
			t.Fatalf("filter let through %+v", e)
		}
	}
	if len(got) != 2 { // entries 1 (i=0) and 7 (i=6)
		t.Fatalf("got %d entries, want 2", len(got))
	}
	if got, _, _, _ := l.Snapshot(ctx(), audit.Filter{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		t.Fatalf("since the future: %d entries", len(got))
	}
	if got, seq, _, _ := l.Snapshot(ctx(), audit.Filter{Limit: 3}); len(got) != 3 || got[2].Seq != 9 || seq != 9 {
		t.Fatalf("limit 3: %+v", got)
	}
}
