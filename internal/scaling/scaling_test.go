package scaling

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func rpsPolicy() Policy {
	return Policy{Min: 1, Max: 10, Metric: RPS, Target: 50, Tolerance: 0.1, Interval: 15 * time.Second,
		UpCooldown: 60 * time.Second, DownWindow: 300 * time.Second}
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name       string
		give       Policy
		st         State
		in         Input
		wantAction Action
		wantTo     int
		wantReason string
	}{
		{name: "scale up: ceil(2 x 120/50)", give: rpsPolicy(), in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 240}},
			wantAction: Up, wantTo: 5, wantReason: "240 rps over 2 serving = 120/instance"},
		{name: "within tolerance up", give: rpsPolicy(), in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 109}},
			wantAction: None, wantTo: 2, wantReason: "within the tolerance"},
		{name: "within tolerance down", give: rpsPolicy(), in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 91}},
			wantAction: None, wantTo: 2},
		{name: "just outside tolerance", give: rpsPolicy(), in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 111}},
			wantAction: Up, wantTo: 3},
		{name: "exact multiple does not round up", give: rpsPolicy(), in: Input{Now: t0, Current: 1, Serving: 1, Demand: Demand{Total: 150}},
			wantAction: Up, wantTo: 3},
		{name: "clamped to max", give: rpsPolicy(), in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 5000}},
			wantAction: Up, wantTo: 10},
		{name: "max step", give: func() Policy { p := rpsPolicy(); p.MaxStep = 2; return p }(),
			in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 5000}}, wantAction: Up, wantTo: 4, wantReason: "max_step 2"},
		{name: "zero traffic scales to min", give: rpsPolicy(), in: Input{Now: t0, Current: 4, Serving: 4, Demand: Demand{Total: 0}},
			wantAction: Down, wantTo: 1},
		{name: "down by max step", give: func() Policy { p := rpsPolicy(); p.MaxStep = 1; return p }(),
			in: Input{Now: t0, Current: 4, Serving: 4, Demand: Demand{Total: 0}}, wantAction: Down, wantTo: 3},
		{name: "missing never scales down", give: rpsPolicy(), in: Input{Now: t0, Current: 4, Serving: 4, Demand: Demand{Missing: "no figures"}},
			wantAction: Hold, wantTo: 4, wantReason: "never scales"},
		{name: "missing never scales up", give: rpsPolicy(), in: Input{Now: t0, Current: 1, Serving: 1, Demand: Demand{Missing: "stale"}},
			wantAction: Hold, wantTo: 1},
		{name: "NaN is missing", give: rpsPolicy(), in: Input{Now: t0, Current: 4, Serving: 4, Demand: Demand{Total: math.NaN()}},
			wantAction: Hold, wantTo: 4},
		{name: "cooldown holds an up", give: rpsPolicy(), st: State{LastUp: t0.Add(-30 * time.Second)},
			in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 240}}, wantAction: Hold, wantTo: 2, wantReason: "cooldown"},
		{name: "after the cooldown", give: rpsPolicy(), st: State{LastUp: t0.Add(-60 * time.Second)},
			in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 240}}, wantAction: Up, wantTo: 5},
		{name: "window holds a down", give: rpsPolicy(), st: State{History: []Point{{Since: t0.Add(-100 * time.Second), Instances: 4}}},
			in: Input{Now: t0, Current: 4, Serving: 4, Demand: Demand{Total: 50}}, wantAction: None, wantTo: 4, wantReason: "highest recommendation"},
		{name: "window: highest wins, partly down", give: rpsPolicy(),
			st: State{History: []Point{{Since: t0.Add(-400 * time.Second), Instances: 6}, {Since: t0.Add(-350 * time.Second), Instances: 3}}},
			in: Input{Now: t0, Current: 6, Serving: 6, Demand: Demand{Total: 50}}, wantAction: Down, wantTo: 3},
		{name: "converging holds", give: rpsPolicy(), in: Input{Now: t0, Current: 4, Serving: 2, Converging: "starting", Demand: Demand{Total: 400}},
			wantAction: Hold, wantTo: 4, wantReason: "held: starting"},
		{name: "below min comes up", give: func() Policy { p := rpsPolicy(); p.Min = 2; return p }(),
			in: Input{Now: t0, Current: 1, Serving: 1, Demand: Demand{Total: 50}}, wantAction: Up, wantTo: 2},
		{name: "cpu", give: Policy{Min: 1, Max: 8, Metric: CPU, Target: 0.5, Tolerance: 0.1, DownWindow: time.Minute},
			in: Input{Now: t0, Current: 2, Serving: 2, Demand: Demand{Total: 1.8}}, wantAction: Up, wantTo: 4, wantReason: "cores"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := Evaluate(tt.give, tt.st, tt.in)
			if d.Action != tt.wantAction || d.To != tt.wantTo {
				t.Fatalf("Evaluate = %s to %d (%s), want %s to %d", d.Action, d.To, d.Reason, tt.wantAction, tt.wantTo)
			}
			if !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("reason %q lacks %q", d.Reason, tt.wantReason)
			}
		})
	}
}

// TestStabilisationWindow runs a load spike then its end through
// evaluations every 15s: the scale-down comes only once the window passed
// since the last high recommendation.
func TestStabilisationWindow(t *testing.T) {
	p := rpsPolicy()
	var st State
	cur := 2
	now := t0
	step := func(total float64) Decision {
		var d Decision
		st, d = Evaluate(p, st, Input{Now: now, Current: cur, Serving: cur, Demand: Demand{Total: total}})
		if d.Action == Up || d.Action == Down {
			st = Acted(st, d, now)
			cur = d.To
		}
		now = now.Add(15 * time.Second)
		return d
	}
	if d := step(500); d.Action != Up || d.To != 10 {
		t.Fatalf("spike: %s to %d", d.Action, d.To)
	}
	lastHigh := now.Add(-15 * time.Second)
	var downAt time.Time
	for range 40 {
		d := step(100)
		if d.Action == Down {
			downAt = now.Add(-15 * time.Second)
			if d.To != 2 {
				t.Fatalf("down to %d, want 2", d.To)
			}
			break
		}
	}
	if downAt.IsZero() {
		t.Fatal("never scaled down")
	}
	if got := downAt.Sub(lastHigh); got < p.DownWindow || got > p.DownWindow+p.Interval {
		t.Fatalf("scaled down %s after the last high recommendation, want the window %s (+ one interval)", got, p.DownWindow)
	}
	if len(st.History) > 2 {
		t.Errorf("history kept %d points, want the window's only: %v", len(st.History), st.History)
	}
}

// TestProperties checks the invariants on random inputs.
func TestProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		p := Policy{Min: 1 + r.IntN(3), Metric: RPS, Target: 1 + r.Float64()*100, Tolerance: r.Float64() * 0.3,
			Interval: 15 * time.Second, UpCooldown: time.Duration(r.IntN(120)) * time.Second,
			DownWindow: time.Duration(r.IntN(600)) * time.Second, MaxStep: r.IntN(4)}
		p.Max = p.Min + r.IntN(10)
		var st State
		now := t0
		for range 1 + r.IntN(5) {
			st.History = append(st.History, Point{Since: now, Instances: p.Min + r.IntN(p.Max-p.Min+1)})
			now = now.Add(time.Duration(r.IntN(200)) * time.Second)
		}
		if r.IntN(2) == 0 {
			st.LastUp = now.Add(-time.Duration(r.IntN(200)) * time.Second)
		}
		cur := p.Min + r.IntN(p.Max-p.Min+1)
		in := Input{Now: now, Current: cur, Serving: cur, Demand: Demand{Total: r.Float64() * 2000}}
		if r.IntN(5) == 0 {
			in.Demand = Demand{Missing: "stale"}
		}
		next, d := Evaluate(p, st, in)
		if d.To != cur && (d.To < p.Min || d.To > p.Max) {
			t.Fatalf("#%d: to %d outside [%d,%d]", i, d.To, p.Min, p.Max)
		}
		if p.MaxStep > 0 && abs(d.To-cur) > p.MaxStep {
			t.Fatalf("#%d: step %d -> %d over max_step %d", i, cur, d.To, p.MaxStep)
		}
		if (d.Action == Up || d.Action == Down) == (d.To == cur) {
			t.Fatalf("#%d: action %s with %d -> %d", i, d.Action, cur, d.To)
		}
		if in.Demand.Missing != "" && (d.To != cur || len(next.History) != len(st.History)) {
			t.Fatalf("#%d: a missing metric changed something: %+v", i, d)
		}
		if d.Action == Down {
			for _, pt := range next.History {
				if pt.Instances > d.To {
					t.Fatalf("#%d: down to %d under a window recommendation %d (%v)", i, d.To, pt.Instances, next.History)
				}
			}
		}
		if d.Action == Up && !st.LastUp.IsZero() && now.Sub(st.LastUp) < p.UpCooldown {
			t.Fatalf("#%d: up within the cooldown", i)
		}
	}
}

func abs(x int) int { return max(x, -x) }

func TestFromProto(t *testing.T) {
	p, err := FromProto(&golivev1.ScalePolicy{Min: 1, Max: 4, TargetRps: 50})
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{Min: 1, Max: 4, Metric: RPS, Target: 50, Tolerance: DefaultTolerance, Interval: DefaultInterval,
		UpCooldown: DefaultUpCooldown, DownWindow: DefaultDownWindow}
	if p != want {
		t.Fatalf("FromProto = %+v, want %+v", p, want)
	}
	p, err = FromProto(&golivev1.ScalePolicy{Min: 2, Max: 3, Query: "sum(x)", TargetValue: 7, ScaleUpCooldown: durationpb.New(0)})
	if err != nil || p.Metric != Query || p.UpCooldown != 0 || p.Target != 7 {
		t.Fatalf("query policy = %+v, %v", p, err)
	}
	for _, bad := range []*golivev1.ScalePolicy{nil, {Min: 0, Max: 2, TargetRps: 1}, {Min: 3, Max: 2, TargetRps: 1}, {Min: 1, Max: 2}, {Min: 1, Max: 2, Query: "x"}} {
		if _, err := FromProto(bad); err == nil {
			t.Errorf("FromProto(%v) accepted", bad)
		}
	}
}

func TestDemand(t *testing.T) {
	now := t0
	fresh := timestamppb.New(now.Add(-time.Second))
	sv := &golivev1.ServiceState{Name: "app", ActiveSlot: "blue", Traffic: &golivev1.TrafficWindow{Source: "nginx", ObservedAt: fresh,
		Slots: []*golivev1.SlotTraffic{{Slot: "green", Requests: 9999, WindowSeconds: 60}, {Slot: "blue", Requests: 6000, WindowSeconds: 60}}}}
	if d := RPSDemand(sv, now, 30*time.Second); d.Missing != "" || d.Total != 100 {
		t.Fatalf("rps = %+v, want 100", d)
	}
	sv.Traffic.ObservedAt = timestamppb.New(now.Add(-time.Minute))
	if d := RPSDemand(sv, now, 30*time.Second); !strings.Contains(d.Missing, "stale") {
		t.Fatalf("stale figures: %+v", d)
	}
	sv.Traffic.ObservedAt, sv.Traffic.Error = fresh, "socket gone"
	if d := RPSDemand(sv, now, 30*time.Second); !strings.Contains(d.Missing, "failed") {
		t.Fatalf("failed figures: %+v", d)
	}
	sv.Traffic = nil
	if d := RPSDemand(sv, now, 30*time.Second); d.Missing == "" {
		t.Fatal("no traffic block is a demand")
	}
	sv.Instances = []*golivev1.InstanceState{{Index: 0, State: StateServing, CpuCores: 0.4}, {Index: 1, State: StateServing, CpuCores: 0},
		{Index: 2, State: StateStarting, CpuCores: 2}}
	if d := CPUDemand(sv, now, now, time.Minute); d.Missing != "" || math.Abs(d.Total-0.8) > 1e-9 {
		t.Fatalf("cpu = %+v, want 0.8", d)
	}
	if d := CPUDemand(sv, now.Add(-2*time.Minute), now, time.Minute); d.Missing == "" {
		t.Fatal("an old heartbeat is a demand")
	}
	sv.DesiredInstances = 3
	c := CountsOf(sv)
	if c.Current != 3 || c.Serving != 2 || c.Converging == "" {
		t.Fatalf("counts = %+v", c)
	}
}
