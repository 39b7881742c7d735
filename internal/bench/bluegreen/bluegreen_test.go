package bluegreen

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/routertest"
)

// TestRunBrief: a short run through the real deploy step behind real nginx
// and HAProxy: every step succeeds, no request of either load fails (the
// version check included), every phase saw traffic and the reverts are
// timed; restart mode on the same load fails some requests (its restart
// gap), which shows the loads can see failures.
func TestRunBrief(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	routertest.LookPath(t, "nginx")
	routertest.LookPath(t, "haproxy")
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute) // a bound, not a figure: loaded CI machines are slow
	defer cancel()
	var progress bytes.Buffer
	res, err := Run(ctx, Options{Rate: 150, Requests: 1500, CheckRate: 30, Switches: 4, RevertRuns: 3, Log: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res) != 3 || res[0].Mode != Nginx || res[1].Mode != HAProxy || res[2].Mode != Restart {
		t.Fatalf("results for %d modes", len(res))
	}
	for _, r := range res {
		if r.Switches != 4 || r.Switch.Samples != 4 || r.Deploy.Samples != 2 || r.Rollback.Samples != 2 {
			t.Errorf("%s: %d steps, %d switches, %d deploys, %d rollbacks timed", r.Mode, r.Switches, r.Switch.Samples, r.Deploy.Samples, r.Rollback.Samples)
		}
		if r.Main.Total.Requests < 1490 || r.Check.Total.Requests < 290 {
			t.Errorf("%s: requests main %d check %d", r.Mode, r.Main.Total.Requests, r.Check.Total.Requests)
		}
		if r.RevertRuns != 3 || r.Revert.Samples != 3 || r.RevertStep.P50 <= 0 {
			t.Errorf("%s: reverts %d timed, %+v, steps %+v", r.Mode, r.RevertRuns, r.Revert, r.RevertStep)
		}
		for _, p := range []string{PhaseSteady, PhasePrepare, PhaseSwitch, PhaseSettle} {
			if r.Main.Phases[p].Requests == 0 {
				t.Errorf("%s: no main request in phase %s", r.Mode, p)
			}
		}
		if r.Mode == Restart {
			if r.Failed() == 0 {
				t.Errorf("restart mode: no failed request through 4 restarts under load")
			}
			if r.Main.Phases[PhaseSteady].Failed != 0 {
				t.Errorf("restart mode: failures in steady state: %v", r.Main.Phases[PhaseSteady].ByClass)
			}
			continue
		}
		if r.StaleKeepAlive() > 0 {
			t.Logf("%s: %d keep-alive requests got the old version after the confirmed switch (documented nginx limitation)", r.Mode, r.StaleKeepAlive())
		}
		if r.FailedIssue() != 0 || r.Check.Total.Failed != 0 {
			t.Errorf("%s: %d of %d requests failed: main %v, check %v (%v %v)", r.Mode, r.Failed(), r.Requests(),
				r.Main.Total.ByClass, r.Check.Total.ByClass, r.Main.Errors, r.Check.Errors)
		}
	}
	var table bytes.Buffer
	if err := PrintTable(&table, res...); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	for _, want := range []string{"nginx", "haproxy", "restart", "settle", "wrong_body", fmt.Sprintf(" %d/%d ", res[0].Failed(), res[0].Requests()), "revert p50/p99 ms"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Modes: []string{"traefik"}}, {Rate: -1}, {Switches: -1}, {Timeout: -1}, {RevertRuns: -2}, {HealthInterval: -1}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	o := Options{}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.Rate != 1000 || o.Requests != 100_000 || o.Switches != 20 || o.RevertRuns != 20 || len(o.Modes) != 3 {
		t.Errorf("defaults %+v", o)
	}
}

func TestTimeline(t *testing.T) {
	tl := &timeline{}
	before := time.Now()
	tl.set("v1")
	mid := time.Now()
	tl.set("")
	tl.set("v2")
	after := time.Now()
	if got := tl.want(before.Add(-time.Second)); got != "" {
		t.Errorf("before any entry: %q", got)
	}
	if got := tl.want(mid); got != "v1\n" && got != "" && got != "v2\n" {
		t.Errorf("mid: %q", got)
	}
	if got := tl.want(after); got != "v2\n" {
		t.Errorf("after: %q, want v2", got)
	}
}

// TestAgentLevelBrief: the same through the built controller and agent
// behind real nginx: Deploy and Rollback calls, no failed request, reverts
// timed from the rollback rollout's end.
func TestAgentLevelBrief(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	routertest.LookPath(t, "nginx")
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root, err := benchkit.ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for name, pkg := range map[string]string{"golive-controller": "./cmd/controller", "golive-agent": "./cmd/agent"} {
		if err := benchkit.BuildBinary(ctx, root, filepath.Join(bin, name), pkg, nil); err != nil {
			t.Fatal(err)
		}
	}
	var progress bytes.Buffer
	res, err := Run(ctx, Options{Modes: []string{AgentNginx}, ControllerBin: filepath.Join(bin, "golive-controller"),
		AgentBin: filepath.Join(bin, "golive-agent"), Rate: 100, Requests: 1000, CheckRate: 20, Switches: 2, RevertRuns: 2, Log: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	r := res[0]
	if r.Switches != 2 || r.Deploy.Samples != 1 || r.Rollback.Samples != 1 || r.RevertRuns != 2 {
		t.Errorf("steps %d, deploys %d, rollbacks %d, reverts %d", r.Switches, r.Deploy.Samples, r.Rollback.Samples, r.RevertRuns)
	}
	if r.FailedIssue() != 0 || r.Check.Total.Failed != 0 || r.Requests() < 1190 {
		t.Errorf("%d of %d requests failed: main %v, check %v (%v %v)", r.Failed(), r.Requests(),
			r.Main.Total.ByClass, r.Check.Total.ByClass, r.Main.Errors, r.Check.Errors)
	}
}
