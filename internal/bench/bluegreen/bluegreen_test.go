package bluegreen

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/routertest"
)

// TestRunBrief: a short run through real nginx and HAProxy: every switch is
// confirmed, no request of either load fails (the version check included),
// every phase saw traffic, and the reverts are timed.
func TestRunBrief(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	routertest.LookPath(t, "nginx")
	routertest.LookPath(t, "haproxy")
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := Run(ctx, Options{Rate: 100, Requests: 1000, CheckRate: 20, Switches: 4, RevertRuns: 3, Log: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res) != 2 || res[0].Router != Nginx || res[1].Router != HAProxy {
		t.Fatalf("results for %d routers", len(res))
	}
	for _, r := range res {
		if r.Switches != 4 || r.SwitchCall.Samples != 4 || r.Prepare.Samples != 2 {
			t.Errorf("%s: %d switches, %d switch calls, %d deploys timed", r.Router, r.Switches, r.SwitchCall.Samples, r.Prepare.Samples)
		}
		if r.Failed() != 0 {
			t.Errorf("%s: %d of %d requests failed: main %v, check %v (%v %v)", r.Router, r.Failed(), r.Requests(),
				r.Main.Total.ByClass, r.Check.Total.ByClass, r.Main.Errors, r.Check.Errors)
		}
		if r.Main.Total.Requests < 990 || r.Check.Total.Requests < 190 {
			t.Errorf("%s: requests main %d check %d", r.Router, r.Main.Total.Requests, r.Check.Total.Requests)
		}
		for _, p := range []string{PhaseSteady, PhaseSwitch, PhaseSettle} {
			if r.Main.Phases[p].Requests == 0 {
				t.Errorf("%s: no main request in phase %s", r.Router, p)
			}
		}
		if r.RevertRuns != 3 || r.Revert.Samples != 3 || r.RevertCall.P50 <= 0 {
			t.Errorf("%s: reverts %d timed, %+v, calls %+v", r.Router, r.RevertRuns, r.Revert, r.RevertCall)
		}
	}
	var table bytes.Buffer
	if err := PrintTable(&table, res...); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	for _, want := range []string{"nginx", "haproxy", "settle", "wrong_body", "0/1200", "revert p50/p99 ms"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Routers: []string{"traefik"}}, {Rate: -1}, {Switches: -1}, {Timeout: -1}, {RevertRuns: -2}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	o := Options{}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.Rate != 1000 || o.Requests != 100_000 || o.Switches != 20 || o.RevertRuns != 20 || len(o.Routers) != 2 {
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
