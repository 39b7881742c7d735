package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/testenv"
)

func version(port int) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/version", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// TestBlueGreenServiceFromConfig: a blue-green exec service (router none)
// built from the agent's config deploys v1 to one slot and v2 to the other,
// reports the active slot, keeps v1 warm, and rolls back by switching to it
// (start_slot skipped).
func TestBlueGreenServiceFromConfig(t *testing.T) {
	rel, sums := testenv.Releases(t)
	dir := t.TempDir()
	blue, green := routertest.FreePort(t), routertest.FreePort(t)
	src := fmt.Sprintf(`
host_id   = "h1"
state_dir = %q
service "app" {
  swap_mode = "blue-green"
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "100ms"
    successes = 2
    deadline  = "5s"
  }
  blue_green {
    blue_port  = %d
    green_port = %d
    router { kind = "none" }
  }
}
`, filepath.Join(dir, "state"), blue, green)
	cfg, err := agentconfig.Parse([]byte(src), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	services, err := agent.ServicesFromConfig(t.Context(), cfg, hclog.NewNullLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := services[0]
	for i, v := range []string{"v1", "v2"} {
		res := s.Exec.Run(t.Context(), deploystep.Command{ID: fmt.Sprintf("d%d", i), Kind: deploystep.KindDeploy, Release: v,
			ArtifactURL: "file://" + filepath.Join(rel, "sampleapp-"+v+".tar.gz"), SHA256: sums[v]}, nil)
		if res.Outcome != deploystep.OutcomeSucceeded {
			t.Fatalf("deploy %s: %s %s", v, res.Outcome, res.Error)
		}
	}
	if got := s.ActiveSlot(); got != "green" {
		t.Fatalf("active slot %q after two deploys, want green", got)
	}
	if version(green) != "v2" || version(blue) != "v1" || !s.Manager.Running() {
		t.Fatalf("green answers %q, blue %q", version(green), version(blue))
	}
	defer agent.CloseServices(services, hclog.NewNullLogger())
	res := s.Exec.Run(t.Context(), deploystep.Command{ID: "r1", Kind: deploystep.KindRollback}, nil)
	if res.Outcome != deploystep.OutcomeSucceeded || !res.Stages[0].Skipped {
		t.Fatalf("rollback: %s %s %+v", res.Outcome, res.Error, res.Stages)
	}
	if got := s.ActiveSlot(); got != "blue" {
		t.Fatalf("active slot %q after the rollback", got)
	}
}
