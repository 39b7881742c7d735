package deploystep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/svcmgr/execmgr"
)

// bgPlan is a blue-green service's ports and router, for a rig or a crash
// helper.
type bgPlan struct {
	Blue, Green int
	Router      agentconfig.Router
	KeepWarm    time.Duration
	// SmokeV1: a smoke check wants "v1" at /version (v2 fails it once live).
	SmokeV1 bool
}

// bgRig is a blue-green service on two execmgr slots behind a real nginx or
// HAProxy.
type bgRig struct {
	plan  bgPlan
	state string
	url   func(path string) string
	diag  func() string
	r     *Runner
	mgrs  map[router.Slot]*execmgr.Manager
	spy   *spyRouter
}

// spyRouter records the calls to the router it wraps.
type spyRouter struct {
	router.Router
	mu     sync.Mutex
	drains []router.Slot
}

func (s *spyRouter) Drain(ctx context.Context, slot router.Slot, timeout time.Duration) error {
	s.mu.Lock()
	s.drains = append(s.drains, slot)
	s.mu.Unlock()
	return s.Router.Drain(ctx, slot, timeout)
}

func (s *spyRouter) drained() []router.Slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]router.Slot(nil), s.drains...)
}

func bgService(p bgPlan) *agentconfig.Service {
	svc := testService(0)
	svc.SwapMode = agentconfig.SwapBlueGreen
	keep := p.KeepWarm
	if keep == 0 {
		keep = 10 * time.Minute
	}
	svc.BlueGreen = &agentconfig.BlueGreen{BluePort: p.Blue, GreenPort: p.Green, KeepWarm: keep, DrainTimeout: 2 * time.Second, Router: p.Router}
	if p.SmokeV1 {
		svc.Smoke = []*agentconfig.Smoke{{Name: "is-v1", Method: http.MethodGet, Path: "/version", ExpectStatus: 200, BodyContains: "v1"}}
	}
	return svc
}

// newBGRunner builds a Runner for the plan's service on fresh execmgr slot
// managers (pidfiles in state, so a later Runner adopts their processes).
func newBGRunner(t *testing.T, state string, p bgPlan, logger hclog.Logger) (*Runner, map[router.Slot]*execmgr.Manager, *spyRouter) {
	t.Helper()
	svc := bgService(p)
	mgrs := map[router.Slot]*execmgr.Manager{}
	for _, s := range []router.Slot{router.Blue, router.Green} {
		port, _ := svc.SlotPort(string(s))
		m, err := execmgr.New(execmgr.Config{
			Name: svc.Name + "-" + string(s), Command: svc.Command(port), LogFile: filepath.Join(state, "app-"+string(s)+".log"),
			StopTimeout: 5 * time.Second, StartGrace: 300 * time.Millisecond, Logger: logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		mgrs[s] = m
	}
	rt, err := router.New(*svc.BlueGreen, router.Options{Service: svc.Name, StateDir: state, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	spy := &spyRouter{Router: rt}
	r, err := New(Config{StateDir: state, Service: svc, Slots: Slots{Blue: mgrs[router.Blue], Green: mgrs[router.Green]}, Router: spy,
		Logger: logger, Artifacts: agentconfig.Artifacts{MaxBytes: 256 << 20, MaxUnpackedBytes: 512 << 20, MaxFiles: 100}})
	if err != nil {
		t.Fatal(err)
	}
	return r, mgrs, spy
}

// startProxy starts nginx or HAProxy in front of two free ports.
func startProxy(t *testing.T, kind string) (bgPlan, func(string) string, func() string) {
	t.Helper()
	p := bgPlan{Blue: freePort(t), Green: freePort(t)}
	ports := router.Ports{Blue: p.Blue, Green: p.Green}
	switch kind {
	case "nginx":
		n := routertest.StartNginx(t, router.UpstreamName("app"), ports)
		p.Router = agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: n.UpstreamFile, Reload: n.ReloadCommand(), ProbeURL: n.URL("/")}
		return p, n.URL, n.ErrorLog
	case "haproxy":
		h := routertest.StartHAProxy(t, "app", ports)
		p.Router = agentconfig.Router{Kind: agentconfig.RouterHAProxy, AdminSocket: h.Socket, Backend: h.Backend, ProbeURL: h.URL("/")}
		return p, h.URL, h.Log
	}
	t.Fatalf("unknown proxy %q", kind)
	return p, nil, nil
}

func newBGRig(t *testing.T, kind string, keepWarm time.Duration) *bgRig {
	t.Helper()
	p, url, diag := startProxy(t, kind)
	p.KeepWarm = keepWarm
	rg := &bgRig{plan: p, state: t.TempDir(), url: url, diag: diag}
	rg.r, rg.mgrs, rg.spy = newBGRunner(t, rg.state, p, testLogger(t))
	t.Cleanup(func() {
		rg.r.Close()
		for _, m := range rg.mgrs {
			_ = m.Close()
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", diag())
		}
	})
	return rg
}

var proxyKinds = []string{"nginx", "haproxy"}

// through returns what the service answers at /version through the proxy.
func (rg *bgRig) through(t *testing.T) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(rg.url("/version"))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d: %s", resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b))
}

func (rg *bgRig) port(s router.Slot) int {
	if s == router.Blue {
		return rg.plan.Blue
	}
	return rg.plan.Green
}

func (rg *bgRig) active(t *testing.T) router.Traffic {
	t.Helper()
	tr, err := rg.r.cfg.Router.Active(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// waitUntil polls cond every 20ms for up to timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBlueGreenDeployAndInstantRollback: v1 then v2 blue-green behind real
// nginx and HAProxy; v2 serves through the proxy while v1's slot stays warm;
// a rollback is a switch back (same PID, start_slot skipped), and the slot
// left keeps running warm in turn.
func TestBlueGreenDeployAndInstantRollback(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			first := router.Slot(rg.r.ActiveSlot(t.Context()))
			if got := rg.through(t); got != "v1" {
				t.Fatalf("through %s after v1: %q", kind, got)
			}
			res := mustRun(t, rg.r, deployCmd(srv, "d2", "v2"), OutcomeSucceeded)
			second := router.Slot(rg.r.ActiveSlot(t.Context()))
			if second != first.Other() {
				t.Fatalf("v2 went to slot %s, v1 serves from %s", second, first)
			}
			if got := rg.through(t); got != "v2" {
				t.Fatalf("through %s after v2: %q", kind, got)
			}
			if c := current(t, rg.r); c != "v2" {
				t.Fatalf("current %q", c)
			}
			if tr := rg.active(t); tr.Share(second) != 100 {
				t.Fatalf("router %s", tr)
			}
			// v1 is still warm on its own port.
			if got := answers(t, rg.port(first)); got != "v1" {
				t.Fatalf("warm slot %s answers %q", first, got)
			}
			st, err := rg.r.SlotState()
			if err != nil || st.Slots[first].StopAt.IsZero() || st.Serving != second {
				t.Fatalf("slots %+v, %v", st, err)
			}
			t.Logf("v2 deploy stages: %+v", res.Stages)
			pid := rg.mgrs[first].PID()

			start := time.Now()
			rb := mustRun(t, rg.r, Command{ID: "r1", Kind: KindRollback}, OutcomeSucceeded)
			took := time.Since(start)
			t.Logf("%s: rollback (switch back) took %s", kind, took)
			if rep := stageReport(rb, StageStartSlot); rep == nil || !rep.Skipped {
				t.Fatalf("start_slot not skipped on a warm slot: %+v", rb.Stages)
			}
			if got := rg.mgrs[first].PID(); got != pid {
				t.Fatalf("slot %s restarted: pid %d, was %d", first, got, pid)
			}
			if got := rg.through(t); got != "v1" {
				t.Fatalf("through %s after rollback: %q", kind, got)
			}
			if c := current(t, rg.r); c != "v1" || rg.r.ActiveSlot(t.Context()) != string(first) {
				t.Fatalf("current %q, active %s", c, rg.r.ActiveSlot(t.Context()))
			}
			if took > 3*time.Second {
				t.Errorf("switch back took %s", took)
			}
			// v2 is warm now, ready for a switch forward.
			if got := answers(t, rg.port(second)); got != "v2" {
				t.Fatalf("slot %s after rollback answers %q", second, got)
			}
			pid2 := rg.mgrs[second].PID()
			rb2 := mustRun(t, rg.r, Command{ID: "r2", Kind: KindRollback}, OutcomeSucceeded)
			if rep := stageReport(rb2, StageStartSlot); rep == nil || !rep.Skipped || rg.mgrs[second].PID() != pid2 {
				t.Fatalf("second switch restarted slot %s: %+v", second, rb2.Stages)
			}
			if got := rg.through(t); got != "v2" {
				t.Fatalf("through %s after switching forward again: %q", kind, got)
			}
			noJournal(t, rg.r)
		})
	}
}

// TestBlueGreenFailingReleaseGetsNoTraffic: v3's health fails on its own
// port: the step fails before the switch, v3's slot is stopped, v1 keeps
// all the traffic (checked under load through the proxy: 0 failures, every
// answer v1) and current is untouched.
func TestBlueGreenFailingReleaseGetsNoTraffic(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			serving := router.Slot(rg.r.ActiveSlot(t.Context()))
			servingPID := rg.mgrs[serving].PID()
			gen, err := loadgen.New(loadgen.Options{URL: rg.url("/version"), Rate: 200, Concurrency: 64, Duration: time.Minute,
				ExpectBody: func(time.Time) string { return "v1\n" }})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan loadgen.Result, 1)
			go func() { res, _ := gen.Run(context.Background()); done <- res }()
			res := mustRun(t, rg.r, deployCmd(srv, "d3", "v3"), OutcomeFailed)
			time.Sleep(300 * time.Millisecond) // some load after the step too
			gen.Stop()
			load := <-done
			if res.FailedStage != StageSlotHealth {
				t.Fatalf("failed stage %q: %s", res.FailedStage, res.Error)
			}
			// Only the idle slot was started and stopped: the live service
			// was not touched, so the controller has nothing to roll back.
			if !res.Unchanged || !strings.Contains(res.Error, NothingChanged) {
				t.Fatalf("unchanged %v, error %q", res.Unchanged, res.Error)
			}
			if pid := rg.mgrs[serving].PID(); pid != servingPID || pid == 0 {
				t.Fatalf("serving slot's pid %d, was %d", pid, servingPID)
			}
			if c := current(t, rg.r); c != "v1" {
				t.Fatalf("current %q", c)
			}
			if rg.mgrs[serving.Other()].Running() {
				t.Fatalf("the failed slot %s still runs", serving.Other())
			}
			if tr := rg.active(t); tr.Share(serving) != 100 {
				t.Fatalf("router %s", tr)
			}
			sum := load.Summary()
			t.Logf("%s: load during the failed deploy: %d requests, %d failed", kind, sum.Requests, sum.Failed)
			if sum.Requests < 100 || sum.Failed != 0 {
				t.Fatalf("load: %d requests, %d failed: %+v", sum.Requests, sum.Failed, firstFailures(load))
			}
		})
	}
}

func firstFailures(res loadgen.Result) []loadgen.Record {
	f := res.Failures()
	return f[:min(len(f), 5)]
}

// TestBlueGreenCanaryWeight: deploy v2 with 10% for the bake window: the
// router serves blue 90/green 10 (or the reverse) during the bake, v2
// answers part of the requests through the proxy, then all of them.
func TestBlueGreenCanaryWeight(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			old := router.Slot(rg.r.ActiveSlot(t.Context()))
			cmd := deployCmd(srv, "d2", "v2")
			cmd.Weight, cmd.WeightBake = 10, 3*time.Second
			inCanary := make(chan struct{})
			var once sync.Once
			resc := make(chan Result, 1)
			go func() {
				resc <- rg.r.Run(context.Background(), cmd, func(stage string) {
					if stage == StageCanary {
						once.Do(func() { close(inCanary) })
					}
				})
			}()
			<-inCanary
			waitUntil(t, 10*time.Second, "the 10% split", func() bool {
				tr, err := rg.r.cfg.Router.Active(t.Context())
				return err == nil && tr.Share(old.Other()) == 10
			})
			counts := map[string]int{}
			for range 200 {
				counts[rg.through(t)]++
			}
			res := <-resc
			if res.Outcome != OutcomeSucceeded {
				t.Fatalf("canary deploy: %s %s: %s", res.Outcome, res.FailedStage, res.Error)
			}
			t.Logf("%s: answers during the 10%% bake: %v", kind, counts)
			if counts["v1"]+counts["v2"] != 200 || counts["v2"] == 0 || counts["v2"] > 60 {
				t.Fatalf("answers during the bake: %v", counts)
			}
			if tr := rg.active(t); tr.Share(old.Other()) != 100 {
				t.Fatalf("router after the bake: %s", tr)
			}
			if got := rg.through(t); got != "v2" {
				t.Fatalf("through after the switch: %q", got)
			}
		})
	}
}

// TestBlueGreenKeepWarmExpiry: the old slot is drained, then stopped, once
// keep_warm is over; and a stop that fell due while no Runner was up (agent
// restart) happens at StartServing.
func TestBlueGreenKeepWarmExpiry(t *testing.T) {
	srv := serveArtifacts(t)
	rg := newBGRig(t, "nginx", 1500*time.Millisecond)
	mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
	first := router.Slot(rg.r.ActiveSlot(t.Context()))
	mustRun(t, rg.r, deployCmd(srv, "d2", "v2"), OutcomeSucceeded)
	if !rg.mgrs[first].Running() {
		t.Fatal("old slot stopped at once")
	}
	// The stop is recorded in slots.json just after the process is gone.
	waitUntil(t, 15*time.Second, "the warm slot to stop", func() bool {
		st, _ := rg.r.SlotState()
		return !rg.mgrs[first].Running() && st.Slots[first].StopAt.IsZero()
	})
	if d := rg.spy.drained(); len(d) != 1 || d[0] != first {
		t.Fatalf("drains %v, want [%s] before the stop", d, first)
	}
	if got := rg.through(t); got != "v2" {
		t.Fatalf("through after the stop: %q", got)
	}

	// A rollback after keep_warm: v1's slot starts again first, then the
	// traffic switches.
	rb := mustRun(t, rg.r, Command{ID: "r1", Kind: KindRollback}, OutcomeSucceeded)
	if rep := stageReport(rb, StageStartSlot); rep == nil || rep.Skipped {
		t.Fatalf("start_slot skipped for a stopped slot: %+v", rb.Stages)
	}
	if got := rg.through(t); got != "v1" || !rg.mgrs[first].Running() {
		t.Fatalf("through after the rollback: %q", got)
	}

	// Deploy v2 again (on the idle slot), then stop the Runner before
	// keep_warm ends: the next one stops the slot v1 keeps warm.
	mustRun(t, rg.r, deployCmd(srv, "d3", "v2"), OutcomeSucceeded)
	warm := first
	rg.r.Close()
	time.Sleep(2 * time.Second) // past the keep-warm deadline with no Runner
	if !rg.mgrs[warm].Running() {
		t.Fatal("the warm slot stopped without a Runner")
	}
	r2, _, _ := newBGRunnerWithMgrs(t, rg, testLogger(t))
	defer r2.Close()
	if err := r2.StartServing(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rg.mgrs[warm].Running() {
		t.Fatal("an overdue warm slot still runs after StartServing")
	}
	if got := rg.through(t); got != "v2" {
		t.Fatalf("through after restart: %q", got)
	}
}

// newBGRunnerWithMgrs is a second Runner on the rig's managers (an agent
// restart that kept its supervisors).
func newBGRunnerWithMgrs(t *testing.T, rg *bgRig, logger hclog.Logger) (*Runner, map[router.Slot]*execmgr.Manager, router.Router) {
	t.Helper()
	svc := bgService(rg.plan)
	rt, err := router.New(*svc.BlueGreen, router.Options{Service: svc.Name, StateDir: rg.state, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{StateDir: rg.state, Service: svc, Slots: Slots{Blue: rg.mgrs[router.Blue], Green: rg.mgrs[router.Green]}, Router: rt, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return r, rg.mgrs, rt
}

// TestBlueGreenUnderLoad: under load through the proxy, deploy v2, switch
// back, switch forward, deploy v1 again: no request fails, and after each
// confirmed switch every new request is answered by the new release.
func TestBlueGreenUnderLoad(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			gen, err := loadgen.New(loadgen.Options{URL: rg.url("/version"), Rate: 300, Concurrency: 64, Duration: 2 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan loadgen.Result, 1)
			go func() { res, _ := gen.Run(context.Background()); done <- res }()
			steps := []struct {
				cmd  Command
				want string
			}{
				{deployCmd(srv, "d2", "v2"), "v2"},
				{Command{ID: "r1", Kind: KindRollback}, "v1"},
				{Command{ID: "r2", Kind: KindRollback}, "v2"},
				{deployCmd(srv, "d3", "v1"), "v1"},
			}
			for _, st := range steps {
				gen.Mark(st.cmd.ID)
				mustRun(t, rg.r, st.cmd, OutcomeSucceeded)
				if got := rg.through(t); got != st.want {
					t.Fatalf("after %s: %q, want %q", st.cmd.ID, got, st.want)
				}
			}
			time.Sleep(300 * time.Millisecond)
			gen.Stop()
			load := <-done
			sum := load.Summary()
			t.Logf("%s: %d requests through 4 switches, %d failed, p50 %s p99 %s", kind, sum.Requests, sum.Failed, sum.Latency.P50, sum.Latency.P99)
			if sum.Requests < 300 || sum.Failed != 0 {
				t.Fatalf("load: %d requests, %d failed: %+v", sum.Requests, sum.Failed, firstFailures(load))
			}
		})
	}
}

// TestBlueGreenRecoverAfterCrash kills the step (SIGKILL, as an agent
// killed -9) at fault points of a blue-green deploy or switch-back behind
// real nginx (and HAProxy for the switch), then adopts the slots and
// recovers: exactly one slot takes all the traffic, it runs the release
// current names, and the proxy answers with it.
func TestBlueGreenRecoverAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	srv := serveArtifacts(t)
	bin := faultHelper(t)
	tests := []struct {
		name, proxy string
		cmds        []Command
		fault       string
		want        Outcome
		wantCurrent string
	}{
		{"before start_slot", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "before_start_slot", OutcomeFailed, "v1"},
		{"after slot_health", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "after_slot_health", OutcomeFailed, "v1"},
		{"before switch", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "before_switch", OutcomeRolledBack, "v1"},
		{"inside switch", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "inside_switch", OutcomeSucceeded, "v2"},
		{"inside switch haproxy", "haproxy", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "inside_switch", OutcomeSucceeded, "v2"},
		{"after switch", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "after_switch", OutcomeSucceeded, "v2"},
		{"before finish", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v2")}, "before_finish", OutcomeSucceeded, "v2"},
		{"undoing a broken release's slot", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "crash", "v3")}, "undo_start_slot", OutcomeFailed, "v1"},
		{"switch back inside switch", "nginx", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "second", "v2"), {ID: "crash", Kind: KindRollback}},
			"inside_switch", OutcomeSucceeded, "v1"},
		{"switch back before switch haproxy", "haproxy", []Command{deployCmd(srv, "first", "v1"), deployCmd(srv, "second", "v2"), {ID: "crash", Kind: KindRollback}},
			"before_switch", OutcomeRolledBack, "v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, url, diag := startProxy(t, tt.proxy)
			state := t.TempDir()
			plan, _ := json.Marshal(helperPlan{State: state, Fault: tt.fault, Cmds: tt.cmds, BG: &p})
			cmd := exec.Command(bin, "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die at %s: %v\n%s", tt.fault, err, out)
			}
			r, mgrs, _ := newBGRunner(t, state, p, testLogger(t))
			t.Cleanup(func() {
				r.Close()
				for _, m := range mgrs {
					_ = m.Close()
				}
				killOrphans(t, state, p.Blue)
				if t.Failed() {
					t.Logf("proxy log:\n%s", diag())
				}
			})
			r.Adopt(t.Context())
			res, err := r.Recover(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if res == nil || res.Outcome != tt.want || !res.Recovered {
				t.Fatalf("Recover: %+v, want %s", res, tt.want)
			}
			t.Logf("recovered: %s failed stage %q: %s; stages %+v", res.Outcome, res.FailedStage, res.Error, res.Stages)
			noJournal(t, r)
			if c := current(t, r); c != tt.wantCurrent {
				t.Fatalf("current %q, want %q", c, tt.wantCurrent)
			}
			tr, err := r.cfg.Router.Active(t.Context())
			if err != nil || (tr.Blue != 100 && tr.Green != 100) {
				t.Fatalf("router %s, %v: want one slot serving", tr, err)
			}
			serving := tr.Primary()
			if st, _ := r.SlotState(); st.Serving != serving || st.Slots[serving].Release != tt.wantCurrent {
				t.Fatalf("slots %+v, router %s", st, tr)
			}
			if !mgrs[serving].Running() {
				t.Fatalf("serving slot %s is not running", serving)
			}
			rg := &bgRig{plan: p, url: url}
			if got := rg.through(t); got != tt.wantCurrent {
				t.Fatalf("through %s: %q, want %q", tt.proxy, got, tt.wantCurrent)
			}
			if again := r.Run(t.Context(), tt.cmds[len(tt.cmds)-1], nil); !again.Replayed || again.Outcome != tt.want {
				t.Fatalf("re-sent command: %+v", again)
			}
		})
	}
}

// TestBlueGreenFailureAfterSwitch: v2 passes its health check but fails a
// smoke check once it serves: the traffic switches back to v1's warm slot
// (same process), current goes back, v2's slot stops: ROLLED_BACK, and no
// request through the proxy fails meanwhile.
func TestBlueGreenFailureAfterSwitch(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			rg.r.cfg.Service.Smoke = []*agentconfig.Smoke{{Name: "is-v1", Method: http.MethodGet, Path: "/version", ExpectStatus: 200, BodyContains: "v1"}}
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			old := router.Slot(rg.r.ActiveSlot(t.Context()))
			pid := rg.mgrs[old].PID()
			gen, err := loadgen.New(loadgen.Options{URL: rg.url("/version"), Rate: 200, Concurrency: 64, Duration: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan loadgen.Result, 1)
			go func() { res, _ := gen.Run(context.Background()); done <- res }()
			res := mustRun(t, rg.r, deployCmd(srv, "d2", "v2"), OutcomeRolledBack)
			time.Sleep(200 * time.Millisecond)
			gen.Stop()
			load := <-done
			if res.FailedStage != StageSmoke {
				t.Fatalf("failed stage %q: %s", res.FailedStage, res.Error)
			}
			if rep := stageReport(res, StageSwitch); rep == nil || !rep.Undone || rep.UndoError != "" {
				t.Fatalf("switch not undone: %+v", res.Stages)
			}
			if got := rg.through(t); got != "v1" {
				t.Fatalf("through after the switch back: %q", got)
			}
			if c := current(t, rg.r); c != "v1" || rg.r.ActiveSlot(t.Context()) != string(old) || rg.mgrs[old].PID() != pid {
				t.Fatalf("current %q, active %s, pid %d (was %d)", c, rg.r.ActiveSlot(t.Context()), rg.mgrs[old].PID(), pid)
			}
			if rg.mgrs[old.Other()].Running() {
				t.Fatalf("v2's slot still runs")
			}
			sum := load.Summary()
			t.Logf("%s: load through a switch and a switch back: %d requests, %d failed", kind, sum.Requests, sum.Failed)
			if sum.Requests < 100 || sum.Failed != 0 {
				t.Fatalf("load: %d requests, %d failed: %+v", sum.Requests, sum.Failed, firstFailures(load))
			}
		})
	}
}

// TestBlueGreenSwitchBackTime times 10 rollbacks (switches between two warm
// slots) behind each proxy: from Run's call until it returns (the switch
// confirmed through the proxy), and checks the proxy answers with the
// other release right after each.
func TestBlueGreenSwitchBackTime(t *testing.T) {
	srv := serveArtifacts(t)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			rg := newBGRig(t, kind, 0)
			mustRun(t, rg.r, deployCmd(srv, "d1", "v1"), OutcomeSucceeded)
			mustRun(t, rg.r, deployCmd(srv, "d2", "v2"), OutcomeSucceeded)
			var took []time.Duration
			want := "v1"
			for i := range 10 {
				start := time.Now()
				res := rg.r.Run(t.Context(), Command{ID: fmt.Sprintf("r%d", i), Kind: KindRollback}, nil)
				took = append(took, time.Since(start))
				if res.Outcome != OutcomeSucceeded {
					t.Fatalf("rollback %d: %s %s", i, res.Outcome, res.Error)
				}
				if got := rg.through(t); got != want {
					t.Fatalf("after rollback %d: %q, want %q", i, got, want)
				}
				want = map[string]string{"v1": "v2", "v2": "v1"}[want]
			}
			s := loadgen.Latencies(took)
			t.Logf("%s: switch back (rollback on a warm slot), 10 runs: p50 %s p90 %s max %s", kind, s.P50, s.P90, s.Max)
			if s.P50 > time.Second {
				t.Errorf("median switch back %s, goal <= 1s", s.P50)
			}
		})
	}
}

// TestBlueGreenKill9AtEveryFaultPoint crashes a blue-green deploy at every
// point of BlueGreenFaultPoints (a 10% canary on the way in; v3, failing
// its health check, for the undos before the switch; v2 failing a smoke
// check for the undos of the switch and the canary), behind nginx or
// HAProxy in turn, then adopts and recovers: never a torn host. Exactly
// one slot takes all the traffic, it runs, slots.json and current name
// its release (v1 or v2), and the proxy answers with it.
// bgCrashWant is the release a crash at fp must recover to: v2 once the
// router has switched all traffic to the new slot (inside the switch, or
// any later stage), v1 before that or while undoing a failed step.
func bgCrashWant(fp string) string {
	switch fp {
	case "inside_switch", "after_switch", "before_smoke", "after_smoke", "before_post_swap", "after_post_swap",
		"before_cleanup", "after_cleanup", "before_finish":
		return "v2"
	}
	return "v1"
}

func TestBlueGreenKill9AtEveryFaultPoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	srv := serveArtifacts(t)
	bin := faultHelper(t)
	for i, fp := range BlueGreenFaultPoints {
		proxy := proxyKinds[i%len(proxyKinds)]
		t.Run(fp+"/"+proxy, func(t *testing.T) {
			p, url, diag := startProxy(t, proxy)
			last := deployCmd(srv, "crash", "v2")
			last.Weight, last.WeightBake = 10, 300*time.Millisecond
			switch fp {
			case "undo_switch", "undo_canary":
				p.SmokeV1 = true
			case "undo_fetch", "undo_unpack", "undo_start_slot":
				last = deployCmd(srv, "crash", "v3")
			}
			state := t.TempDir()
			plan, _ := json.Marshal(helperPlan{State: state, Fault: fp, Cmds: []Command{deployCmd(srv, "first", "v1"), last}, BG: &p})
			cmd := exec.Command(bin, "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die at %s: %v\n%s", fp, err, out)
			}
			r, mgrs, _ := newBGRunner(t, state, p, testLogger(t))
			t.Cleanup(func() {
				r.Close()
				for _, m := range mgrs {
					_ = m.Close()
				}
				killOrphans(t, state, p.Blue)
				if t.Failed() {
					t.Logf("proxy log:\n%s", diag())
				}
			})
			r.Adopt(t.Context())
			res, err := r.Recover(t.Context())
			if err != nil || res == nil || !res.Recovered {
				t.Fatalf("Recover: %+v, %v", res, err)
			}
			t.Logf("%s: recovered %s (failed stage %q: %s)", fp, res.Outcome, res.FailedStage, res.Error)
			noJournal(t, r)
			cur := current(t, r)
			if cur != "v1" && cur != "v2" {
				t.Fatalf("current %q", cur)
			}
			if (res.Outcome == OutcomeSucceeded) != (cur == "v2") {
				t.Fatalf("outcome %s with current %s", res.Outcome, cur)
			}
			if want := bgCrashWant(fp); cur != want {
				t.Fatalf("crash at %s recovered to %s, want %s (forward once the router serves the new slot alone, back before)", fp, cur, want)
			}
			tr, err := r.cfg.Router.Active(t.Context())
			if err != nil || (tr.Blue != 100 && tr.Green != 100) {
				t.Fatalf("router %s, %v: want one slot serving", tr, err)
			}
			serving := tr.Primary()
			if st, _ := r.SlotState(); st.Serving != serving || st.Slots[serving].Release != cur || !mgrs[serving].Running() {
				t.Fatalf("slots %+v, router %s, serving slot running %v", st, tr, mgrs[serving].Running())
			}
			rg := &bgRig{plan: p, url: url}
			if got := rg.through(t); got != cur {
				t.Fatalf("through %s: %q, want %q", proxy, got, cur)
			}
			if again := r.Run(t.Context(), last, nil); !again.Replayed || again.Outcome != res.Outcome {
				t.Fatalf("re-sent command: %+v", again)
			}
		})
	}
}
