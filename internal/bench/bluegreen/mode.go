package bluegreen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/svcmgr/execmgr"
)

// releases serves the release tarballs and makes deploy commands.
type releases struct {
	*httptest.Server
	sums map[string]string
	n    int
}

func serveReleases(tarballs map[string][]byte) *releases {
	rs := &releases{sums: map[string]string{}}
	for v, b := range tarballs {
		sum := sha256.Sum256(b)
		rs.sums[v] = hex.EncodeToString(sum[:])
	}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := tarballs[strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".tar.gz")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	return rs
}

// deploy is a deploy command of release v with a new id.
func (rs *releases) deploy(v string) deploystep.Command {
	rs.n++
	return deploystep.Command{ID: fmt.Sprintf("deploy-%d-%s", rs.n, v), Kind: deploystep.KindDeploy, Release: v,
		ArtifactURL: rs.URL + "/" + v + ".tar.gz", SHA256: rs.sums[v]}
}

// rollback is a rollback command (to the previous release) with a new id.
func (rs *releases) rollback() deploystep.Command {
	rs.n++
	return deploystep.Command{ID: fmt.Sprintf("rollback-%d", rs.n), Kind: deploystep.KindRollback}
}

// service is the service under test, built as the agent builds it.
type service struct {
	runner *deploystep.Runner
	mgrs   []*execmgr.Manager
	url    func(path string) string
	stop   func() error
	diag   func() string
	// switchStage begins a step's switch phase.
	switchStage string
	blueGreen   bool
	rels        *releases
	// agent, when set, drives the steps through the controller instead.
	agent *agentLevel
}

func (s *service) close() {
	if s.agent != nil {
		s.agent.close()
	}
	if s.runner != nil {
		s.runner.Close()
	}
	for _, m := range s.mgrs {
		_ = m.Close()
	}
	if s.stop != nil {
		_ = s.stop()
	}
}

func startService(o Options, mode, dir string, rels *releases, logger hclog.Logger) (*service, error) {
	svc := agentconfig.DefaultService("sampleapp")
	svc.Exec = &agentconfig.Exec{Command: []string{"bin/sampleapp", "--port", "{port}"}, StopTimeout: 10 * time.Second}
	svc.Health.URL = "http://127.0.0.1:{port}/healthz"
	svc.Health.Interval, svc.Health.Successes = o.HealthInterval, o.HealthSuccesses
	arts := agentconfig.Artifacts{MaxBytes: agentconfig.DefaultMaxBytes, MaxUnpackedBytes: agentconfig.DefaultMaxUnpackedBytes, MaxFiles: agentconfig.DefaultMaxFiles}
	state := filepath.Join(dir, "state")
	s := &service{}
	newMgr := func(name string, port int) (*execmgr.Manager, error) {
		// As internal/agent builds it.
		m, err := execmgr.New(execmgr.Config{Name: name, Command: svc.Command(port), LogFile: filepath.Join(dir, name+".log"),
			StopTimeout: svc.Exec.StopTimeout, StartGrace: 300 * time.Millisecond, Logger: logger})
		if err == nil {
			s.mgrs = append(s.mgrs, m)
		}
		return m, err
	}
	if mode == Restart {
		ports, err := benchkit.FreePorts(1)
		if err != nil {
			return nil, err
		}
		svc.Port = ports[0]
		m, err := newMgr(svc.Name, svc.Port)
		if err != nil {
			return nil, err
		}
		s.runner, err = deploystep.New(deploystep.Config{StateDir: filepath.Join(state, "services"), Service: svc, Manager: m,
			Artifacts: arts, Logger: logger})
		if err != nil {
			s.close()
			return nil, err
		}
		s.url = func(path string) string { return "http://" + benchkit.LoopbackAddr(svc.Port) + path }
		s.diag = func() string { return benchkit.Tail(filepath.Join(dir, svc.Name+".log"), 20) }
		s.switchStage = deploystep.StageSwap
		s.rels = rels
		return s, nil
	}

	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, err
	}
	rports := router.Ports{Blue: ports[0], Green: ports[1]}
	px, err := launchProxy(mode, dir, svc.Name, rports)
	if err != nil {
		return nil, err
	}
	s.url, s.stop, s.diag = px.url, px.stop, px.diag
	rc := px.rc
	svc.SwapMode = agentconfig.SwapBlueGreen
	svc.BlueGreen = &agentconfig.BlueGreen{BluePort: ports[0], GreenPort: ports[1], KeepWarm: 15 * time.Minute,
		DrainTimeout: 10 * time.Second, Router: rc}
	slots := deploystep.Slots{}
	for _, slot := range []router.Slot{router.Blue, router.Green} {
		m, err := newMgr(svc.Name+"-"+string(slot), rports.Of(slot))
		if err != nil {
			s.close()
			return nil, err
		}
		if slot == router.Blue {
			slots.Blue = m
		} else {
			slots.Green = m
		}
	}
	rt, err := router.New(*svc.BlueGreen, router.Options{Service: svc.Name, StateDir: state, Logger: logger})
	if err != nil {
		s.close()
		return nil, err
	}
	s.runner, err = deploystep.New(deploystep.Config{StateDir: filepath.Join(state, "services"), Service: svc, Slots: slots, Router: rt,
		Artifacts: arts, Logger: logger})
	if err != nil {
		s.close()
		return nil, err
	}
	s.switchStage = deploystep.StageSwitch
	s.blueGreen = true
	s.rels = rels
	return s, nil
}

// step is one deploy or rollback as the loads saw it.
type step struct {
	// took is the step's wall time; switched how long its switch phase
	// lasted; returned when Run returned.
	took, switched time.Duration
	returned       time.Time
}

// runStep deploys release (rollback: release is "") and moves the timeline
// from the serving version to want at the confirmed switch, marking the
// phases.
func (s *service) runStep(ctx context.Context, release, want string, tl *timeline, mark func(string)) (step, error) {
	if s.agent != nil {
		return s.agent.runStep(ctx, release, want, tl, mark)
	}
	cmd := s.rels.rollback()
	if release != "" {
		cmd = s.rels.deploy(release)
	}
	var st step
	start := time.Now()
	var switchAt, confirmed time.Time
	mark(PhasePrepare)
	res := s.runner.Run(ctx, cmd, func(stage string) {
		switch {
		case stage == s.switchStage && switchAt.IsZero():
			switchAt = time.Now()
			tl.set("")
			mark(PhaseSwitch)
		case s.blueGreen && !switchAt.IsZero() && confirmed.IsZero() && !strings.HasPrefix(stage, "undo_"):
			// The stage after switch began: the switch is confirmed.
			confirmed = time.Now()
			tl.set(want)
			mark(PhaseSettle)
		}
	})
	st.returned = time.Now()
	st.took = st.returned.Sub(start)
	if res.Outcome != deploystep.OutcomeSucceeded {
		return st, fmt.Errorf("%s %s: %s at %s: %s", cmd.Kind, cmd.ID, res.Outcome, res.FailedStage, res.Error)
	}
	if switchAt.IsZero() {
		return st, fmt.Errorf("%s %s: no %s stage reported", cmd.Kind, cmd.ID, s.switchStage)
	}
	if confirmed.IsZero() {
		confirmed = st.returned
		tl.set(want)
		mark(PhaseSettle)
	}
	st.switched = confirmed.Sub(switchAt)
	return st, nil
}

func runMode(ctx context.Context, o Options, mode, tmp string, rels *releases, logf func(string, ...any)) (Result, error) {
	res := Result{Mode: mode, Rate: o.Rate, CheckRate: o.CheckRate}
	dir := filepath.Join(tmp, mode)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "bluegreen-" + mode, Output: o.Log, Level: hclog.Info})
	var (
		svc *service
		err error
	)
	if agentMode(mode) {
		svc, err = startAgentService(ctx, o, mode, dir, rels, logf)
	} else {
		svc, err = startService(o, mode, dir, rels, logger)
	}
	if err != nil {
		return res, err
	}
	defer svc.close()
	fail := func(err error) (Result, error) {
		return res, fmt.Errorf("%w\n%s", err, svc.diag())
	}

	tl := &timeline{}
	noMark := func(string) {}
	if _, err := svc.runStep(ctx, "v1", "v1", tl, noMark); err != nil {
		return fail(err)
	}
	logf("%s: v1 deployed; %s", mode, svc.url("/version"))
	tl.set("v1")

	duration := time.Duration(float64(o.Requests) / o.Rate * float64(time.Second))
	mkLoad := func(rate float64, conc int, newConns bool) (*loadgen.Generator, error) {
		// Stop ends the loads at duration, or after the last step's
		// settle if the steps overran; the bound is a safety net.
		return loadgen.New(loadgen.Options{URL: svc.url("/version"), Rate: rate, Concurrency: conc,
			Duration: duration + 10*time.Minute, Timeout: o.Timeout, ExpectBody: tl.want, DisableKeepAlives: newConns, Phase: PhaseSteady})
	}
	main, err := mkLoad(o.Rate, o.Concurrency, false)
	if err != nil {
		return res, err
	}
	check, err := mkLoad(o.CheckRate, max(o.Concurrency/4, 32), true)
	if err != nil {
		return res, err
	}
	mark := func(phase string) {
		main.Mark(phase)
		check.Mark(phase)
	}
	type out struct {
		res loadgen.Result
		err error
	}
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	mainDone, checkDone := make(chan out, 1), make(chan out, 1)
	res.LoadAvgStart = loadAvg()
	started := time.Now()
	go func() { r, err := main.Run(loadCtx); mainDone <- out{r, err} }()
	go func() { r, err := check.Run(loadCtx); checkDone <- out{r, err} }()
	var mainOut, checkOut *out
	finish := func() {
		main.Stop()
		check.Stop()
		if mainOut == nil {
			m := <-mainDone
			mainOut = &m
		}
		if checkOut == nil {
			c := <-checkDone
			checkOut = &c
		}
	}
	defer finish()
	// Steps evenly spread: one begins every interval, the first after one
	// interval of steady load.
	interval := duration / time.Duration(o.Switches+1)
	hold := func(until time.Time) error {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		case m := <-mainDone:
			mainOut = &m
			return fmt.Errorf("main load ended early: %v", m.err)
		case c := <-checkDone:
			checkOut = &c
			return fmt.Errorf("check load ended early: %v", c.err)
		}
	}
	logf("%s: load %.0f rps keep-alive + %.0f rps new connections for %v, %d switches", mode, o.Rate, o.CheckRate, duration, o.Switches)
	var deploys, rollbacks, switches []time.Duration
	var runErr error
	serving := "v1"
	next := "v2"
	for i := 0; i < o.Switches; i++ {
		if runErr = hold(started.Add(time.Duration(i+1) * interval)); runErr != nil {
			break
		}
		deploy := i%2 == 0
		release, want, kind := "", "v1", "rollback"
		if deploy {
			release, want, kind = next, next, "deploy"
		}
		st, err := svc.runStep(ctx, release, want, tl, mark)
		if err != nil {
			runErr = fmt.Errorf("step %d: %w", i+1, err)
			break
		}
		res.Switches++
		switches = append(switches, st.switched)
		if deploy {
			deploys = append(deploys, st.took)
			if next == "v2" {
				next = "v3"
			} else {
				next = "v2"
			}
		} else {
			rollbacks = append(rollbacks, st.took)
		}
		logf("%s: step %d/%d %s %s -> %s in %v (switch %v)", mode, i+1, o.Switches, kind, serving, want,
			st.took.Round(time.Millisecond), st.switched.Round(time.Millisecond))
		serving = want
		if runErr = hold(st.returned.Add(time.Second)); runErr != nil {
			break
		}
		mark(PhaseSteady)
	}
	if runErr == nil {
		runErr = hold(started.Add(duration))
	}
	finish()
	res.Duration = time.Since(started)
	res.LoadAvgEnd = loadAvg()
	res.Deploy, res.Rollback, res.Switch = loadgen.Latencies(deploys), loadgen.Latencies(rollbacks), loadgen.Latencies(switches)
	res.Main = summarize(mainOut.res, tl)
	res.Check = summarize(checkOut.res, tl)
	logf("%s: %d requests, %d failed; achieved %.0f + %.0f rps; load average %s -> %s", mode, res.Requests(), res.Failed(),
		res.Main.Achieved, res.Check.Achieved, res.LoadAvgStart, res.LoadAvgEnd)
	if runErr != nil {
		return fail(runErr)
	}
	for _, lo := range []*out{mainOut, checkOut} {
		if lo.err != nil {
			return res, fmt.Errorf("load generator: %w", lo.err)
		}
	}
	if serving != "v1" {
		if _, err := svc.runStep(ctx, "", "v1", tl, noMark); err != nil {
			return fail(err)
		}
	}
	if err := measureReverts(ctx, o, mode, svc, &res, logf); err != nil {
		return fail(fmt.Errorf("revert: %w", err))
	}
	return res, nil
}

// measureReverts times o.RevertRuns reverts: each a deploy of v2, then a
// rollback (to v1), then probes until v1 answers o.RevertConsecutive times
// in a row.
func measureReverts(ctx context.Context, o Options, mode string, svc *service, res *Result, logf func(string, ...any)) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	defer client.CloseIdleConnections()
	url := svc.url("/version")
	tl := &timeline{}
	noMark := func(string) {}
	var reverts, steps []time.Duration
	defer func() {
		res.Revert, res.RevertStep, res.RevertRuns = loadgen.Latencies(reverts), loadgen.Latencies(steps), len(reverts)
	}()
	for i := 0; i < o.RevertRuns; i++ {
		if _, err := svc.runStep(ctx, "v2", "v2", tl, noMark); err != nil {
			return err
		}
		st, err := svc.runStep(ctx, "", "v1", tl, noMark)
		if err != nil {
			return err
		}
		steps = append(steps, st.took)
		var firstOld time.Time
		run := 0
		deadline := st.returned.Add(30 * time.Second)
		for run < o.RevertConsecutive {
			if time.Now().After(deadline) {
				return fmt.Errorf("run %d: v1 did not answer %d times in a row within 30s", i+1, o.RevertConsecutive)
			}
			body, err := get(ctx, client, url)
			switch {
			case err != nil:
				res.ProbeErrors++
				run = 0
			case body == "v1\n":
				if run == 0 {
					firstOld = time.Now()
				}
				run++
			default:
				run = 0
			}
		}
		reverts = append(reverts, firstOld.Sub(st.returned))
		logf("%s: revert %d/%d: rollback step took %v, all traffic on v1 %v after its return", mode, i+1, o.RevertRuns,
			st.took.Round(time.Millisecond), firstOld.Sub(st.returned).Round(time.Microsecond))
	}
	return nil
}

// proxy is a running nginx or HAProxy in front of the two slot ports.
type proxy struct {
	url  func(path string) string
	stop func() error
	diag func() string
	// rc is the service's router block for it.
	rc agentconfig.Router
}

// launchProxy starts the proxy of mode (nginx or haproxy; its name without
// an agent- prefix) in dir for service name.
func launchProxy(mode, dir, name string, ports router.Ports) (proxy, error) {
	kind := strings.TrimPrefix(mode, agentPrefix)
	bin, err := routertest.FindBinary(kind)
	if err != nil {
		return proxy{}, err
	}
	switch kind {
	case Nginx:
		n, err := routertest.LaunchNginx(bin, filepath.Join(dir, "nginx"), router.UpstreamName(name), ports)
		if err != nil {
			return proxy{}, err
		}
		return proxy{url: n.URL, stop: n.Stop, diag: func() string { return lastLines(n.ErrorLog(), 20) },
			rc: agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: n.UpstreamFile, Reload: n.ReloadCommand(), ProbeURL: n.URL("/")}}, nil
	case HAProxy:
		// Health checks every 100ms, as a production backend has them.
		h, err := routertest.LaunchHAProxy(bin, filepath.Join(dir, "haproxy"), name, ports, routertest.HAProxyOptions{HealthCheck: true})
		if err != nil {
			return proxy{}, err
		}
		return proxy{url: h.URL, stop: h.Stop, diag: func() string { return lastLines(h.Log(), 20) },
			rc: agentconfig.Router{Kind: agentconfig.RouterHAProxy, AdminSocket: h.Socket, Backend: h.Backend, ProbeURL: h.URL("/")}}, nil
	}
	return proxy{}, fmt.Errorf("no proxy for mode %q", mode)
}
