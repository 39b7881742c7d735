package rollout

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var testDNS = DNSTarget{Name: "app.example.test.", Type: "A", Pool: "green", Values: []string{"198.51.100.10"}}

func newDNSSim(t *testing.T, mut func(*Spec)) *sim {
	t.Helper()
	x := newSim(t, 3, mut)
	x.s.Plan.DNS = []DNSTarget{testDNS}
	x.s.DNS = make([]DNSState, 1)
	return x
}

// stepDNS is sim.step with the executor's DNS observation.
func (x *sim) stepDNS(d time.Duration, dns ...DNSObservation) []Action {
	x.t.Helper()
	x.now = x.now.Add(d)
	obs := x.observe()
	obs.DNS = dns
	s, acts := Next(x.s, obs, x.now)
	x.pending = Observation{}
	b, err := s.Encode()
	if err != nil {
		x.t.Fatal(err)
	}
	back, err := Decode(b)
	if err != nil {
		x.t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		x.t.Fatalf("State does not survive JSON:\n got %+v\nwant %+v", back, s)
	}
	x.s = back
	x.actions = append(x.actions, acts...)
	return acts
}

func dnsActions(acts []Action) []ChangeDNS {
	var out []ChangeDNS
	for _, a := range acts {
		if c, ok := a.(ChangeDNS); ok {
			out = append(out, c)
		}
	}
	return out
}

// TestDNSStepRunsAfterTheLastWave: the records are asked for only once
// every wave passed (fenced: not Operator); the rollout waits for the
// change however many passes it takes, then ends succeeded with the
// before/after and the confirmation time on its record.
func TestDNSStepRunsAfterTheLastWave(t *testing.T) {
	x := newDNSSim(t, func(s *Spec) { s.Canary = 1 })
	x.run(func(s State) bool { return s.Step == StepDNS })
	if x.s.Phase != PhaseValidating || x.s.DNS[0].Set.Result != ResultPending {
		t.Fatalf("after the last wave: phase %s step %s dns %+v", x.s.Phase, x.s.Step, x.s.DNS)
	}
	for i, w := range x.s.Plan.Waves {
		if x.s.waveState(i) != "passed" && i != len(x.s.Plan.Waves)-1 {
			t.Fatalf("wave %d (%s) is %s while the DNS step runs", i, w.Name, x.s.waveState(i))
		}
	}
	ch := dnsActions(x.actions)
	if len(ch) != 1 || ch[0].Operator || ch[0].Undo || len(ch[0].Index) != 1 {
		t.Fatalf("ChangeDNS actions %+v, want one fenced set", ch)
	}
	for range 5 {
		x.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultPending}})
	}
	x.stepDNS(time.Second)
	if x.s.Phase != PhaseValidating || len(dnsActions(x.actions)) != 1 {
		t.Fatalf("while the change is in flight: phase %s, %d ChangeDNS", x.s.Phase, len(dnsActions(x.actions)))
	}
	at := x.now
	done := DNSResult{Result: ResultSucceeded, Before: []string{"192.0.2.10"}, After: []string{"198.51.100.10"}, At: at}
	x.stepDNS(time.Second, DNSObservation{Set: done})
	if x.s.Phase != PhaseSucceeded || !reflect.DeepEqual(x.s.DNS[0].Set, done) {
		t.Fatalf("after the change: phase %s dns %+v", x.s.Phase, x.s.DNS)
	}
	v := x.s.Proto().Dns
	if len(v) != 1 || v[0].State != "succeeded" || v[0].Before[0] != "192.0.2.10" || v[0].After[0] != "198.51.100.10" || !v[0].ConfirmedAt.AsTime().Equal(at) {
		t.Fatalf("view %v", v)
	}
}

// TestDNSStepFailureKeepsTheHosts: a failed change ends the rollout
// failed with the reason and what to do; no host is rolled back.
func TestDNSStepFailureKeepsTheHosts(t *testing.T) {
	x := newDNSSim(t, nil)
	x.run(func(s State) bool { return s.Step == StepDNS })
	x.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultFailed, Error: "prerequisite failed: the record changed"}})
	if x.s.Phase != PhaseFailed {
		t.Fatalf("phase %s, want failed", x.s.Phase)
	}
	for _, want := range []string{"DNS step failed", "prerequisite failed", "hosts keep shop@v2", "golive-controller rollback --service shop"} {
		if !strings.Contains(x.s.Reason, want) {
			t.Fatalf("reason %q does not say %q", x.s.Reason, want)
		}
	}
	if hosts, _ := rolledBack(x.actions); len(hosts) != 0 {
		t.Fatalf("rolled back %v after a DNS failure", hosts)
	}
}

// TestDNSStepDeadline: a change that never ends fails the rollout at the
// progress deadline.
func TestDNSStepDeadline(t *testing.T) {
	x := newDNSSim(t, nil)
	x.run(func(s State) bool { return s.Step == StepDNS })
	for i := 0; i < 200 && !x.s.Phase.Terminal(); i++ {
		x.stepDNS(5*time.Second, DNSObservation{Set: DNSResult{Result: ResultPending}})
	}
	if x.s.Phase != PhaseFailed || !strings.Contains(x.s.Reason, "DNS step did not finish") {
		t.Fatalf("phase %s reason %q", x.s.Phase, x.s.Reason)
	}
}

// TestGateFailureNeverTouchesDNS: a failed wave's rollback asks for no
// DNS change: the records are set only after the last gate.
func TestGateFailureNeverTouchesDNS(t *testing.T) {
	x := newDNSSim(t, func(s *Spec) { s.Canary = 1 })
	x.fleet.errRate["h01"] = 0.5
	x.runToEnd()
	if x.s.Phase != PhaseRolledBack || len(dnsActions(x.actions)) != 0 || !reflect.DeepEqual(x.s.DNS[0], DNSState{}) {
		t.Fatalf("phase %s, DNS actions %+v, dns %+v", x.s.Phase, dnsActions(x.actions), x.s.DNS)
	}
}

// TestAbortDuringDNSStepRestores: an abort while the change is in flight
// rolls the hosts back and restores the record once the change landed,
// as the operator's (no approval needed).
func TestAbortDuringDNSStepRestores(t *testing.T) {
	x := newDNSSim(t, nil)
	x.run(func(s State) bool { return s.Step == StepDNS })
	x.appr = Approval{} // revoked: an abort needs none
	x.pending.Abort = true
	acts := x.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultPending}})
	ch := dnsActions(acts)
	if x.s.Phase != PhaseRollingBack || len(ch) != 1 || !ch[0].Undo || !ch[0].Operator {
		t.Fatalf("abort: phase %s, DNS actions %+v", x.s.Phase, ch)
	}
	set := DNSResult{Result: ResultSucceeded, Before: []string{"192.0.2.10"}, After: []string{"198.51.100.10"}, At: x.now}
	x.stepDNS(time.Second, DNSObservation{Set: set, Undo: DNSResult{Result: ResultPending}})
	if x.s.Phase != PhaseRollingBack {
		t.Fatalf("hosts back, restore pending: phase %s", x.s.Phase)
	}
	x.stepDNS(time.Second, DNSObservation{Set: set, Undo: DNSResult{Result: ResultSucceeded, Before: set.After, After: set.Before, At: x.now}})
	if x.s.Phase != PhaseAborted || x.s.Proto().Dns[0].RestoreState != "succeeded" {
		t.Fatalf("after the restore: phase %s dns %+v", x.s.Phase, x.s.DNS)
	}
	// A change that did not land has nothing to restore.
	y := newDNSSim(t, nil)
	y.run(func(s State) bool { return s.Step == StepDNS })
	y.pending.Abort = true
	y.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultPending}})
	y.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultFailed, Error: "REFUSED"}})
	if y.s.Phase != PhaseAborted || y.s.DNS[0].Undo.Result != ResultCancelled {
		t.Fatalf("abort of a change that failed: phase %s dns %+v", y.s.Phase, y.s.DNS)
	}
}

// TestOperatorRollbackRestoresDNS: an operator's rollback with restore
// targets asks for them with the hosts' rollback (as the operator's) and
// ends once both are done; a failed restore fails it.
func TestOperatorRollbackRestoresDNS(t *testing.T) {
	for _, tt := range []struct {
		give      Result
		wantPhase Phase
	}{
		{give: ResultSucceeded, wantPhase: PhaseSucceeded},
		{give: ResultCancelled, wantPhase: PhaseSucceeded}, // changed since: left as is, said in the view
		{give: ResultFailed, wantPhase: PhaseFailed},
	} {
		sched, err := PlanRollback(RollbackSpec{Service: "app", Hosts: []string{"h1", "h2"}, ToRelease: "v1"})
		if err != nil {
			t.Fatal(err)
		}
		sched.DNS = []DNSTarget{{Name: testDNS.Name, Type: "A", Values: []string{"192.0.2.10"}, Expect: testDNS.Values, Restore: true, FromRollout: "r1"}}
		x := &sim{t: t, s: New("rb1", sched, 0, t0), now: t0, fleet: newFleet()}
		acts := x.stepDNS(0)
		ch := dnsActions(acts)
		if hosts, op := rolledBack(acts); len(hosts) != 2 || !op || len(ch) != 1 || !ch[0].Operator || ch[0].Undo {
			t.Fatalf("first step: rollback %v (operator %v), DNS %+v", hosts, op, ch)
		}
		x.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: ResultPending}})
		if x.s.Phase != PhaseRollingBack {
			t.Fatalf("hosts back, restore in flight: %s", x.s.Phase)
		}
		x.stepDNS(time.Second, DNSObservation{Set: DNSResult{Result: tt.give, Error: "x"}})
		if x.s.Phase != tt.wantPhase {
			t.Fatalf("restore %s: phase %s (%s), want %s", tt.give, x.s.Phase, x.s.Reason, tt.wantPhase)
		}
		if v := x.s.Proto().Dns; len(v) != 1 || v[0].Action != "restore" || v[0].FromRollout != "r1" {
			t.Fatalf("view %v", v)
		}
	}
}
