package rollout

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeFleet says how each host behaves; the zero value is a healthy fleet
// whose commands succeed as soon as they are issued.
type fakeFleet struct {
	result   map[string]Result // deploy outcome (default succeeded)
	rollback map[string]Result // rollback outcome (default succeeded)
	errRate  map[string]float64
	latency  map[string]time.Duration
	noData   map[string]bool
	lost     map[string]bool
}

func newFleet() *fakeFleet {
	return &fakeFleet{result: map[string]Result{}, rollback: map[string]Result{}, errRate: map[string]float64{},
		latency: map[string]time.Duration{}, noData: map[string]bool{}, lost: map[string]bool{}}
}

// sim drives Next like the executor would: observe, step, store. Every
// step goes through Encode/Decode, as if a new leader read it from etcd.
type sim struct {
	t       *testing.T
	s       State
	now     time.Time
	fleet   *fakeFleet
	appr    Approval
	pending Observation // operator requests for the next step
	pre     PreflightResult
	actions []Action
	// unchanged marks hosts whose failed deploy changed nothing;
	// rolledBackTo is the release each host's rollback reports.
	unchanged    map[string]bool
	rolledBackTo map[string]string
	// traffic, when set, gives touched hosts real traffic (observed now);
	// stable is every host's stable slot; analysis the PromQL verdict.
	traffic  func(host string) Traffic
	stable   Traffic
	analysis PreflightResult
}

func newSim(t *testing.T, hosts int, mut func(*Spec)) *sim {
	t.Helper()
	plan, err := Plan(fleet(hosts), spec(mut))
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, s: New("r1", plan, 7, t0), now: t0, fleet: newFleet(), appr: Approval{Active: true, Token: 7},
		pre: PreflightResult{Result: ResultSucceeded}}
}

func (x *sim) observe() Observation {
	obs := Observation{Approval: x.appr, Preflight: x.pre, Hosts: map[string]HostObservation{}, Analysis: x.analysis,
		Pause: x.pending.Pause, Resume: x.pending.Resume, Abort: x.pending.Abort}
	for id, h := range x.s.Hosts {
		o := HostObservation{Lost: x.fleet.lost[id]}
		if h.Touched() {
			o.Result = ResultSucceeded
			if r, ok := x.fleet.result[id]; ok {
				o.Result = r
			}
			o.Unchanged = x.unchanged[id]
			if x.traffic != nil {
				o.Traffic = x.traffic(id)
				if o.Traffic.ObservedAt.IsZero() {
					o.Traffic.ObservedAt = x.now
				}
				o.Stable = x.stable
			}
			if !x.fleet.noData[id] {
				lat := 20 * time.Millisecond
				if l, ok := x.fleet.latency[id]; ok {
					lat = l
				}
				o.Health = Health{HasData: true, Requests: 10000, Errors: uint64(x.fleet.errRate[id] * 10000),
					AvgLatency: lat, ObservedAt: x.now}
			}
		}
		if h.Rollback != "" {
			o.RollbackResult = ResultSucceeded
			if r, ok := x.fleet.rollback[id]; ok {
				o.RollbackResult = r
			}
			o.RollbackRelease = x.rolledBackTo[id]
		}
		obs.Hosts[id] = o
	}
	return obs
}

// step advances the clock by d and runs one reconcile step.
func (x *sim) step(d time.Duration) []Action {
	x.t.Helper()
	x.now = x.now.Add(d)
	s, acts := Next(x.s, x.observe(), x.now)
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

// run steps every 5s until cond holds (or the phase is terminal).
func (x *sim) run(cond func(State) bool) {
	x.t.Helper()
	for i := 0; i < 2000; i++ {
		if cond(x.s) || x.s.Phase.Terminal() {
			return
		}
		x.step(5 * time.Second)
	}
	x.t.Fatalf("no progress: phase %s wave %d step %s", x.s.Phase, x.s.Wave, x.s.Step)
}

func (x *sim) runToEnd() { x.run(func(State) bool { return false }) }

func inWave(i int, step Step) func(State) bool {
	return func(s State) bool { return s.Wave == i && s.Step == step && s.Phase != PhaseHalted }
}

func startedWaves(acts []Action) [][]string {
	var out [][]string
	for _, a := range acts {
		if sw, ok := a.(StartWave); ok {
			out = append(out, sw.Hosts())
		}
	}
	return out
}

func rolledBack(acts []Action) (hosts []string, operator bool) {
	for _, a := range acts {
		if rb, ok := a.(RollBack); ok {
			for _, t := range rb.Targets {
				hosts = append(hosts, t.Host)
				if t.ToRelease != "v1" {
					panic("rollback target release " + t.ToRelease)
				}
			}
			operator = rb.Operator
		}
	}
	return hosts, operator
}

func events(acts []Action) []EventKind {
	var out []EventKind
	for _, a := range acts {
		if e, ok := a.(EmitEvent); ok {
			out = append(out, e.Kind)
		}
	}
	return out
}

func TestNext(t *testing.T) {
	canary2 := func(s *Spec) { s.Canary = 1; s.Batch = "2" }
	tests := []struct {
		name         string
		giveSpec     func(*Spec)
		give         func(x *sim)
		wantPhase    Phase
		wantReason   string
		wantWaves    [][]string
		wantRollback []string
		wantOperator bool
		wantEvents   []EventKind // a subsequence of the events emitted
	}{
		{
			name: "success across canary and two waves", giveSpec: canary2,
			give:      func(x *sim) { x.runToEnd() },
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
			wantEvents: []EventKind{EventStarted, EventWaveStarted, EventWavePassed, EventWaveStarted, EventWavePassed,
				EventWaveStarted, EventWavePassed, EventSucceeded},
		},
		{
			name: "gate fails on error rate and rolls back every touched host", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepBaking))
				x.fleet.errRate["h03"] = 0.01
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "host h03: error rate 1%",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"},
			wantEvents: []EventKind{EventGateFailed, EventRollingBack, EventRolledBack},
		},
		{
			name: "error rate at the limit fails", giveSpec: canary2,
			give: func(x *sim) {
				x.fleet.errRate["h01"] = 0.001
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "host h01: error rate 0.1%",
			wantWaves: [][]string{{"h01"}}, wantRollback: []string{"h01"},
		},
		{
			name: "gate fails on latency", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(2, StepBaking))
				x.fleet.latency["h05"] = 250 * time.Millisecond
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "host h05: average latency 250ms, limit 200ms",
			wantWaves:    [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
			wantRollback: []string{"h01", "h02", "h03", "h04", "h05"},
		},
		{
			name: "fail closed: a canary host lost during a later wave", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepDeploying))
				x.fleet.lost["h01"] = true
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "host h01 is lost",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"},
		},
		{
			name: "fail closed: a host with no data", giveSpec: canary2,
			give: func(x *sim) {
				x.fleet.noData["h02"] = true
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "no health data after the 30s bake window from h02",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"},
		},
		{
			name: "a failed host step fails the gate", giveSpec: canary2,
			give: func(x *sim) {
				x.fleet.result["h04"] = ResultRolledBack
				x.runToEnd()
			},
			wantPhase: PhaseRolledBack, wantReason: "host h04: deploy rolled_back",
			wantWaves:    [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
			wantRollback: []string{"h01", "h02", "h03", "h04", "h05"},
		},
		{
			name: "progress deadline exceeded", giveSpec: canary2,
			give: func(x *sim) {
				x.fleet.result["h03"] = ResultPending
				x.runToEnd()
				if got := x.now.Sub(t0); got < DefaultProgressDeadline || got > DefaultProgressDeadline+2*time.Minute {
					x.t.Errorf("ended after %s, want just past the %s deadline", got, DefaultProgressDeadline)
				}
			},
			wantPhase: PhaseRolledBack, wantReason: "progress deadline (10m0s) exceeded in wave 1: 1 of 2 hosts done, waiting for h03",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"},
		},
		{
			name: "a rollback that fails ends failed", giveSpec: canary2,
			give: func(x *sim) {
				x.fleet.errRate["h02"] = 0.5
				x.fleet.rollback["h02"] = ResultFailed
				x.runToEnd()
			},
			wantPhase: PhaseFailed, wantReason: "rollback failed on h02",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"},
		},
		{
			name: "pause after canary waits for resume", giveSpec: func(s *Spec) { canary2(s); s.PauseAfterCanary = true },
			give: func(x *sim) {
				x.run(func(s State) bool { return s.Phase == PhaseHalted })
				if x.s.Halt != HaltPaused || x.s.Wave != 1 {
					x.t.Fatalf("halted %s at wave %d, want paused before wave 1", x.s.Halt, x.s.Wave)
				}
				for range 100 {
					if acts := x.step(time.Minute); len(acts) > 0 {
						x.t.Fatalf("halted rollout acted: %v", acts)
					}
				}
				x.pending.Resume = true
				x.runToEnd()
			},
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
			wantEvents: []EventKind{EventWavePassed, EventHalted, EventResumed, EventWaveStarted},
		},
		{
			name: "operator pause mid-wave then resume bakes the whole window again", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepBaking))
				x.step(20 * time.Second)
				x.pending.Pause = true
				x.step(time.Second)
				x.step(time.Hour) // the deadline does not run while halted
				x.pending.Resume = true
				x.step(time.Second)
				resumed := x.now
				x.run(inWave(2, StepDeploying))
				if got := x.now.Sub(resumed); got < DefaultMinHealthy {
					x.t.Errorf("wave 1 passed %s after resume, want a full %s bake", got, DefaultMinHealthy)
				}
				x.runToEnd()
			},
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
		},
		{
			name: "abort mid-wave rolls back touched hosts as the operator", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepBaking))
				x.pending.Abort = true
				x.runToEnd()
			},
			wantPhase: PhaseAborted, wantReason: "aborted by the operator",
			wantWaves: [][]string{{"h01"}, {"h02", "h03"}}, wantRollback: []string{"h01", "h02", "h03"}, wantOperator: true,
			wantEvents: []EventKind{EventRollingBack, EventAborted},
		},
		{
			name: "abort while halted without approval still rolls back", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepDeploying))
				x.appr = Approval{}
				x.step(time.Second)
				x.pending.Abort = true
				x.runToEnd()
			},
			wantPhase: PhaseAborted, wantWaves: [][]string{{"h01"}, {"h02", "h03"}},
			wantRollback: []string{"h01", "h02", "h03"}, wantOperator: true,
		},
		{
			name: "abort before anything was touched", giveSpec: canary2,
			give: func(x *sim) {
				x.pending.Abort = true
				x.runToEnd()
			},
			wantPhase: PhaseAborted, wantReason: "aborted by the operator",
		},
		{
			name: "preflight failure ends failed, nothing touched", giveSpec: canary2,
			give: func(x *sim) {
				x.pre = PreflightResult{Result: ResultFailed, Reason: "h02: TLS certificate expires in 3 days"}
				x.runToEnd()
			},
			wantPhase: PhaseFailed, wantReason: "preflight failed: h02: TLS certificate expires in 3 days",
		},
		{
			name: "preflight that never answers ends failed at the deadline", giveSpec: canary2,
			give: func(x *sim) {
				x.pre = PreflightResult{Result: ResultPending}
				x.runToEnd()
			},
			wantPhase: PhaseFailed, wantReason: "preflight did not finish within the progress deadline",
		},
		{
			name: "single wave without canary validates then succeeds",
			give: func(x *sim) {
				x.run(func(s State) bool { return s.Phase == PhaseValidating })
				x.runToEnd()
			},
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01", "h02", "h03", "h04", "h05"}},
		},
		{
			name: "bake 0 still needs one fresh sample", giveSpec: func(s *Spec) { s.Canary = 1; s.Batch = "25%"; s.Gate.MinHealthy = 0 },
			give:      func(x *sim) { x.runToEnd() },
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
		},
		{
			name: "approval expired: halted; resume refused until a new approval", giveSpec: canary2,
			give: func(x *sim) {
				x.run(inWave(1, StepDeploying))
				x.appr = Approval{Expired: true}
				x.step(time.Second)
				if x.s.Phase != PhaseHalted || x.s.Halt != HaltExpired {
					x.t.Fatalf("phase %s halt %s, want halted expired", x.s.Phase, x.s.Halt)
				}
				x.pending.Resume = true
				if got := events(x.step(time.Second)); !reflect.DeepEqual(got, []EventKind{EventResumeRefused}) {
					x.t.Fatalf("resume without approval: events %v", got)
				}
				x.appr = Approval{Active: true, Token: 9}
				x.step(time.Second) // a new approval alone does not resume
				if x.s.Phase != PhaseHalted {
					x.t.Fatalf("phase %s, want still halted", x.s.Phase)
				}
				x.pending.Resume = true
				x.runToEnd()
				if x.s.Token != 9 {
					x.t.Errorf("token %d, want the new approval's 9", x.s.Token)
				}
			},
			wantPhase: PhaseSucceeded, wantWaves: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newSim(t, 5, tt.giveSpec)
			tt.give(x)
			if x.s.Phase != tt.wantPhase {
				t.Fatalf("phase = %s (%s), want %s", x.s.Phase, x.s.Reason, tt.wantPhase)
			}
			if !strings.Contains(x.s.Reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", x.s.Reason, tt.wantReason)
			}
			if got := startedWaves(x.actions); !reflect.DeepEqual(got, tt.wantWaves) {
				t.Errorf("StartWave hosts = %v, want %v", got, tt.wantWaves)
			}
			gotRB, op := rolledBack(x.actions)
			if !reflect.DeepEqual(gotRB, tt.wantRollback) || op != tt.wantOperator {
				t.Errorf("RollBack = %v operator=%v, want %v operator=%v", gotRB, op, tt.wantRollback, tt.wantOperator)
			}
			if !isSubsequence(events(x.actions), tt.wantEvents) {
				t.Errorf("events %v do not contain %v in order", events(x.actions), tt.wantEvents)
			}
			var finishes []Finish
			for _, a := range x.actions {
				if f, ok := a.(Finish); ok {
					finishes = append(finishes, f)
				}
			}
			if len(finishes) != 1 || finishes[0].Phase != tt.wantPhase {
				t.Errorf("Finish actions = %+v, want one for %s", finishes, tt.wantPhase)
			}
			// Terminal states are absorbing.
			before := x.s
			x.pending = Observation{Resume: true, Abort: true, Pause: true}
			if acts := x.step(time.Hour); len(acts) > 0 || !reflect.DeepEqual(before, x.s) {
				t.Errorf("terminal state moved: %v", acts)
			}
		})
	}
}

func isSubsequence(have, want []EventKind) bool {
	i := 0
	for _, k := range have {
		if i < len(want) && k == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestRevokeMidWaveThenResume: the approval is revoked while wave 1 is in
// flight; h02 finishes its step, h03's command is refused by its agent. A
// resume under a new approval commands h03 again (and nothing else), then
// goes on: no host done twice, none skipped.
func TestRevokeMidWaveThenResume(t *testing.T) {
	x := newSim(t, 5, func(s *Spec) { s.Canary = 1; s.Batch = "2" })
	x.run(inWave(0, StepBaking))
	x.fleet.result["h02"] = ResultPending
	x.fleet.result["h03"] = ResultPending
	x.run(inWave(1, StepDeploying))
	x.step(5 * time.Second)

	x.appr = Approval{} // revoke
	x.step(time.Second)
	if x.s.Phase != PhaseHalted || x.s.Halt != HaltRevoked {
		t.Fatalf("phase %s halt %s, want halted revoked", x.s.Phase, x.s.Halt)
	}
	// In flight: h02 finishes its atomic step, h03's agent refuses the
	// command of the ended approval.
	x.fleet.result["h02"] = ResultSucceeded
	x.fleet.result["h03"] = ResultCancelled
	mark := len(x.actions)
	for range 20 {
		x.step(time.Minute)
	}
	if got := startedWaves(x.actions[mark:]); got != nil {
		t.Fatalf("StartWave while halted: %v", got)
	}
	if x.s.Hosts["h02"].Result != ResultSucceeded || x.s.Hosts["h03"].Result != ResultCancelled {
		t.Fatalf("results not recorded while halted: %+v", x.s.Hosts)
	}

	x.appr = Approval{Active: true, Token: 8}
	x.pending.Resume = true
	delete(x.fleet.result, "h03")
	x.runToEnd()
	if x.s.Phase != PhaseSucceeded {
		t.Fatalf("phase %s (%s), want succeeded", x.s.Phase, x.s.Reason)
	}
	want := [][]string{{"h01"}, {"h02", "h03"}, {"h03"}, {"h04", "h05"}}
	if got := startedWaves(x.actions); !reflect.DeepEqual(got, want) {
		t.Fatalf("StartWave hosts = %v, want %v", got, want)
	}
	// Only h03 twice, and its second command carries the new token.
	for id, h := range x.s.Hosts {
		wantN := 1
		if id == "h03" {
			wantN = 2
		}
		if h.Commands != wantN || h.Result != ResultSucceeded {
			t.Errorf("%s: %d commands, result %s; want %d, succeeded", id, h.Commands, h.Result, wantN)
		}
	}
	if h := x.s.Hosts["h03"]; h.Token != 8 {
		t.Errorf("h03 recommanded under token %d, want 8", h.Token)
	}
}

// TestRevokeDuringBakeThenResume: revoked between waves, the rollout
// resumes in the same wave, commands nobody again, and bakes in full.
func TestRevokeDuringBakeThenResume(t *testing.T) {
	x := newSim(t, 5, func(s *Spec) { s.Canary = 1; s.Batch = "2" })
	x.run(inWave(1, StepBaking))
	x.appr = Approval{Active: true, Token: 99} // replaced by another approval
	x.step(time.Second)
	if x.s.Phase != PhaseHalted || !strings.Contains(x.s.Reason, "approval changed") {
		t.Fatalf("phase %s (%s), want halted: approval changed", x.s.Phase, x.s.Reason)
	}
	x.pending.Resume = true
	acts := x.step(time.Second)
	if got := startedWaves(acts); got != nil {
		t.Fatalf("resume re-commanded %v", got)
	}
	if x.s.Wave != 1 || x.s.Step != StepBaking || !x.s.BakeStart.Equal(x.now) {
		t.Fatalf("resumed in wave %d step %s bake %s, want wave 1 baking from now", x.s.Wave, x.s.Step, x.s.BakeStart)
	}
	x.runToEnd()
	if want := [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}}; !reflect.DeepEqual(startedWaves(x.actions), want) {
		t.Fatalf("StartWave hosts = %v, want %v", startedWaves(x.actions), want)
	}
}

func TestNextIsPure(t *testing.T) {
	x := newSim(t, 3, func(s *Spec) { s.Canary = 1 })
	x.run(inWave(1, StepDeploying))
	before, _ := x.s.Encode()
	obs := x.observe()
	a, actsA := Next(x.s, obs, x.now.Add(time.Minute))
	b, actsB := Next(x.s, obs, x.now.Add(time.Minute))
	after, _ := x.s.Encode()
	if string(before) != string(after) {
		t.Fatal("Next modified its input")
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(actsA, actsB) {
		t.Fatal("Next is not deterministic")
	}
}

func TestDecodeRefusesOtherVersions(t *testing.T) {
	for _, v := range []int{0, StateVersion + 1} {
		_, err := Decode([]byte(fmt.Sprintf(`{"version":%d,"id":"r1"}`, v)))
		if err == nil || !strings.Contains(err.Error(), "version") {
			t.Errorf("Decode(version %d) error = %v", v, err)
		}
	}
}

func TestProto(t *testing.T) {
	x := newSim(t, 5, func(s *Spec) { s.Canary = 1; s.Batch = "2" })
	x.run(inWave(1, StepBaking))
	p := x.s.Proto()
	var states []string
	for _, w := range p.Waves {
		states = append(states, w.State)
	}
	if want := []string{"passed", "baking", "waiting"}; !reflect.DeepEqual(states, want) {
		t.Errorf("wave states = %v, want %v", states, want)
	}
	if p.State != "wave" || len(p.Hosts) != 5 || p.Hosts[0].State != "succeeded" || p.Hosts[4].State != "waiting" {
		t.Errorf("proto = %v", p)
	}
}

// A pause taken before the rollout started holds it there (it was consumed
// and lost: the rollout went on to preflight), and a resume starts it.
func TestPauseBeforeTheStartHolds(t *testing.T) {
	x := newSim(t, 3, nil)
	x.pending = Observation{Pause: true}
	x.step(time.Second)
	if x.s.Phase != PhaseHalted || x.s.Halt != HaltPaused || x.s.HaltedIn != PhasePending {
		t.Fatalf("after a pause in pending: phase %s halt %s in %s", x.s.Phase, x.s.Halt, x.s.HaltedIn)
	}
	x.step(time.Second)
	if x.s.Phase != PhaseHalted {
		t.Fatalf("a paused rollout moved on its own: %s", x.s.Phase)
	}
	x.pending = Observation{Resume: true}
	x.step(time.Second)
	if x.s.Phase != PhasePreflight {
		t.Fatalf("after resume: phase %s, want preflight", x.s.Phase)
	}
}
