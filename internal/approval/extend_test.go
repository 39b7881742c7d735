package approval_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
)

func TestExtendKeepsTokenMovesExpiry(t *testing.T) {
	m, cli, log := newManager(t)
	ctx := t.Context()
	a, err := m.Grant(ctx, "alice", "", "start automation now", 10*time.Minute, "release day")
	if err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctx, "/golive/approval")
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("approval key: %v, %v", before, err)
	}

	// Refusals write nothing and leave the approval as it was.
	tests := []struct {
		name, phrase, reason string
		ttl                  time.Duration
		want                 error
	}{
		{"wrong phrase", "extend it", "slow canary", time.Hour, nil},
		{"no reason", "start automation now", " ", time.Hour, approval.ErrNoReason},
		{"over the maximum", "start automation now", "slow canary", 3 * time.Hour, approval.ErrBadTTL},
		{"under 1s", "start automation now", "slow canary", 0, approval.ErrBadTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := m.Extend(ctx, "bob", "", tt.phrase, tt.ttl, tt.reason)
			var pe *approval.PhraseError
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) || tt.want == nil && !errors.As(err, &pe) {
				t.Fatalf("Extend = %v, want %v", err, tt.want)
			}
		})
	}

	e, rev, err := m.Extend(ctx, "bob", "10.0.0.2", "go live with automation", 90*time.Minute, "canary needs longer")
	if err != nil {
		t.Fatal(err)
	}
	if e.Token != a.Token {
		t.Fatalf("token %d after extend, want %d (the same)", e.Token, a.Token)
	}
	if d := time.Until(e.ExpiresAt); d < 89*time.Minute || d > 90*time.Minute {
		t.Fatalf("expires in %s, want about 90m", d)
	}
	if e.GrantedBy != "alice" || e.Phrase != "start automation now" {
		t.Fatalf("extended approval %+v keeps neither who granted it nor its phrase", e)
	}
	cur, _, err := m.Current(ctx)
	if err != nil || cur.Token != a.Token || !cur.ExpiresAt.Equal(e.ExpiresAt) || !cur.Active(time.Now()) {
		t.Fatalf("Current = %+v, %v", cur, err)
	}

	// The key has the new lease, of the new ttl; the old lease is gone.
	after, err := cli.Get(ctx, "/golive/approval")
	if err != nil || len(after.Kvs) != 1 {
		t.Fatal(err)
	}
	kv := after.Kvs[0]
	if kv.CreateRevision != a.Token || kv.ModRevision != rev || kv.Lease == before.Kvs[0].Lease {
		t.Fatalf("key create %d mod %d lease %x; want create %d, mod %d, a new lease (old %x)", kv.CreateRevision, kv.ModRevision, kv.Lease, a.Token, rev, before.Kvs[0].Lease)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
	if err != nil || ttl.TTL < 89*60 {
		t.Fatalf("new lease TTL %d, %v; want about 90m", ttl.TTL, err)
	}
	if old, err := cli.TimeToLive(ctx, clientv3.LeaseID(before.Kvs[0].Lease)); err != nil || old.TTL != -1 {
		t.Fatalf("old lease TTL %d, %v; want revoked (-1)", old.TTL, err)
	}

	// Audited, and the chain holds.
	entries, _, _, err := log.Snapshot(ctx, audit.Filter{Action: "authorize_extend"})
	if err != nil || len(entries) != 1 {
		t.Fatalf("extend entries %v, %v", entries, err)
	}
	if x := entries[0]; x.Actor != "bob" || x.Reason != "canary needs longer" || x.Source != "10.0.0.2" || !strings.Contains(x.Detail, "ttl=1h30m0s") {
		t.Fatalf("audit entry %+v", x)
	}
	if seq, why, err := log.Verify(ctx); err != nil || seq != 0 {
		t.Fatalf("chain broken at %d: %s %v", seq, why, err)
	}

	// Nothing to extend once revoked; the fence of the old token holds no more.
	if _, err := m.Revoke(ctx, "carol", "", "stop"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Extend(ctx, "bob", "", "start automation now", time.Hour, "again"); !errors.Is(err, approval.ErrNotActive) {
		t.Fatalf("extend after revoke = %v, want ErrNotActive", err)
	}
	if cur, _, _ := m.Current(ctx); cur.Token != 0 {
		t.Fatalf("extend after revoke brought the approval back: %+v", cur)
	}
}
