package dnsfailover

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
)

var t0 = time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)

func policy(auto bool) Policy {
	return Policy{Name: "www.example.test.", Type: "A", Primary: "blue", Secondary: "green",
		Threshold: 3, Interval: time.Second, AutoFailback: auto, HoldDown: 10 * time.Second}
}

// step is one check in a table: the primary's verdict (g good, b bad, u
// unknown), the secondary's (default healthy), approval, and what an
// applied switch does.
type step struct {
	primary   byte
	secondary byte
	approved  bool
	gap       time.Duration // extra time before this check
	want      Action
	wantKind  Kind
	apply     bool // the executor applies a Switch (or an operator a Recommend)
	operator  bool
}

func verdict(b byte) Verdict {
	switch b {
	case 'g', 0:
		return Healthy
	case 'b':
		return Unhealthy
	}
	return Unknown
}

// run feeds steps one second apart and checks each decision.
func run(t *testing.T, p Policy, steps []step) State {
	t.Helper()
	var s State
	at := t0
	for i, st := range steps {
		at = at.Add(time.Second + st.gap)
		c := Check{At: at, Primary: Health{Verdict: verdict(st.primary), Reason: "figures"}, Secondary: Health{Verdict: verdict(st.secondary)}}
		var d Decision
		s, d = Step(p, s, c, st.approved)
		if d.Action != st.want || (st.wantKind != "" && d.Kind != st.wantKind) {
			t.Fatalf("check %d (%c): %s %s (%s), want %s %s", i, st.primary, d.Action, d.Kind, d.Reason, st.want, st.wantKind)
		}
		if st.apply {
			if d.To == "" {
				t.Fatalf("check %d: nothing to apply", i)
			}
			src := Automatic
			if st.operator {
				src = Operator
			}
			s = Applied(p, s, d.To, at, src)
		}
	}
	return s
}

func TestStep(t *testing.T) {
	const A = true
	tests := []struct {
		name       string
		auto       bool
		give       []step
		wantActive string
		wantPinned bool
	}{
		{name: "one bad check never switches", give: []step{
			{primary: 'g', approved: A, want: None}, {primary: 'b', approved: A, want: None}, {primary: 'g', approved: A, want: None},
		}, wantActive: "blue"},
		{name: "threshold consecutive bad checks switch", give: []step{
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: None},
			{primary: 'b', approved: A, want: Switch, wantKind: Failover, apply: true},
			{primary: 'b', approved: A, want: None},
		}, wantActive: "green"},
		{name: "unknown counts as bad", give: []step{
			{primary: 'u', approved: A, want: None}, {primary: 'b', approved: A, want: None},
			{primary: 'u', approved: A, want: Switch, wantKind: Failover, apply: true},
		}, wantActive: "green"},
		{name: "flapping primary never flips the record", give: []step{
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: None}, {primary: 'g', approved: A, want: None},
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: None}, {primary: 'g', approved: A, want: None},
			{primary: 'b', approved: A, want: None}, {primary: 'g', approved: A, want: None},
		}, wantActive: "blue"},
		{name: "a failed update is decided again", give: []step{
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: None},
			{primary: 'b', approved: A, want: Switch}, // not applied: the update failed
			{primary: 'b', approved: A, want: Switch, apply: true},
		}, wantActive: "green"},
		{name: "no approval: recommend once, then repeat", give: []step{
			{primary: 'b', want: None}, {primary: 'b', want: None},
			{primary: 'b', want: Recommend, wantKind: Failover}, {primary: 'b', want: Recommend},
			{primary: 'b', approved: A, want: Switch, apply: true}, // approval granted
		}, wantActive: "green"},
		{name: "secondary unhealthy: hold", give: []step{
			{primary: 'b', secondary: 'b', approved: A, want: None}, {primary: 'b', secondary: 'b', approved: A, want: None},
			{primary: 'b', secondary: 'b', approved: A, want: Hold}, {primary: 'b', secondary: 'u', approved: A, want: Hold},
			{primary: 'b', approved: A, want: Switch, apply: true},
		}, wantActive: "green"},
		{name: "a gap resets the streak", give: []step{
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: None},
			{primary: 'b', approved: A, gap: 5 * time.Second, want: None},
			{primary: 'b', approved: A, want: None}, {primary: 'b', approved: A, want: Switch},
		}, wantActive: "blue"},
		{name: "manual failback only recommends", give: append(failover(), repeat(step{primary: 'g', approved: A, want: None}, 10)...,
		), wantActive: "green"},
		{name: "auto failback after hold-down", auto: true, give: append(append(failover(),
			repeat(step{primary: 'g', approved: A, want: None}, 10)...),
			step{primary: 'g', approved: A, want: Switch, wantKind: Failback, apply: true},
			step{primary: 'b', approved: A, want: None}), wantActive: "blue"},
		{name: "a bad check restarts the hold-down", auto: true, give: append(append(append(failover(),
			repeat(step{primary: 'g', approved: A, want: None}, 8)...),
			step{primary: 'b', approved: A, want: None}),
			repeat(step{primary: 'g', approved: A, want: None}, 10)...), wantActive: "green"},
		{name: "operator failover pins the record", auto: true, give: append([]step{
			{primary: 'b', want: None}, {primary: 'b', want: None},
			{primary: 'b', want: Recommend, apply: true, operator: true}},
			repeat(step{primary: 'g', approved: A, want: None}, 10)...), wantActive: "green", wantPinned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy(tt.auto)
			s := run(t, p, tt.give)
			if got := Active(p, s); got != tt.wantActive || s.Pinned != tt.wantPinned {
				t.Fatalf("active %s pinned %v, want %s pinned %v", got, s.Pinned, tt.wantActive, tt.wantPinned)
			}
		})
	}
}

func failover() []step {
	return []step{{primary: 'b', approved: true, want: None}, {primary: 'b', approved: true, want: None},
		{primary: 'b', approved: true, want: Switch, wantKind: Failover, apply: true}}
}

func repeat(s step, n int) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestManualFailbackRecommendation(t *testing.T) {
	p := policy(false)
	s := run(t, p, append(failover(), repeat(step{primary: 'g', approved: true, want: None}, 10)...))
	s, d := Step(p, s, Check{At: s.LastCheck.Add(time.Second), Primary: Health{Verdict: Healthy}, Secondary: Health{Verdict: Healthy}}, true)
	if d.Action != Recommend || d.Kind != Failback || d.To != "blue" || d.Repeat ||
		d.Command != "golive-controller dns failover www.example.test. --to blue" || !strings.Contains(d.Reason, "failback is manual") {
		t.Fatalf("decision = %+v", d)
	}
	_, d = Step(p, s, Check{At: s.LastCheck.Add(time.Second), Primary: Health{Verdict: Healthy}, Secondary: Health{Verdict: Healthy}}, true)
	if d.Action != Recommend || !d.Repeat {
		t.Fatalf("second decision = %+v", d)
	}
	// The operator fails back by hand: unpinned, on the primary.
	s = Applied(p, s, "blue", s.LastCheck, Operator)
	if Active(p, s) != "blue" || s.Pinned || s.Switches != 2 {
		t.Fatalf("after manual failback: %+v", s)
	}
}

func TestRecommendCommand(t *testing.T) {
	p := policy(false)
	var s State
	var d Decision
	for i := range 3 {
		s, d = Step(p, s, Check{At: t0.Add(time.Duration(i) * time.Second), Primary: Health{Verdict: Unhealthy, Reason: "0/2 hosts healthy"}, Secondary: Health{Verdict: Healthy}}, false)
	}
	if d.Action != Recommend || d.Command != "golive-controller dns failover www.example.test. --to green" ||
		!strings.Contains(d.Reason, "0/2 hosts healthy") || !strings.Contains(d.Reason, "no live automation approval") {
		t.Fatalf("decision = %+v", d)
	}
}

func TestBlocked(t *testing.T) {
	p := policy(true)
	bad := func(s State, i int) (State, Decision) {
		return Step(p, s, Check{At: t0.Add(time.Duration(i) * time.Second), Primary: Health{Verdict: Unhealthy}, Secondary: Health{Verdict: Healthy}}, true)
	}
	var s State
	var d Decision
	for i := range 3 {
		s, d = bad(s, i)
	}
	if d.Action != Switch {
		t.Fatalf("decision = %+v", d)
	}
	s = Block(s, "www.example.test. A was changed by someone else (NXRRSET)")
	s, d = bad(s, 3)
	if d.Action != Recommend || !strings.Contains(d.Reason, "automation is blocked: www.example.test. A was changed") {
		t.Fatalf("blocked decision = %+v", d)
	}
	s = Applied(p, s, "green", t0.Add(4*time.Second), Operator)
	if s.Blocked != "" || !s.Pinned {
		t.Fatalf("after the operator's switch: %+v", s)
	}
}

func TestOldChecksIgnored(t *testing.T) {
	p := policy(false)
	s, _ := Step(p, State{}, Check{At: t0, Primary: Health{Verdict: Unhealthy}}, true)
	for _, at := range []time.Time{t0, t0.Add(-time.Second)} {
		s2, d := Step(p, s, Check{At: at, Primary: Health{Verdict: Unhealthy}}, true)
		if !d.Ignored || d.Action != None || !reflect.DeepEqual(s2, s) {
			t.Fatalf("replayed check at %s: %+v, state %+v", at, d, s2)
		}
	}
}

func TestPolicyFrom(t *testing.T) {
	f := &dnsconfig.Failover{Name: "www.example.test.", Type: dnsconfig.TypeAAAA, Primary: "a", Secondary: "b",
		Check: dnsconfig.Check{Interval: time.Second, Threshold: 4}, Failback: dnsconfig.FailbackAuto, HoldDown: time.Minute}
	want := Policy{Name: "www.example.test.", Type: "AAAA", Primary: "a", Secondary: "b", Threshold: 4, Interval: time.Second, AutoFailback: true, HoldDown: time.Minute}
	if got := PolicyFrom(f); got != want {
		t.Fatalf("PolicyFrom = %+v", got)
	}
}

// TestProperties drives random check sequences (with random approval,
// gaps, replays and operator actions) and checks the invariants at every
// step, and that the state survives a JSON round trip unchanged.
func TestProperties(t *testing.T) {
	seen := map[string]int{}
	defer func() {
		// The run must have exercised every outcome, or it proves nothing.
		for _, k := range []string{"switch failover", "switch failback", "recommend failover", "recommend failback", "hold failover", "none "} {
			if seen[k] == 0 {
				t.Errorf("no %q decision in the whole run: %v", k, seen)
			}
		}
	}()
	seeds, steps := uint64(100), 300
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		r := rand.New(rand.NewPCG(seed, 16))
		p := policy(r.IntN(2) == 0)
		p.Threshold = 2 + r.IntN(4)
		p.HoldDown = time.Duration(p.Threshold+r.IntN(10)) * time.Second
		var s State
		at := t0
		var history []Check // checks counted since the last applied switch
		lastSwitchChecks := -1
		badRun := 0.7 * r.Float64() // how often the primary fails
		for i := range steps {
			switch {
			case r.IntN(50) == 0:
				at = at.Add(p.MaxGap() + time.Second) // a gap
			case r.IntN(50) == 0 && i > 0:
				at = at.Add(-time.Second) // a replay
			default:
				at = at.Add(p.Interval)
			}
			c := Check{At: at, Primary: Health{Verdict: Healthy}, Secondary: Health{Verdict: Healthy}}
			if r.Float64() < badRun {
				c.Primary.Verdict = []Verdict{Unhealthy, Unknown}[r.IntN(2)]
			}
			if r.IntN(10) == 0 {
				c.Secondary.Verdict = Unhealthy
			}
			approved := r.IntN(3) > 0
			before := s
			next, d := Step(p, s, c, approved)

			// JSON round trip, and Step is deterministic on the decoded state.
			b, err := json.Marshal(before)
			if err != nil {
				t.Fatal(err)
			}
			var decoded State
			if err := json.Unmarshal(b, &decoded); err != nil {
				t.Fatal(err)
			}
			next2, d2 := Step(p, decoded, c, approved)
			if !equalState(next, next2) || d != d2 {
				t.Fatalf("seed %d check %d: JSON round trip changed the outcome:\n%+v %+v\n%+v %+v", seed, i, next, d, next2, d2)
			}
			s = next
			if d.Ignored {
				if !equalState(before, s) {
					t.Fatalf("seed %d: an ignored check changed the state", seed)
				}
				continue
			}
			history = append(history, c)
			seen[string(d.Action)+" "+string(d.Kind)]++

			if d.Action == Switch && !approved {
				t.Fatalf("seed %d check %d: switch without approval", seed, i)
			}
			if d.Action == Switch && s.Pinned {
				t.Fatalf("seed %d check %d: switch of a pinned record", seed, i)
			}
			if d.Action == Switch || d.Action == Recommend || d.Action == Hold {
				switch d.Kind {
				case Failover:
					// The last Threshold checks, without a gap, were all bad.
					if len(history) < p.Threshold {
						t.Fatalf("seed %d check %d: failover after %d checks", seed, i, len(history))
					}
					last := history[len(history)-p.Threshold:]
					for j, h := range last {
						if h.Primary.Verdict == Healthy || (j > 0 && h.At.Sub(last[j-1].At) > p.MaxGap()) {
							t.Fatalf("seed %d check %d: failover without %d consecutive bad checks", seed, i, p.Threshold)
						}
					}
					if d.Action == Switch && c.Secondary.Verdict != Healthy {
						t.Fatalf("seed %d check %d: failover to an unhealthy secondary", seed, i)
					}
				case Failback:
					if d.Action == Switch && !p.AutoFailback {
						t.Fatalf("seed %d check %d: automatic failback with failback = manual", seed, i)
					}
					// Good on every check for HoldDown, no gap.
					j := len(history) - 1
					for j > 0 && history[j-1].Primary.Verdict == Healthy && history[j].At.Sub(history[j-1].At) <= p.MaxGap() {
						j--
					}
					if history[j].Primary.Verdict != Healthy || c.At.Sub(history[j].At) < p.HoldDown || len(history)-j < p.Threshold {
						t.Fatalf("seed %d check %d: failback before the hold-down", seed, i)
					}
				default:
					t.Fatalf("seed %d check %d: %s without a kind", seed, i, d.Action)
				}
			}
			// Apply switches (sometimes they fail), and now and then an
			// operator acts on a recommendation.
			if (d.Action == Switch && r.IntN(5) > 0) || (d.Action == Recommend && r.IntN(20) == 0) {
				src := Automatic
				if d.Action == Recommend {
					src = Operator
				}
				if lastSwitchChecks >= 0 && src == Automatic && len(history) < p.Threshold {
					t.Fatalf("seed %d check %d: two automatic switches %d checks apart", seed, i, len(history))
				}
				s = Applied(p, s, d.To, c.At, src)
				history, lastSwitchChecks = nil, i
			}
			if a := Active(p, s); a != p.Primary && a != p.Secondary {
				t.Fatalf("seed %d: active pool %q", seed, a)
			}
		}
	}
}

func equalState(a, b State) bool {
	return a.Active == b.Active && a.Pinned == b.Pinned && a.LastCheck.Equal(b.LastCheck) && a.Bad == b.Bad &&
		a.BadSince.Equal(b.BadSince) && a.Good == b.Good && a.GoodSince.Equal(b.GoodSince) &&
		a.Recommended == b.Recommended && a.LastSwitch.Equal(b.LastSwitch) && a.Switches == b.Switches
}

// TestFlappingNeverSwitches: however a primary flaps, if no run of bad
// checks reaches the threshold, nothing is switched, recommended or held.
func TestFlappingNeverSwitches(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 61))
		p := policy(true)
		p.Threshold = 2 + r.IntN(5)
		var s State
		at := t0
		run := 0
		for i := range 200 {
			at = at.Add(p.Interval)
			v := Healthy
			if run < p.Threshold-1 && r.IntN(3) > 0 {
				v = Unhealthy
				run++
			} else {
				run = 0
			}
			var d Decision
			s, d = Step(p, s, Check{At: at, Primary: Health{Verdict: v}, Secondary: Health{Verdict: Healthy}}, true)
			if d.Action != None {
				t.Fatalf("seed %d check %d: %s %s on a flapping primary (threshold %d): %s", seed, i, d.Action, d.Kind, p.Threshold, d.Reason)
			}
		}
	}
}
