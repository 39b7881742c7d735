package agent

import (
	"fmt"
	"github.com/golive/golive/internal/traffic"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func waitTraffic(t *testing.T, st *serviceTraffic, what string, cond func(*golivev1.TrafficWindow) bool) *golivev1.TrafficWindow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := st.proto()
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached: %v", what, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTrafficHAProxyBlueGreen: a blue-green service behind a real HAProxy
// reports each slot's requests in the heartbeat's traffic window and on
// /metrics.
func TestTrafficHAProxyBlueGreen(t *testing.T) {
	blue, green := routertest.StartBackend(t, router.Blue), routertest.StartBackend(t, router.Green)
	h := routertest.StartHAProxy(t, "app", router.Ports{Blue: blue.Port, Green: green.Port})
	sc := agentconfig.DefaultService("app")
	sc.SwapMode = agentconfig.SwapBlueGreen
	sc.BlueGreen = &agentconfig.BlueGreen{BluePort: blue.Port, GreenPort: green.Port,
		Router: agentconfig.Router{Kind: agentconfig.RouterHAProxy, AdminSocket: h.Socket, Backend: "app"}}
	reg := prometheus.NewRegistry()
	tm, err := newTrafficMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := newServiceTraffic(sc, tm, hclog.NewNullLogger())
	if err != nil || st == nil {
		t.Fatalf("newServiceTraffic: %v %v", st, err)
	}
	st.start()
	t.Cleanup(st.stop)
	waitTraffic(t, st, "a first read", func(p *golivev1.TrafficWindow) bool { return p.ObservedAt != nil && p.Error == "" })
	client := &http.Client{}
	for range 30 {
		resp, err := client.Get(h.URL("/"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	p := waitTraffic(t, st, "30 requests to blue", func(p *golivev1.TrafficWindow) bool { return p.Slots[0].Requests == 30 })
	if p.Source != "haproxy" || len(p.Slots) != 2 || p.Slots[0].Slot != "blue" || p.Slots[1].Slot != "green" || p.Slots[1].Requests != 0 ||
		p.Slots[0].Errors != 0 || p.Slots[0].P99LatencyMs != nil || p.Slots[0].WindowSeconds <= 0 || p.Slots[0].Source != "haproxy" {
		t.Fatalf("traffic window %v", p)
	}
	if got := gathered(t, reg, "golive_agent_traffic_requests_total", "app", "blue"); got != 30 {
		t.Fatalf("golive_agent_traffic_requests_total{slot=blue} = %v, want 30", got)
	}
	if n := gathered(t, reg, "golive_agent_traffic_latency_seconds", "app", "blue"); n != 30 {
		t.Fatalf("latency histogram: %v observations, want 30", n)
	}
	// HAProxy gone: the error is reported, the figures stay.
	h.Stop()
	p = waitTraffic(t, st, "the read error", func(p *golivev1.TrafficWindow) bool { return p.Error != "" })
	if !strings.Contains(p.Error, "admin socket") || p.Slots[0].Requests != 30 {
		t.Fatalf("after HAProxy stopped: %v", p)
	}
}

// TestTrafficNginxRestart: a restart-mode service with a traffic block
// reading an nginx JSON access log; a new release resets its window.
func TestTrafficNginxRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "golive.json.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sc := agentconfig.DefaultService("api")
	sc.Port = 9000
	sc.Traffic = &agentconfig.Traffic{Source: agentconfig.TrafficNginx, AccessLog: path}
	reg := prometheus.NewRegistry()
	tm, err := newTrafficMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := newServiceTraffic(sc, tm, hclog.NewNullLogger())
	if err != nil || st == nil {
		t.Fatalf("newServiceTraffic: %v %v", st, err)
	}
	st.start()
	t.Cleanup(st.stop)
	waitTraffic(t, st, "the log opened", func(p *golivev1.TrafficWindow) bool { return p.ObservedAt != nil })
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 20 {
		status := 200
		if i == 0 {
			status = 502
		}
		now := time.Now()
		fmt.Fprintf(f, `{"msec":"%d.%03d","status":"%d","upstream_addr":"127.0.0.1:9000","upstream_status":"%d","upstream_response_time":"0.250"}`+"\n",
			now.Unix(), min(now.Nanosecond()/1e6+1, 999), status, status)
	}
	fmt.Fprintln(f, `{"status":"200","upstream_addr":"127.0.0.1:9001","upstream_status":"200"}`) // another service
	p := waitTraffic(t, st, "20 requests", func(p *golivev1.TrafficWindow) bool { return p.Slots[0].Requests == 20 })
	s := p.Slots[0]
	if p.Source != "nginx" || s.Slot != "" || s.Errors != 1 || s.P99LatencyMs == nil || *s.P99LatencyMs < 250 || s.AvgLatencyMs < 250 || s.AvgLatencyMs > 251 {
		t.Fatalf("traffic window %v", p)
	}
	if got := gathered(t, reg, "golive_agent_traffic_errors_total", "api", ""); got != 1 {
		t.Fatalf("golive_agent_traffic_errors_total = %v, want 1", got)
	}
	st.resetServing("")
	if p := st.proto(); p.Slots[0].Requests != 0 || p.Slots[0].WindowSeconds > 1 {
		t.Fatalf("after a new release: %v", p)
	}
	if got := gathered(t, reg, "golive_agent_traffic_requests_total", "api", ""); got != 20 {
		t.Fatalf("the counter is cumulative: %v, want 20", got)
	}
}

// TestNoTraffic: services without a readable load balancer have none.
func TestNoTraffic(t *testing.T) {
	tests := []struct {
		name string
		give func(*agentconfig.Service)
	}{
		{name: "restart without a traffic block", give: func(*agentconfig.Service) {}},
		{name: "blue-green, router none", give: func(s *agentconfig.Service) {
			s.SwapMode = agentconfig.SwapBlueGreen
			s.BlueGreen = &agentconfig.BlueGreen{BluePort: 1, GreenPort: 2, Router: agentconfig.Router{Kind: agentconfig.RouterNone}}
		}},
		{name: "blue-green, nginx without access_log", give: func(s *agentconfig.Service) {
			s.SwapMode = agentconfig.SwapBlueGreen
			s.BlueGreen = &agentconfig.BlueGreen{BluePort: 1, GreenPort: 2, Router: agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: "/x"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := agentconfig.DefaultService("app")
			tt.give(sc)
			st, err := newServiceTraffic(sc, nil, hclog.NewNullLogger())
			if err != nil || st != nil || st.proto() != nil {
				t.Fatalf("got %v, %v; want none", st, err)
			}
			st.resetServing("") // a nil one is fine
		})
	}
}

// gathered is the value of a counter (a histogram's count) with labels
// service and slot, as /metrics would show it.
func gathered(t *testing.T, reg *prometheus.Registry, name, service, slot string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["service"] != service || l["slot"] != slot {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s{service=%q,slot=%q}", name, service, slot)
	return 0
}

// TestResetServingSlotOnly: once a release is live in a blue-green slot,
// that slot's window starts again (it may hold an earlier release's
// requests: slots are reused) and the other slot's is kept.
func TestResetServingSlotOnly(t *testing.T) {
	blue, green := traffic.NewWindow(traffic.WindowOptions{}), traffic.NewWindow(traffic.WindowOptions{})
	st := &serviceTraffic{source: "nginx", slots: []trafficSlot{{name: "blue", window: blue}, {name: "green", window: green}},
		observed: func() (time.Time, string) { return time.Now(), "" }}
	now := time.Now()
	blue.Observe(now, time.Millisecond, true) // an earlier release's 500 in blue
	green.Observe(now, time.Millisecond, false)
	st.resetServing("blue")
	p := st.proto()
	if p.Slots[0].Slot != "blue" || p.Slots[0].Requests != 0 || p.Slots[1].Slot != "green" || p.Slots[1].Requests != 1 {
		t.Fatalf("after blue went live: %v", p)
	}
}
