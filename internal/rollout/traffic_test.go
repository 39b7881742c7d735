package rollout

import (
	"strings"
	"testing"
	"time"
)

// trafficSim gives every touched host a fresh window of real traffic.
func trafficSim(t *testing.T, hosts int, mut func(*Spec), tr func(host string) Traffic) *sim {
	x := newSim(t, hosts, mut)
	x.traffic = tr
	return x
}

func TestGateJudgesRealTraffic(t *testing.T) {
	bake := func(s *Spec) { s.Gate.MinHealthy = 30 * time.Second }
	ok := func(n uint64) func(string) Traffic {
		return func(string) Traffic {
			return Traffic{HasData: true, Source: "haproxy", Requests: n, AvgLatency: 5 * time.Millisecond}
		}
	}
	t.Run("healthy probes, 5% failed real requests: rolled back", func(t *testing.T) {
		x := trafficSim(t, 2, bake, func(string) Traffic {
			return Traffic{HasData: true, Source: "nginx", Requests: 1000, Errors: 50, AvgLatency: 5 * time.Millisecond}
		})
		x.runToEnd()
		if x.s.Phase != PhaseRolledBack || !strings.Contains(x.s.Reason, "real traffic (nginx) error rate 5%") {
			t.Fatalf("phase %s reason %q, want rolled_back on the real traffic's 5%%", x.s.Phase, x.s.Reason)
		}
	})
	t.Run("300ms real latency: rolled back", func(t *testing.T) {
		x := trafficSim(t, 2, bake, func(string) Traffic {
			return Traffic{HasData: true, Source: "haproxy", Requests: 1000, AvgLatency: 300 * time.Millisecond}
		})
		x.runToEnd()
		if x.s.Phase != PhaseRolledBack || !strings.Contains(x.s.Reason, "average latency 300ms") {
			t.Fatalf("phase %s reason %q", x.s.Phase, x.s.Reason)
		}
	})
	t.Run("enough clean traffic: succeeded, judged on traffic", func(t *testing.T) {
		x := trafficSim(t, 2, bake, ok(500))
		x.runToEnd()
		if x.s.Phase != PhaseSucceeded || x.s.JudgedOn[0] != "traffic" {
			t.Fatalf("phase %s (%s) judged %v", x.s.Phase, x.s.Reason, x.s.JudgedOn)
		}
	})
	t.Run("too little traffic: halted inconclusive, never passed", func(t *testing.T) {
		x := trafficSim(t, 2, bake, ok(10))
		x.run(func(s State) bool { return s.Phase == PhaseHalted })
		if x.s.Phase != PhaseHalted || x.s.Halt != HaltInconclusive || !strings.Contains(x.s.Reason, "20 real requests") {
			t.Fatalf("phase %s halt %s reason %q, want halted inconclusive", x.s.Phase, x.s.Halt, x.s.Reason)
		}
		for i := 0; i < 20; i++ {
			x.step(5 * time.Second)
		}
		if x.s.Phase != PhaseHalted {
			t.Fatalf("an inconclusive gate moved on by itself: %s", x.s.Phase)
		}
		// resume with traffic now there: bakes again, then passes
		x.traffic = ok(500)
		x.pending.Resume = true
		x.runToEnd()
		if x.s.Phase != PhaseSucceeded {
			t.Fatalf("after resume: %s (%s)", x.s.Phase, x.s.Reason)
		}
	})
	t.Run("new slot twice as bad as stable: rolled back", func(t *testing.T) {
		x := trafficSim(t, 1, func(s *Spec) { bake(s); s.Gate.MaxErrorRate = 0.01; s.Gate.MaxErrorRatioVsStable = 2 }, func(string) Traffic {
			return Traffic{HasData: true, Source: "haproxy", Requests: 1000, Errors: 8, AvgLatency: time.Millisecond}
		})
		x.stable = Traffic{HasData: true, Source: "haproxy", Requests: 1000, Errors: 1}
		x.runToEnd()
		// 0.8% is under the 1% limit: the ratio alone does not fail it.
		if x.s.Phase != PhaseSucceeded {
			t.Fatalf("phase %s (%s), want succeeded: under the absolute limit", x.s.Phase, x.s.Reason)
		}
		x = trafficSim(t, 1, func(s *Spec) { bake(s); s.Gate.MaxErrorRate = 0.001; s.Gate.MaxErrorRatioVsStable = 2 }, func(string) Traffic {
			return Traffic{HasData: true, Source: "haproxy", Requests: 1000, Errors: 0, AvgLatency: time.Millisecond}
		})
		x.runToEnd()
		if x.s.Phase != PhaseSucceeded {
			t.Fatalf("clean new slot: %s (%s)", x.s.Phase, x.s.Reason)
		}
	})
	t.Run("PromQL analysis failed: rolled back; pending: waits", func(t *testing.T) {
		x := trafficSim(t, 1, func(s *Spec) { bake(s); s.Gate.Analysis = true }, ok(500))
		x.analysis = PreflightResult{Result: ResultPending}
		x.run(func(s State) bool { return s.Step == StepBaking && x.now.Sub(s.BakeStart) > time.Minute })
		if x.s.Phase.Terminal() || x.s.Step != StepBaking {
			t.Fatalf("passed without the analysis: %s", x.s.Phase)
		}
		x.analysis = PreflightResult{Result: ResultFailed, Reason: "error-rate: 0.05 > 0.001"}
		x.runToEnd()
		if x.s.Phase != PhaseRolledBack || !strings.Contains(x.s.Reason, "PromQL analysis failed: error-rate") || x.s.JudgedOn[0] != "traffic+promql" {
			t.Fatalf("phase %s reason %q judged %v", x.s.Phase, x.s.Reason, x.s.JudgedOn)
		}
	})
	t.Run("stale traffic read fails closed", func(t *testing.T) {
		x := trafficSim(t, 1, bake, func(string) Traffic {
			return Traffic{HasData: true, Source: "haproxy", Requests: 500, Err: "admin socket unreachable"}
		})
		x.runToEnd()
		if x.s.Phase != PhaseRolledBack || !strings.Contains(x.s.Reason, "fail closed") {
			t.Fatalf("phase %s reason %q", x.s.Phase, x.s.Reason)
		}
	})
}
