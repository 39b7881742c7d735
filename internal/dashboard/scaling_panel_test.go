package dashboard_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestBrowserScalingPanel: a real agent with a scaled service (no release
// yet, no traffic source): the scaling panel shows it with its bounds and
// no metric, and follows an operator's scale set live (no reload).
func TestBrowserScalingPanel(t *testing.T) {
	bctx := browser(t)
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	c := testenv.StartController(t, cfg)
	state := filepath.Join(t.TempDir(), "state")
	acfg, err := agentconfig.Parse([]byte(`
host_id   = "web-1"
state_dir = "`+state+`"
service "app" {
  port = 18080
  exec {
    command = ["bin/sampleapp", "--port", "{port}"]
  }
  health {
    url = "http://127.0.0.1:{port}/healthz"
  }
  scale {
    min        = 1
    max        = 4
    target_rps = 50
  }
}
`), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	services, err := agent.ServicesFromConfig(t.Context(), acfg, testenv.Logger(t, "agent"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartAgent(t, "web-1", state, services, c.GRPCAddr())

	const row = `#scaling tr[data-scale="app/web-1"]`
	run(t, bctx, 60*time.Second, "open the dashboard; the scaling panel shows the service on its host",
		chromedp.Navigate(c.DashboardURL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(row)),
		eval(`window.notReloaded = true`))
	if txt := value(t, bctx, "the row's text", chromedp.Text(chromedp.CSS(row))); !strings.Contains(txt, "[1-4]") || !strings.Contains(txt, "50/instance") {
		t.Fatalf("the scaling row: %q", txt)
	}
	run(t, bctx, 60*time.Second, "the leader's evaluation shows: no metric",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-evaluated="true"][data-action="hold"]`)))
	if txt := value(t, bctx, "the why", chromedp.Text(chromedp.CSS(row+` td.why`))); !strings.Contains(txt, "never scales") {
		t.Fatalf("the why cell: %q", txt)
	}
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	if _, err := ctl.ScaleSet(ctx, &golivev1.ScaleSetRequest{Service: "app", Instances: 2, Reason: "launch"}); err != nil {
		t.Fatal(err)
	}
	run(t, bctx, 30*time.Second, "the operator's scale set shows live",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-last="alice"]`)))
	if txt := value(t, bctx, "the last action", chromedp.Text(chromedp.CSS(row+` td.last-action`))); !strings.Contains(txt, "1 -> 2 by alice") {
		t.Fatalf("the last action cell: %q", txt)
	}
	assertNotReloaded(t, bctx)
}
