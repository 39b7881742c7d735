package controllercli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestRolloutShowsWhatItWasJudgedOn: `rollout ID` names each wave's
// evidence and lists the PromQL measurements; `agents` shows real traffic
// beside the probe.
func TestRolloutShowsWhatItWasJudgedOn(t *testing.T) {
	r := &golivev1.Rollout{Id: "r1", Kind: "deploy", Service: "app", Release: "v4", State: "rolled_back",
		Waves: []*golivev1.Wave{{Index: 0, Name: "canary", JudgedOn: "traffic+promql"}},
		Analysis: &golivev1.AnalysisRun{Wave: 0, Phase: "failed", Summary: "error-rate: 0.05 breaches > 0.001",
			Measurements: []*golivev1.Measurement{{Metric: "error-rate", Query: `sum(rate(x[1m]))`, At: timestamppb.New(time.Now()), Value: "0.05", Verdict: "fail", Message: "breaches > 0.001"}}}}
	var b bytes.Buffer
	printRollout(&b, r)
	for _, want := range []string{"wave 0 (canary) judged on traffic+promql", "PromQL analysis of wave 0: failed", "error-rate", "0.05", "fail", "sum(rate(x[1m]))"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("rollout output lacks %q:\n%s", want, b.String())
		}
	}
	s := &golivev1.ServiceState{Name: "app", CurrentRelease: "v4", ActiveSlot: "green",
		Health:  &golivev1.HealthWindow{Requests: 10, Healthy: true, AvgLatencyMs: 2},
		Traffic: &golivev1.TrafficWindow{Source: "nginx", Slots: []*golivev1.SlotTraffic{{Slot: "blue", Requests: 9}, {Slot: "green", Requests: 200, Errors: 10, AvgLatencyMs: 5}}}}
	if got := healthWord(s); !strings.Contains(got, "real 10/200 err 5ms") {
		t.Fatalf("health = %q, want the serving slot's real traffic", got)
	}
}
