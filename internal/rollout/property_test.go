package rollout

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// world is a random fleet, approval and operator around one rollout. Its
// agents behave like real ones: a command runs after a random delay, and
// is refused (cancelled) if its token is not the live approval's then.
type world struct {
	rng      *rand.Rand
	now      time.Time
	appr     Approval
	nextTok  int64
	runAt    map[string]time.Time // command id -> when its agent finishes it
	token    map[string]int64     // command id -> token it carries
	result   map[string]Result    // command id -> reported result
	health   map[string]Health
	lost     map[string]bool
	requests Observation
}

// rollbackToken marks rollback commands in world.token.
const rollbackToken = -1

func (w *world) chance(p float64) bool { return w.rng.Float64() < p }

// advance moves time on and lets the world change.
func (w *world) advance(s State) {
	w.now = w.now.Add(time.Duration(w.rng.IntN(30)) * time.Second)
	switch {
	case w.appr.Active && w.chance(0.02):
		w.appr = Approval{}
	case w.appr.Active && w.chance(0.01):
		w.appr = Approval{Expired: true}
	case !w.appr.Active && w.chance(0.15):
		w.nextTok++
		w.appr = Approval{Active: true, Token: w.nextTok}
	}
	for id := range s.Hosts {
		if w.chance(0.01) {
			w.lost[id] = !w.lost[id]
		}
		h := Health{HasData: true, Requests: 1000, AvgLatency: 30 * time.Millisecond, ObservedAt: w.now}
		switch r := w.rng.IntN(100); {
		case r < 2:
			h.Errors = 50
		case r < 4:
			h.AvgLatency = time.Second
		case r < 6:
			h = Health{}
		case r < 8:
			h.ObservedAt = w.now.Add(-time.Hour)
		}
		w.health[id] = h
	}
	for id, at := range w.runAt {
		if w.result[id] != "" || w.now.Before(at) || w.token[id] == rollbackToken {
			continue
		}
		switch r := w.rng.IntN(100); {
		case !w.appr.Active || w.appr.Token != w.token[id]:
			w.result[id] = ResultCancelled
		case r < 4:
			w.result[id] = ResultFailed
		case r < 7:
			w.result[id] = ResultRolledBack
		case r < 8:
			w.result[id] = ResultCancelled // refused for a reason of its own
		default:
			w.result[id] = ResultSucceeded
		}
	}
	w.requests = Observation{Pause: w.chance(0.02), Resume: w.chance(0.15), Abort: w.chance(0.004)}
}

// issue records commands written by the executor.
func (w *world) issue(id string, token int64) {
	w.runAt[id] = w.now.Add(time.Duration(w.rng.IntN(60)) * time.Second)
	w.token[id] = token
}

func (w *world) observe(s State) Observation {
	obs := w.requests
	obs.Approval = w.appr
	obs.Preflight = PreflightResult{Result: ResultSucceeded}
	obs.Hosts = map[string]HostObservation{}
	for id, h := range s.Hosts {
		obs.Hosts[id] = HostObservation{Result: w.result[h.Command], RollbackResult: w.result[h.Rollback],
			Lost: w.lost[id], Health: w.health[id], Error: "boom"}
	}
	return obs
}

// TestNextInvariants drives random rollouts (fixed seed, bounded) and
// checks the invariants of the package doc after every step.
func TestNextInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	outcomes := map[Phase]int{}
	resumes := 0
	for run := range 250 {
		n := 1 + rng.IntN(8)
		sp := spec(func(s *Spec) {
			s.Canary = rng.IntN(n + 1)
			s.Batch = []string{"", "1", "2", "50%", "34%"}[rng.IntN(5)]
			s.PauseAfterCanary = rng.IntN(3) == 0
			s.Gate.MinHealthy = time.Duration(rng.IntN(3)) * 30 * time.Second
			s.ProgressDeadline = 5 * time.Minute
		})
		plan, err := Plan(fleet(n), sp)
		if err != nil {
			t.Fatal(err)
		}
		w := &world{rng: rng, now: t0, appr: Approval{Active: true, Token: 1}, nextTok: 1,
			runAt: map[string]time.Time{}, token: map[string]int64{}, result: map[string]Result{},
			health: map[string]Health{}, lost: map[string]bool{}}
		s := New(fmt.Sprintf("r%d", run), plan, 1, t0)
		c := &checker{t: t, run: run, plan: plan, lastCmd: map[string]string{}}
		for i := 0; i < 400; i++ {
			if s.Phase.Terminal() && i%50 != 0 {
				// Keep checking that the end is absorbing, at a lower rate.
				i += 9
			}
			w.advance(s)
			obs := w.observe(s)
			next, acts := Next(s, obs, w.now)
			c.check(s, obs, next, acts, w)
			for _, a := range acts {
				switch a := a.(type) {
				case StartWave:
					for _, cmd := range a.Commands {
						w.issue(cmd.ID, next.Token)
					}
				case RollBack:
					for _, tg := range a.Targets {
						w.issue(tg.ID, next.Token)
						// A rollback is the safety path: agents run it.
						w.token[tg.ID] = rollbackToken
					}
				case EmitEvent:
					if a.Kind == EventResumed {
						resumes++
					}
				}
			}
			for id, tok := range w.token {
				if tok == rollbackToken && w.result[id] == "" && !w.now.Before(w.runAt[id]) {
					w.result[id] = ResultSucceeded
					if rng.IntN(30) == 0 {
						w.result[id] = ResultFailed
					}
				}
			}
			b, err := next.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if s, err = Decode(b); err != nil {
				t.Fatal(err)
			}
		}
		outcomes[s.Phase]++
	}
	t.Logf("outcomes: %v; resumes: %d", outcomes, resumes)
	// The generator must reach every end, or the invariants prove little.
	for _, p := range []Phase{PhaseSucceeded, PhaseRolledBack, PhaseFailed, PhaseAborted} {
		if outcomes[p] == 0 {
			t.Errorf("no run ended %s: widen the generator", p)
		}
	}
	if resumes == 0 {
		t.Error("no run resumed: widen the generator")
	}
}

type checker struct {
	t        *testing.T
	run      int
	plan     Schedule
	lastCmd  map[string]string // host -> its latest deploy command id
	lastWave int
	finished bool
	rollback bool
}

func (c *checker) fail(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("run %d: "+format, append([]any{c.run}, args...)...)
}

func (c *checker) check(prev State, obs Observation, s State, acts []Action, w *world) {
	c.t.Helper()
	if prev.Phase.Terminal() {
		if len(acts) > 0 || !reflect.DeepEqual(prev, s) {
			c.fail("terminal %s moved to %s with %v", prev.Phase, s.Phase, acts)
		}
		return
	}
	for _, a := range acts {
		switch a := a.(type) {
		case StartWave:
			if !obs.Approval.Active || obs.Approval.Token != s.Token {
				c.fail("StartWave %v under approval %+v (rollout token %d)", a, obs.Approval, s.Token)
			}
			if c.rollback || c.finished {
				c.fail("StartWave %v after a rollback or finish", a)
			}
			if a.Wave < c.lastWave {
				c.fail("wave %d started after wave %d", a.Wave, c.lastWave)
			}
			c.lastWave = a.Wave
			for _, h := range c.plan.Hosts {
				if hs := s.Hosts[h]; hs.Wave < a.Wave && hs.Result != ResultSucceeded {
					c.fail("wave %d started while %s of wave %d is %s", a.Wave, h, hs.Wave, hs.Result)
				}
			}
			for _, cmd := range a.Commands {
				if s.Hosts[cmd.Host].Wave != a.Wave {
					c.fail("host %s of wave %d commanded in wave %d", cmd.Host, s.Hosts[cmd.Host].Wave, a.Wave)
				}
				if last, ok := c.lastCmd[cmd.Host]; ok {
					// Again only after a refusal under an approval that ended.
					if w.result[last] != ResultCancelled || w.token[last] == s.Token {
						c.fail("host %s commanded twice: %s was %q under token %d, now token %d",
							cmd.Host, last, w.result[last], w.token[last], s.Token)
					}
				}
				c.lastCmd[cmd.Host] = cmd.ID
			}
		case RollBack:
			if c.rollback || c.finished {
				c.fail("second RollBack or RollBack after finish: %v", a)
			}
			c.rollback = true
			if a.Operator != obs.Abort {
				c.fail("RollBack operator=%v with abort=%v", a.Operator, obs.Abort)
			}
			var hosts []string
			for _, tg := range a.Targets {
				hosts = append(hosts, tg.Host)
			}
			var touched []string
			for h := range c.lastCmd {
				touched = append(touched, h)
			}
			slices.Sort(touched)
			if !slices.Equal(hosts, touched) {
				c.fail("RollBack %v, touched %v", hosts, touched)
			}
		case Finish:
			if c.finished || !s.Phase.Terminal() || a.Phase != s.Phase {
				c.fail("Finish %+v in phase %s (finished before: %v)", a, s.Phase, c.finished)
			}
			c.finished = true
		}
	}
	if s.Phase.Terminal() && !c.finished {
		c.fail("reached %s without Finish", s.Phase)
	}
	if s.Phase == PhaseSucceeded {
		for _, h := range c.plan.Hosts {
			if s.Hosts[h].Result != ResultSucceeded {
				c.fail("succeeded but %s is %q", h, s.Hosts[h].Result)
			}
		}
	}
	if s.Phase == PhaseRolledBack || s.Phase == PhaseAborted {
		for h := range c.lastCmd {
			if s.Hosts[h].RollbackResult != ResultSucceeded {
				c.fail("%s but %s rollback is %q", s.Phase, h, s.Hosts[h].RollbackResult)
			}
		}
	}
}
