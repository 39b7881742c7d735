package approval_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
)

func newManager(t *testing.T) (*approval.Manager, *clientv3.Client, *audit.Log) {
	t.Helper()
	cli := etcdtest.Start(t, 1).Client(t)
	keys := state.NewKeys("/golive/")
	log := audit.New(cli, keys)
	return approval.NewManager(cli, keys, log, 2*time.Hour), cli, log
}

func countKeys(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(t.Context(), "/golive/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func TestGrantRefusalsWriteNothing(t *testing.T) {
	m, cli, _ := newManager(t)
	tests := []struct {
		name   string
		phrase string
		ttl    time.Duration
	}{
		{"wrong phrase", "deploy please", time.Hour},
		{"near miss", "start automation now!", time.Hour},
		{"typo", "start automaton now", time.Hour},
		{"ttl over max", "start automation now", 3 * time.Hour},
		{"zero ttl", "start automation now", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Grant(t.Context(), "alice", "", tt.phrase, tt.ttl, "r"); err == nil {
				t.Fatal("granted, want refusal")
			}
			if n := countKeys(t, cli); n != 0 {
				t.Fatalf("%d keys written", n)
			}
		})
	}
}

func TestGrantRevokeAudit(t *testing.T) {
	m, _, log := newManager(t)
	a, err := m.Grant(t.Context(), "alice", "127.0.0.1", "  Start   AUTOMATION now ", time.Hour, "release day")
	if err != nil {
		t.Fatal(err)
	}
	if a.Token == 0 || a.GrantedBy != "alice" || a.Phrase != "start automation now" {
		t.Fatalf("approval = %+v", a)
	}
	if _, err := m.Grant(t.Context(), "bob", "", "go live with automation", time.Hour, ""); !errors.Is(err, approval.ErrAlreadyActive) {
		t.Fatalf("second grant: %v, want ErrAlreadyActive", err)
	}
	tok, err := m.Revoke(t.Context(), "bob", "", "stop")
	if err != nil || tok != a.Token {
		t.Fatalf("revoke = %d, %v; want %d", tok, err, a.Token)
	}
	if tok, err := m.Revoke(t.Context(), "bob", "", "again"); err != nil || tok != 0 {
		t.Fatalf("second revoke = %d, %v", tok, err)
	}
	b, err := m.Grant(t.Context(), "carol", "", "activate production deployment", time.Hour, "")
	if err != nil || b.Token <= a.Token {
		t.Fatalf("regrant token %d (prev %d), %v", b.Token, a.Token, err)
	}
	entries, _, _, err := log.Snapshot(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Actor+":"+e.Action+":"+e.Outcome)
	}
	want := []string{"alice:authorize:granted", "bob:revoke:revoked", "carol:authorize:granted"}
	if len(got) != len(want) {
		t.Fatalf("audit = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("audit = %v, want %v", got, want)
		}
	}
	if seq, why, err := log.Verify(t.Context()); err != nil || seq != 0 {
		t.Fatalf("verify: %d %s %v", seq, why, err)
	}
}

func TestExpiryEndsApprovalOnce(t *testing.T) {
	m, _, log := newManager(t)
	events := make(chan approval.Event, 16)
	go m.Watch(t.Context(), func(e approval.Event) { events <- e })
	next := func() approval.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no approval event")
		}
		return approval.Event{}
	}
	if e := next(); e.Reason != "sync" || e.Approval.Token != 0 {
		t.Fatalf("first event = %+v", e)
	}
	a, err := m.Grant(t.Context(), "alice", "", "start automation now", 2*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Reason != "granted" || e.Approval.Token != a.Token {
		t.Fatalf("event = %+v", e)
	}
	if e := next(); e.Reason != "expired" || e.Approval.Token != 0 {
		t.Fatalf("event = %+v", e)
	}
	cur, _, err := m.Current(t.Context())
	for i := 0; err == nil && cur.Token != 0 && i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		cur, _, err = m.Current(t.Context())
	}
	if err != nil || cur.Token != 0 {
		t.Fatalf("approval still present: %+v %v", cur, err)
	}
	entries, _, _, _ := log.Snapshot(t.Context(), audit.Filter{Action: "approval_expired"})
	if len(entries) != 1 {
		t.Fatalf("expired audited %d times", len(entries))
	}
}
