package controllercli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func TestPrintScaleStatus(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	d := 240.0
	resp := &golivev1.ScaleStatusResponse{Entries: []*golivev1.ScaleEntry{{Service: "web", Host: "web-1", AgentState: "connected", Min: 1, Max: 8,
		Instances: 2, DesiredInstances: 2, Metric: "rps", Demand: &d, PerInstance: 120, Target: 50, Recommendation: 5, Action: "scale_up",
		Reason: "240 rps over 2 serving; not applied: no live approval", EvaluatedAt: timestamppb.New(now.Add(-3 * time.Second)),
		Command: "golive-controller scale set --service web --instances 5 --hosts web-1",
		LastAction: &golivev1.ScaleActionRecord{At: timestamppb.New(now.Add(-time.Minute)), From: 1, To: 2, Actor: "alice", Operator: true,
			Reason: "operator alice", Outcome: "succeeded"}}}}
	var b bytes.Buffer
	printScaleStatus(&b, resp, now)
	for _, want := range []string{"no live approval: recommendations are shown", "web      web-1", "240 rps", "50/instance", "scale_up",
		"why:         240 rps over 2 serving; not applied: no live approval (3s ago)", "last action: 1 -> 2 by alice 1m0s ago, succeeded",
		"to apply:    golive-controller scale set --service web --instances 5 --hosts web-1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
