package promsd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/golive/golive/internal/analysis/promtest"
	"github.com/golive/golive/internal/promsd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inventory is a fake controller: its agents can change under a test.
type inventory struct {
	mu     sync.Mutex
	agents []promsd.Agent
	err    error
}

func (i *inventory) PrometheusTargets(context.Context) ([]promsd.Agent, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.agents, i.err
}

func (i *inventory) set(agents []promsd.Agent, err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.agents, i.err = agents, err
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: tWriter{t}, Level: hclog.Debug})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestGroups(t *testing.T) {
	agents := []promsd.Agent{
		{HostID: "web-2", MetricsAddress: "10.0.0.2:9101", Services: []promsd.Service{
			{Name: "api", Release: "v2", Slot: "green", MetricsAddress: "10.0.0.2:8082", MetricsPath: "/internal/metrics"},
			{Name: "api", Release: "v1", Slot: "blue", MetricsAddress: "10.0.0.2:8081", MetricsPath: "/metrics"},
			{Name: "worker", Release: "w1"}, // no metrics endpoint: not listed, not an error
		}},
		{HostID: "web-1", MetricsAddress: "10.0.0.1:9101", Services: []promsd.Service{
			{Name: "api", Release: "v1", MetricsAddress: "10.0.0.1:8080"},
			{Name: "bad-addr", MetricsAddress: "10.0.0.1"},
			{Name: "bad-path", MetricsAddress: "10.0.0.1:8090", MetricsPath: "metrics?x=1"},
			{Name: "dup", MetricsAddress: "10.0.0.1:8080"},
		}},
		{HostID: "", MetricsAddress: "10.0.0.9:9101"},
		{HostID: "db-1"}, // no agent metrics, no services
		{HostID: "[::1]", MetricsAddress: "[::1]:9101"},
	}
	got, skipped := promsd.Groups(agents)
	want := []promsd.TargetGroup{
		{Targets: []string{"[::1]:9101"}, Labels: map[string]string{"host": "[::1]", "golive_target": "agent"}},
		{Targets: []string{"10.0.0.1:9101"}, Labels: map[string]string{"host": "web-1", "golive_target": "agent"}},
		{Targets: []string{"10.0.0.1:8080"}, Labels: map[string]string{"host": "web-1", "service": "api", "release": "v1", "golive_target": "service"}},
		{Targets: []string{"10.0.0.2:9101"}, Labels: map[string]string{"host": "web-2", "golive_target": "agent"}},
		{Targets: []string{"10.0.0.2:8081"}, Labels: map[string]string{"host": "web-2", "service": "api", "release": "v1", "slot": "blue", "golive_target": "service"}},
		{Targets: []string{"10.0.0.2:8082"}, Labels: map[string]string{"host": "web-2", "service": "api", "release": "v2", "slot": "green", "golive_target": "service", "__metrics_path__": "/internal/metrics"}},
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", " ")
		t.Errorf("Groups =\n%s", gj)
	}
	wantSkipped := []string{"without a host id", `"bad-addr": metrics address`, `"bad-path": metrics path`, `"dup": target 10.0.0.1:8080 is listed twice`}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped = %q", skipped)
	}
	for _, w := range wantSkipped {
		if !strings.Contains(strings.Join(skipped, "\n"), w) {
			t.Errorf("skipped %q does not say %q", skipped, w)
		}
	}
	// The same inventory in another order gives the same answer.
	rev := make([]promsd.Agent, len(agents))
	for i, a := range agents {
		rev[len(agents)-1-i] = a
	}
	if again, _ := promsd.Groups(rev); !reflect.DeepEqual(again, got) {
		t.Error("Groups depends on the inventory's order")
	}
	if empty, _ := promsd.Groups(nil); empty == nil || len(empty) != 0 {
		t.Errorf("Groups(nil) = %#v, want an empty list (JSON [])", empty)
	}
}

func TestHandler(t *testing.T) {
	inv := &inventory{}
	srv := httptest.NewServer(promsd.NewHandler(inv, testLogger(t)))
	t.Cleanup(srv.Close)
	get := func(method string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+promsd.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ct, body := get(http.MethodGet); code != 200 || ct != "application/json" || body != "[]\n" {
		t.Errorf("empty inventory: %d %s %q", code, ct, body)
	}
	inv.set([]promsd.Agent{{HostID: "h", MetricsAddress: "127.0.0.1:9101"}}, nil)
	if code, _, body := get(http.MethodGet); code != 200 || body != `[{"targets":["127.0.0.1:9101"],"labels":{"golive_target":"agent","host":"h"}}]`+"\n" {
		t.Errorf("one agent: %d %q", code, body)
	}
	inv.set(nil, errors.New("etcd unavailable"))
	if code, _, body := get(http.MethodGet); code != http.StatusServiceUnavailable || strings.Contains(body, "[") {
		t.Errorf("inventory error: %d %q, want 503 and no list", code, body)
	}
	if code, _, _ := get(http.MethodPost); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", code)
	}
}

// TestPrometheusDiscovers runs a real Prometheus whose http_sd_configs
// point at the handler, and checks through /api/v1/targets that it
// discovers and scrapes the targets with their labels, and follows a new
// release.
func TestPrometheusDiscovers(t *testing.T) {
	// The "agent" and the "service": real loopback /metrics endpoints.
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			fmt.Fprintln(w, "golive_agent_connected 1")
		case "/app/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			fmt.Fprintln(w, `sampleapp_http_requests_total{code="200",path="/"} 7`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(exporter.Close)
	addr := strings.TrimPrefix(exporter.URL, "http://")

	inv := &inventory{}
	fleet := func(release string) []promsd.Agent {
		return []promsd.Agent{{HostID: "web-1", MetricsAddress: addr, Services: []promsd.Service{
			{Name: "sampleapp", Release: release, Slot: "blue", MetricsAddress: addr, MetricsPath: "/app/metrics"},
		}}}
	}
	inv.set(fleet("v1"), nil)
	mux := http.NewServeMux()
	mux.Handle(promsd.Path, promsd.NewHandler(inv, testLogger(t)))
	sd := httptest.NewServer(mux)
	t.Cleanup(sd.Close)

	srv := promtest.Start(t, promtest.Options{Config: fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: golive
    http_sd_configs:
      - url: %s%s
        refresh_interval: 1s
`, sd.URL, promsd.Path)})

	wantTargets := func(release string) func() (bool, string) {
		return func() (bool, string) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			targets, err := srv.Targets(ctx)
			if err != nil {
				return false, err.Error()
			}
			var agent, svc *promtest.Target
			for i := range targets {
				switch targets[i].Labels["golive_target"] {
				case "agent":
					agent = &targets[i]
				case "service":
					svc = &targets[i]
				}
			}
			if len(targets) != 2 || agent == nil || svc == nil {
				return false, fmt.Sprintf("targets: %+v", targets)
			}
			if agent.Labels["host"] != "web-1" || agent.Labels["instance"] != addr || agent.Labels["job"] != "golive" ||
				agent.ScrapeURL != "http://"+addr+"/metrics" {
				return false, fmt.Sprintf("agent target: %+v", *agent)
			}
			l := svc.Labels
			if l["host"] != "web-1" || l["service"] != "sampleapp" || l["release"] != release || l["slot"] != "blue" ||
				svc.ScrapeURL != "http://"+addr+"/app/metrics" {
				return false, fmt.Sprintf("service target: %+v", *svc)
			}
			if agent.Health != "up" || svc.Health != "up" {
				return false, fmt.Sprintf("not scraped yet: agent %s %q, service %s %q", agent.Health, agent.LastError, svc.Health, svc.LastError)
			}
			return true, ""
		}
	}
	promtest.WaitFor(t, 60*time.Second, wantTargets("v1"))

	// A new release shows up at the next refresh.
	inv.set(fleet("v2"), nil)
	promtest.WaitFor(t, 60*time.Second, wantTargets("v2"))

	// An inventory error keeps the targets Prometheus has.
	inv.set(nil, errors.New("etcd unavailable"))
	promtest.WaitFor(t, 60*time.Second, func() (bool, string) {
		// Prometheus logs the failed refresh; the targets stay.
		return strings.Contains(srv.Log(), "503 Service Unavailable"), "no failed refresh in the Prometheus log yet"
	})
	if ok, why := wantTargets("v2")(); !ok {
		t.Errorf("after a failed refresh: %s", why)
	}
}
