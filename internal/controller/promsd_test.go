package controller_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/golive/golive/internal/promsd"
	"github.com/golive/golive/internal/testenv"
)

// TestPrometheusServiceDiscovery: GET /v1/prometheus/sd on the controller's
// HTTP port lists each connected agent's /metrics (a wildcard listen
// address is replaced by the stream's address) and its service's own
// metrics endpoint with host, service, release and slot labels.
func TestPrometheusServiceDiscovery(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	a := &simAgent{host: "web-1", metricsAddr: "0.0.0.0:9100", svcMetricsPort: 8081}
	wg.Add(1)
	go func() { defer wg.Done(); a.run(ctx, conn) }()

	var groups []promsd.TargetGroup
	testenv.WaitFor(t, 20*time.Second, "both targets discovered", func() bool {
		resp, err := http.Get("http://" + c.Server.MetricsAddr() + promsd.Path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		groups = nil
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&groups) != nil {
			return false
		}
		return len(groups) == 2
	})
	byTarget := map[string]map[string]string{}
	for _, g := range groups {
		for _, tg := range g.Targets {
			byTarget[tg] = g.Labels
		}
	}
	if l, ok := byTarget["127.0.0.1:9100"]; !ok || l["host"] != "web-1" {
		t.Fatalf("agent target: %v", groups)
	}
	l, ok := byTarget["127.0.0.1:8081"]
	if !ok || l["service"] != "app" || l["release"] != "v1" || l["slot"] != "blue" || l["__metrics_path__"] != "/custom" {
		t.Fatalf("service target: %v", groups)
	}
}
