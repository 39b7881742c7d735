package dashboard_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// startAgentProcess runs the golive-agent binary with the sample service
// on a free port; it is stopped (SIGTERM, which also stops the service) at
// the test's end.
func startAgentProcess(t *testing.T, bin, ctlAddr, host string) {
	t.Helper()
	_, p, _ := net.SplitHostPort(etcdtest.FreeAddr(t))
	port, _ := strconv.Atoi(p)
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = %q
state_dir = %q
labels    = { role = "web" }
service "app" {
  port = %d
  keep_releases = 3
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "5s"
  }
}
`, host, t.TempDir(), port)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--config", conf, "--metrics-addr", "", "--grpc-addr", "")
	out := &testLog{t: t, name: host}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
}

// testLog forwards a process's output to t.Log (cmd.Wait returns only
// after the last write, before the test ends).
type testLog struct {
	t    *testing.T
	name string
}

func (l *testLog) Write(p []byte) (int, error) {
	l.t.Logf("%s: %s", l.name, p)
	return len(p), nil
}

// TestBrowserShowsARealDeployLive: three real agent processes run the
// sample service; a canary-then-waves deploy is followed live on the page
// (waves, each host's state, the gate's figures while a wave bakes) to its
// end, the hosts' new release shows, and STOP drops every token.
func TestBrowserShowsARealDeployLive(t *testing.T) {
	bctx := browser(t)
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	cfg.ArtifactsDir = rel
	c := testenv.StartController(t, cfg)
	for i := 1; i <= 3; i++ {
		startAgentProcess(t, bin, c.GRPCAddr(), fmt.Sprintf("web-%d", i))
	}
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	run(t, bctx, 60*time.Second, "open the dashboard; three agents",
		chromedp.Navigate(c.DashboardURL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#agent-counts[data-connected="3"]`)))
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "ship v1 to the web fleet"}); err != nil {
		t.Fatal(err)
	}
	run(t, bctx, 15*time.Second, "the approval shows, and every agent holds it",
		chromedp.WaitVisible(chromedp.CSS(`#approval-state.on`)),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-token[data-holding="true"]`)),
		eval(`window.notReloaded = true`))

	dep, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v1", Canary: 1, Batch: "1",
		ArtifactUrl: "http://" + c.MetricsAddr() + "/artifacts/sampleapp-v1.tar.gz", Sha256: sums["v1"], MinHealthy: durationpb.New(4 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	id := dep.Rollout.Id
	run(t, bctx, 60*time.Second, "the rollout runs live: its waves, hosts and the gate baking",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s`, id))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s li[data-host="web-1"]`, id))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s .gate`, id))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s .gate[data-passing="true"]`, id))))
	if p := os.Getenv("GOLIVE_DASHBOARD_SCREENSHOT"); p != "" {
		png := value(t, bctx, "screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", p)
	}
	run(t, bctx, 120*time.Second, "the rollout succeeds and every host shows v1, live",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#history tr[data-rollout=%q][data-state="succeeded"]`, id))),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-host="web-1"] span.svc[data-release="v1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-host="web-2"] span.svc[data-release="v1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-host="web-3"] span.svc[data-release="v1"]`)))
	assertNotReloaded(t, bctx)

	// A deployer pauses a running rollout from the page.
	dep2, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", Canary: 1, Batch: "1",
		ArtifactUrl: "http://" + c.MetricsAddr() + "/artifacts/sampleapp-v2.tar.gz", Sha256: sums["v2"], MinHealthy: durationpb.New(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	run(t, bctx, 60*time.Second, "pause the v2 rollout from the page",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s button.pause`, dep2.Rollout.Id))),
		// Clicked by script: a live update may replace the button between
		// finding it and a click through the protocol.
		eval(fmt.Sprintf(`document.querySelector('#rollout-%s button.pause').click()`, dep2.Rollout.Id)),
		chromedp.WaitVisible(chromedp.ID("flash")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rollout-%s[data-paused="true"]`, dep2.Rollout.Id))))
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "pause"})
	if err != nil || len(au.Entries) != 1 || !strings.HasPrefix(au.Entries[0].Source, "dashboard ") {
		t.Fatalf("the page's pause in the audit log: %v %v", au, err)
	}

	run(t, bctx, 15*time.Second, "STOP: every agent drops the token",
		chromedp.Click(chromedp.ID("stop")),
		chromedp.WaitVisible(chromedp.CSS(`#approval-state.off`)),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-token[data-dropped="true"]`)))
	r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
	if err != nil || r.Rollout.State != "succeeded" {
		t.Fatalf("rollout %v: %v", r, err)
	}
}
