package controller

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsfailover"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func TestJudgePool(t *testing.T) {
	now := time.Now()
	fresh := timestamppb.New(now.Add(-time.Second))
	stale := timestamppb.New(now.Add(-time.Minute))
	agent := func(host string, healthy bool, mod func(*golivev1.Agent)) *golivev1.Agent {
		a := &golivev1.Agent{HostId: host, State: "connected", LastHeartbeat: fresh, Labels: map[string]string{"role": "web"},
			Services: []*golivev1.ServiceState{{Name: "app", Health: &golivev1.HealthWindow{Requests: 20, Healthy: healthy, LastProbe: fresh, LastError: "status 500"}}}}
		if mod != nil {
			mod(a)
		}
		return a
	}
	pool := &dnsconfig.Pool{Name: "blue", Hosts: []string{"web-1", "web-2"}}
	tests := []struct {
		name   string
		pool   *dnsconfig.Pool
		give   []*golivev1.Agent
		want   dnsfailover.Verdict
		reason string
	}{
		{"all healthy", pool, []*golivev1.Agent{agent("web-1", true, nil), agent("web-2", true, nil)}, dnsfailover.Healthy, "2/2 hosts healthy"},
		{"half healthy", pool, []*golivev1.Agent{agent("web-1", true, nil), agent("web-2", false, nil)}, dnsfailover.Healthy, "web-2: app: probe failing (status 500)"},
		{"none healthy", pool, []*golivev1.Agent{agent("web-1", false, nil), agent("web-2", false, nil)}, dnsfailover.Unhealthy, "0/2 hosts healthy"},
		{"no agents", pool, nil, dnsfailover.Unknown, "web-1: no agent"},
		{"lost and unknown", pool, []*golivev1.Agent{agent("web-1", true, func(a *golivev1.Agent) { a.State = "lost" })}, dnsfailover.Unhealthy, "web-1: agent lost"},
		{"stale heartbeats", pool, []*golivev1.Agent{agent("web-1", true, func(a *golivev1.Agent) { a.LastHeartbeat = stale }), agent("web-2", true, func(a *golivev1.Agent) { a.LastHeartbeat = stale })},
			dnsfailover.Unknown, "no fresh heartbeat"},
		{"no probe data", pool, []*golivev1.Agent{agent("web-1", true, func(a *golivev1.Agent) { a.Services[0].Health.Requests = 0 }), agent("web-2", false, nil)},
			dnsfailover.Unhealthy, "web-1: app: no probe data"},
		{"real traffic failing", pool, []*golivev1.Agent{
			agent("web-1", true, func(a *golivev1.Agent) {
				a.Services[0].ActiveSlot = "blue"
				a.Services[0].Traffic = &golivev1.TrafficWindow{Source: "nginx", ObservedAt: fresh, Slots: []*golivev1.SlotTraffic{{Slot: "blue", Requests: 200, Errors: 40}}}
			}),
			agent("web-2", false, nil)}, dnsfailover.Unhealthy, "nginx counts 20.0% errors over 200 requests"},
		{"selector matches none", &dnsconfig.Pool{Name: "green", Selector: map[string]string{"role": "dr"}}, []*golivev1.Agent{agent("web-1", true, nil)},
			dnsfailover.Unknown, "no agent matches"},
		{"selector", &dnsconfig.Pool{Name: "green", Selector: map[string]string{"role": "web"}}, []*golivev1.Agent{agent("web-1", true, nil)},
			dnsfailover.Healthy, "1/1 hosts healthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judgePool(tt.pool, tt.give, now, 10*time.Second)
			if got.Verdict != tt.want || !strings.Contains(got.Reason, tt.reason) {
				t.Fatalf("judgePool = %s %q, want %s containing %q", got.Verdict, got.Reason, tt.want, tt.reason)
			}
		})
	}
}
