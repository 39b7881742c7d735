package rollout

import (
	"errors"
	"strings"
	"testing"
)

// TestUnchangedHostsAreNotRolledBack: a deploy that failed before it
// changed anything (fetch, verify, unpack) is not rolled back; when no
// touched host changed, the rollout ends failed, saying nothing changed.
func TestUnchangedHostsAreNotRolledBack(t *testing.T) {
	t.Run("every touched host unchanged", func(t *testing.T) {
		x := newSim(t, 3, func(s *Spec) { s.Canary = 1 })
		x.fleet.result["h01"] = ResultFailed
		x.unchanged = map[string]bool{"h01": true}
		x.runToEnd()
		if x.s.Phase != PhaseFailed || !strings.Contains(x.s.Reason, "nothing changed on h01") {
			t.Fatalf("phase %s reason %q, want failed saying nothing changed on h1", x.s.Phase, x.s.Reason)
		}
		if hosts, _ := rolledBack(x.actions); len(hosts) != 0 {
			t.Fatalf("rolled back %v, want nobody", hosts)
		}
	})
	t.Run("a changed host is rolled back, an unchanged one is not", func(t *testing.T) {
		x := newSim(t, 4, func(s *Spec) { s.Canary = 2 })
		x.fleet.result["h01"] = ResultFailed
		x.unchanged = map[string]bool{"h01": true}
		x.fleet.errRate["h02"] = 0.5
		x.runToEnd()
		hosts, _ := rolledBack(x.actions)
		if x.s.Phase != PhaseRolledBack || len(hosts) != 1 || hosts[0] != "h02" {
			t.Fatalf("phase %s, rolled back %v; want rolled_back of h2 only", x.s.Phase, hosts)
		}
	})
}

// TestOperatorRollbackIsARollout: an operator's rollback runs without an
// approval, commands every host at once with token-0 semantics (Operator),
// records what each host put back, and ends succeeded; a host whose
// rollback fails makes it fail.
func TestOperatorRollbackIsARollout(t *testing.T) {
	sched, err := PlanRollback(RollbackSpec{Service: "app", Hosts: []string{"h2", "h1"}, RestoreBackupID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	x := &sim{t: t, s: New("rb1", sched, 0, t0), now: t0, fleet: newFleet(), appr: Approval{}}
	acts := x.step(0)
	var rb *RollBack
	for _, a := range acts {
		if a, ok := a.(RollBack); ok {
			rb = &a
		}
	}
	if rb == nil || !rb.Operator || rb.RestoreBackupID != "b1" || len(rb.Targets) != 2 {
		t.Fatalf("first step actions %+v, want one operator RollBack of 2 hosts restoring b1", acts)
	}
	x.rolledBackTo = map[string]string{"h1": "v1", "h2": "v1"}
	x.runToEnd()
	if x.s.Phase != PhaseSucceeded {
		t.Fatalf("phase %s (%s), want succeeded", x.s.Phase, x.s.Reason)
	}
	v := x.s.Proto()
	if v.Kind != "rollback" || v.Release != "v1" || v.Hosts[0].State != "succeeded" || v.Hosts[0].Release != "v1" {
		t.Fatalf("view kind %s release %q host %+v, want rollback v1 succeeded", v.Kind, v.Release, v.Hosts[0])
	}

	x = &sim{t: t, s: New("rb2", sched, 0, t0), now: t0, fleet: newFleet(), appr: Approval{}}
	x.fleet.rollback["h2"] = ResultFailed
	x.runToEnd()
	if x.s.Phase != PhaseFailed || !strings.Contains(x.s.Reason, "h2") {
		t.Fatalf("phase %s reason %q, want failed naming h2", x.s.Phase, x.s.Reason)
	}

	if _, err := PlanRollback(RollbackSpec{Service: "app", Hosts: []string{"h1", "h1"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a host named twice: %v, want ErrInvalid", err)
	}
	if _, err := PlanRollback(RollbackSpec{Service: "app"}); !errors.Is(err, ErrNoHosts) {
		t.Fatalf("no hosts: %v, want ErrNoHosts", err)
	}
}
