// Package swapload benchmarks what a restart-mode swap costs the traffic of
// the service being deployed: how many requests fail, of which kind, for how
// long, and what happens to latency while the agent's deploy step replaces
// v1 with v2 under a steady open-loop load.
//
// Run builds cmd/sampleapp twice (-X main.version=v1, v2) from the module
// root, packs each as a release tarball served over loopback HTTP, and drives
// the real deploy step (deploystep.Runner on an execmgr.Manager, with the
// service built from agentconfig.DefaultService) in a temporary directory:
//
//	deploy v1 ──▶ load starts ──steady──▶ deploy v2 (restart) ──swap──▶ SUCCEEDED ──after──▶ load stops
//	              (loadgen, Rate rps on GET /version)     phases: steady | swap | after
//
// Before the swap every answer must say v1; once the step has reported
// SUCCEEDED every request sent must get v2 (a v1 then is wrong_body); in
// between either is right. Restart mode stops v1 before v2 listens, so the
// requests due in that gap fail: blue-green (a later issue) is what removes
// them. Everything it started is stopped and the temporary directory removed
// before Run returns.
package swapload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/svcmgr/execmgr"
)

// Phase names.
const (
	PhaseSteady = "steady"
	PhaseSwap   = "swap"
	PhaseAfter  = "after"
)

// Options configure one run. Zero values take the defaults named.
type Options struct {
	// Rate is the offered load in requests per second (default 500).
	Rate float64
	// Steady is how long the load runs on v1 before the deploy of v2
	// (default 3s); After how long it goes on once the step succeeded
	// (default 2s).
	Steady, After time.Duration
	// Concurrency caps requests in flight (default 64); Timeout bounds each
	// one (default 1s).
	Concurrency int
	Timeout     time.Duration
	// HealthInterval and HealthSuccesses override the service's health
	// check (defaults: agentconfig.DefaultService's, 1s and 3); they only
	// lengthen the swap phase, not the restart gap.
	HealthInterval  time.Duration
	HealthSuccesses int
	// SwapTimeout bounds the deploy of v2 (default 2m).
	SwapTimeout time.Duration
	// Log, when set, receives progress lines and the deploy step's log.
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Rate == 0 {
		o.Rate = 500
	}
	if o.Steady == 0 {
		o.Steady = 3 * time.Second
	}
	if o.After == 0 {
		o.After = 2 * time.Second
	}
	if o.Concurrency == 0 {
		o.Concurrency = loadgen.DefaultConcurrency
	}
	if o.Timeout == 0 {
		o.Timeout = loadgen.DefaultTimeout
	}
	if o.SwapTimeout == 0 {
		o.SwapTimeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.Rate < 0:
		return fmt.Errorf("swapload: rate %v must be positive", o.Rate)
	case o.Steady < 0 || o.After < 0 || o.SwapTimeout < 0 || o.Timeout < 0 || o.HealthInterval < 0:
		return errors.New("swapload: durations must not be negative")
	case o.Concurrency < 0 || o.HealthSuccesses < 0:
		return errors.New("swapload: concurrency and health successes must not be negative")
	}
	return nil
}

// Result is one run's figures.
type Result struct {
	Rate float64
	// Steady, Swap and After describe the requests due in each phase; Total
	// all of them.
	Steady, Swap, After, Total loadgen.Summary
	// FirstFailure and LastFailure are the due times of the first and last
	// failed requests, from the start of the swap phase; FailureWindow the
	// time between them.
	FirstFailure, LastFailure, FailureWindow time.Duration
	// RestartAt is when the step's restart stage began, from the start of
	// the swap phase; Restart how long the stage took.
	RestartAt, Restart time.Duration
	// Deploy is the wall time of the v2 deploy step; Outcome its outcome.
	Deploy  time.Duration
	Outcome deploystep.Outcome
	// Stages are the v2 step's stage reports.
	Stages []deploystep.StageReport
	// Errors are the distinct errors of failed requests without an answer
	// (up to five), for the table's notes.
	Errors []string
}

// Run builds the releases, deploys v1, and measures a deploy of v2 under
// load. A step that does not succeed is an error, returned with the figures
// taken.
func Run(ctx context.Context, o Options) (Result, error) {
	res := Result{}
	if err := o.defaults(); err != nil {
		return res, err
	}
	res.Rate = o.Rate
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "swapload: "+format+"\n", args...) }

	tmp, err := os.MkdirTemp("", "golive-swapload-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)

	logf("building sampleapp v1 and v2")
	tarballs, err := benchkit.SampleReleases(ctx, tmp, "", "v1", "v2")
	if err != nil {
		return res, err
	}
	arts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := tarballs[strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".tar.gz")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	defer arts.Close()
	deploy := func(v string) deploystep.Command {
		sum := sha256.Sum256(tarballs[v])
		return deploystep.Command{ID: "deploy-" + v, Kind: deploystep.KindDeploy, Release: v,
			ArtifactURL: arts.URL + "/" + v + ".tar.gz", SHA256: hex.EncodeToString(sum[:])}
	}

	ports, err := benchkit.FreePorts(1)
	if err != nil {
		return res, err
	}
	port := ports[0]
	svc := agentconfig.DefaultService("sampleapp")
	svc.Port = port
	svc.Exec = &agentconfig.Exec{Command: []string{"bin/sampleapp", "--port", "{port}"}, StopTimeout: 10 * time.Second}
	svc.Health.URL = "http://127.0.0.1:{port}/healthz"
	if o.HealthInterval > 0 {
		svc.Health.Interval = o.HealthInterval
	}
	if o.HealthSuccesses > 0 {
		svc.Health.Successes = o.HealthSuccesses
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "swapload", Output: o.Log, Level: hclog.Info})
	// As the agent builds it (internal/agent): execmgr's defaults otherwise.
	mgr, err := execmgr.New(execmgr.Config{Name: svc.Name, Command: svc.Command(port),
		LogFile: filepath.Join(tmp, "sampleapp.log"), StopTimeout: svc.Exec.StopTimeout, Logger: logger})
	if err != nil {
		return res, err
	}
	defer mgr.Close()
	runner, err := deploystep.New(deploystep.Config{StateDir: filepath.Join(tmp, "services"), Service: svc, Manager: mgr,
		Artifacts: agentconfig.Artifacts{MaxBytes: agentconfig.DefaultMaxBytes, MaxUnpackedBytes: agentconfig.DefaultMaxUnpackedBytes, MaxFiles: agentconfig.DefaultMaxFiles},
		Logger:    logger})
	if err != nil {
		return res, err
	}

	logf("deploying v1 on 127.0.0.1:%d", port)
	if r := runner.Run(ctx, deploy("v1"), nil); r.Outcome != deploystep.OutcomeSucceeded {
		return res, fmt.Errorf("deploy v1: %s at %s: %s", r.Outcome, r.FailedStage, r.Error)
	}

	// What a request sent at t must get: v1 before the swap, v2 once the
	// step has succeeded, either in between. Unix nanoseconds, 0 = not yet.
	var swapAt, confirmedAt atomic.Int64
	gen, err := loadgen.New(loadgen.Options{
		URL:         fmt.Sprintf("http://127.0.0.1:%d/version", port),
		Rate:        o.Rate,
		Concurrency: o.Concurrency,
		Timeout:     o.Timeout,
		// A bound in case the rest goes wrong; Stop ends it normally.
		Duration: o.Steady + o.SwapTimeout + o.After + time.Minute,
		Phase:    PhaseSteady,
		ExpectBody: func(sent time.Time) string {
			t := sent.UnixNano()
			if c := confirmedAt.Load(); c != 0 && t >= c {
				return "v2"
			}
			if s := swapAt.Load(); s == 0 || t < s {
				return "v1"
			}
			return ""
		},
	})
	if err != nil {
		return res, err
	}
	type loadOut struct {
		res loadgen.Result
		err error
	}
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan loadOut, 1)
	go func() {
		r, err := gen.Run(loadCtx)
		loadDone <- loadOut{r, err}
	}()
	// The generator stops on every path out of here; loadDone is read once.
	var load *loadOut
	finish := func() loadOut {
		if load == nil {
			gen.Stop()
			l := <-loadDone
			load = &l
		}
		return *load
	}
	defer finish()

	hold := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		case l := <-loadDone:
			load = &l
			return fmt.Errorf("load generator ended early: %v", l.err)
		}
	}
	logf("load at %.0f rps, steady for %v", o.Rate, o.Steady)
	if err := hold(o.Steady); err != nil {
		return res, err
	}

	logf("deploying v2 (restart mode) under load")
	gen.Mark(PhaseSwap)
	swapStart := time.Now()
	swapAt.Store(swapStart.UnixNano())
	var restartAt time.Duration
	dctx, cancelDeploy := context.WithTimeout(ctx, o.SwapTimeout)
	step := runner.Run(dctx, deploy("v2"), func(stage string) {
		if stage == deploystep.StageRestart {
			restartAt = time.Since(swapStart)
		}
	})
	cancelDeploy()
	res.Deploy = time.Since(swapStart)
	confirmedAt.Store(time.Now().UnixNano())
	gen.Mark(PhaseAfter)
	res.Outcome, res.Stages, res.RestartAt = step.Outcome, step.Stages, restartAt
	for _, st := range step.Stages {
		if st.Name == deploystep.StageRestart {
			res.Restart = time.Duration(st.Seconds * float64(time.Second))
		}
	}
	var stepErr error
	if step.Outcome != deploystep.OutcomeSucceeded {
		stepErr = fmt.Errorf("deploy v2: %s at %s: %s", step.Outcome, step.FailedStage, step.Error)
	} else {
		logf("v2 live after %v; load goes on for %v", res.Deploy.Round(time.Millisecond), o.After)
		if err := hold(o.After); err != nil {
			stepErr = err
		}
	}

	l := finish()
	lr := l.res
	res.Steady, res.Swap, res.After, res.Total = lr.Phase(PhaseSteady), lr.Phase(PhaseSwap), lr.Phase(PhaseAfter), lr.Summary()
	if res.Total.Failed > 0 {
		res.FirstFailure = res.Total.FirstFailure.Sub(swapStart)
		res.LastFailure = res.Total.LastFailure.Sub(swapStart)
		res.FailureWindow = res.Total.FailureWindow()
	}
	seen := map[string]bool{}
	for _, rec := range lr.Failures() {
		if rec.Err == "" || len(res.Errors) == 5 {
			continue
		}
		e := errorKind(rec.Err)
		if !seen[e] {
			seen[e] = true
			res.Errors = append(res.Errors, e)
		}
	}
	logf("%d requests, %d failed", res.Total.Requests, res.Total.Failed)
	if stepErr != nil {
		return res, stepErr
	}
	if l.err != nil {
		return res, fmt.Errorf("load generator: %w", l.err)
	}
	return res, nil
}

// errorKind strips the request-specific prefix of a client error
// (`Get "http://...": `) so that equal causes compare equal.
func errorKind(s string) string {
	if i := strings.Index(s, "\": "); i >= 0 && strings.HasPrefix(s, "Get \"") {
		return s[i+3:]
	}
	return s
}
