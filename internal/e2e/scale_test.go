package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// scalePorts finds n consecutive free ports below the ephemeral range.
func scalePorts(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		base := freePort(t)
		ok := true
		for p := base + 1; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// runLoad sends rate requests/s to url until the returned func is called.
func runLoad(t *testing.T, url string, rate float64) func() loadgen.Result {
	t.Helper()
	g, err := loadgen.New(loadgen.Options{URL: url, Rate: rate, Duration: 10 * time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan loadgen.Result, 1)
	go func() {
		r, _ := g.Run(context.Background())
		done <- r
	}()
	stop := func() loadgen.Result { g.Stop(); return <-done }
	t.Cleanup(func() { g.Stop() })
	return stop
}

func noFailures(t *testing.T, what string, r loadgen.Result) {
	t.Helper()
	sum := r.Summary()
	if f := r.Failures(); len(f) > 0 || sum.Requests == 0 {
		t.Fatalf("%s: %d requests, %d failed: first %+v", what, sum.Requests, len(f), f[:min(len(f), 3)])
	}
	t.Logf("%s: %d requests, none failed", what, sum.Requests)
}

// scaledApp is the sample app "app" on host web-1, scaled behind a real
// HAProxy (min 1, max 4, 20 rps per instance, interval 1s, no cooldown, a
// 5s window), v1 live, and a controller with a live approval.
type scaledApp struct {
	env *gateEnv
	url string
}

func startScaledApp(t *testing.T) *scaledApp {
	t.Helper()
	env := startGateEnv(t, "")
	base := scalePorts(t, 4)
	h := routertest.StartHAProxyPool(t, "be_app", "app", base)
	state := t.TempDir()
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = "web-1"
state_dir = %q
service "app" {
  port = %d
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "10s"
  }
  traffic {
    source       = "haproxy"
    admin_socket = %q
    backend      = "be_app"
    server       = "app"
  }
  scale {
    min               = 1
    max               = 4
    target_rps        = 20
    interval          = "1s"
    scale_up_cooldown = "0s"
    scale_down_window = "5s"
    drain_timeout     = "2s"
    router {
      kind         = "haproxy"
      admin_socket = %q
      backend      = "be_app"
    }
  }
}
`, state, base, h.Socket, h.Socket)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, "web-1", filepath.Join(env.bin, "golive-agent"), "run", "--controller", env.ctlAddr, "--config", conf,
		"--metrics-addr", "", "--grpc-addr", "")
	waitToken(t, env.ctl, "web-1")

	// v1 goes live under light load (the gate wants real requests).
	url := h.URL("/")
	stop := runLoad(t, url, 10)
	resp, err := env.ctl.Deploy(env.ctx, &golivev1.DeployRequest{Service: "app", Release: "v1", Hosts: []string{"web-1"},
		ArtifactUrl: "http://" + env.httpAddr + "/artifacts/sampleapp-v1.tar.gz", Sha256: env.sums["v1"],
		MinHealthy: durationpb.New(3 * time.Second), MinRequests: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r := finish(t, env.ctl, env.ctx, resp.Rollout.Id); r.State != "succeeded" {
		t.Fatalf("deploy of v1: %s %s", r.State, r.Reason)
	}
	stop()
	return &scaledApp{env: env, url: url}

}

func (a *scaledApp) entry() *golivev1.ScaleEntry {
	st, err := a.env.ctl.ScaleStatus(a.env.ctx, &golivev1.ScaleStatusRequest{Service: "app"})
	if err != nil || len(st.Entries) != 1 {
		return nil
	}
	return st.Entries[0]
}

// TestScalingByDemandThroughHAProxy: the real controller and agent
// binaries, the sample app behind a real HAProxy whose counters are the
// demand. Under an approval, a step in load scales the service up (each
// new instance healthy and in HAProxy before it serves) with no failed
// request; when the load falls it scales back down to min, only after the
// window, drained, with no failed request.
func TestScalingByDemandThroughHAProxy(t *testing.T) {
	app := startScaledApp(t)
	env, url, entry := app.env, app.url, app.entry
	// 80 rps for instances sized for 20: four, serving.
	stop := runLoad(t, url, 80)
	stepAt := time.Now()
	var e *golivev1.ScaleEntry
	took := testenv.WaitFor(t, 120*time.Second, "4 instances serving", func() bool {
		e = entry()
		return e != nil && e.Instances == 4 && e.DesiredInstances == 4
	})
	noFailures(t, "scale-up under 80 rps", stop())
	t.Logf("scaled to 4 in %s after the step (30s traffic window)", took)
	if e.LastAction == nil || e.LastAction.Actor != "controller" || e.LastAction.Operator {
		t.Fatalf("last action %v: want the controller's", e.LastAction)
	}

	// The load falls to 5 rps: back to one, after the window, drained.
	stop = runLoad(t, url, 5)
	testenv.WaitFor(t, 180*time.Second, "1 instance serving", func() bool {
		e = entry()
		return e != nil && e.Instances == 1 && e.DesiredInstances == 1
	})
	noFailures(t, "scale-down under 5 rps", stop())
	if e.LastAction == nil || e.LastAction.To != 1 || e.LastAction.At.AsTime().Sub(stepAt) < 5*time.Second {
		t.Fatalf("last action %v", e.LastAction)
	}
	au, err := env.ctl.ListAudit(env.ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range au.Entries {
		if en.Action == "scale" && en.Actor == "controller" {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("%d audited scale actions, want the ups and the down", n)
	}
}

// TestScalingRevokeMidScaleUpThroughHAProxy: the load steps up, the first
// scale action is written, the approval is revoked: the demand still asks
// for more, shown as a recommendation, and nothing further is written.
func TestScalingRevokeMidScaleUpThroughHAProxy(t *testing.T) {
	app := startScaledApp(t)
	env := app.env
	stop := runLoad(t, app.url, 80)
	defer stop()
	testenv.WaitFor(t, 120*time.Second, "the first scale-up", func() bool {
		e := app.entry()
		return e != nil && e.LastAction != nil && e.LastAction.Actor == "controller"
	})
	if _, err := env.ctl.Revoke(env.ctx, &golivev1.RevokeRequest{Reason: "stop scaling"}); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	var e *golivev1.ScaleEntry
	testenv.WaitFor(t, 120*time.Second, "more recommended after the revoke, not applied", func() bool {
		e = app.entry()
		return e != nil && e.EvaluatedAt.AsTime().After(revokedAt) && e.Recommendation > e.DesiredInstances &&
			strings.Contains(e.Reason, "no live approval")
	})
	au, err := env.ctl.ListAudit(env.ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var revokeSeq uint64
	for _, en := range au.Entries {
		if en.Action == "revoke" {
			revokeSeq = en.Seq
		}
	}
	if revokeSeq == 0 {
		t.Fatal("no revoke in the audit log")
	}
	for _, en := range au.Entries {
		if en.Action == "scale" && en.Seq > revokeSeq {
			t.Fatalf("a scale action after the revoke: %v", en)
		}
	}
	t.Logf("after the revoke: %d instances, %d recommended: %s", e.DesiredInstances, e.Recommendation, e.Reason)
}
