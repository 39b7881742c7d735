// Package bluegreen benchmarks blue-green switches behind a real load
// balancer: how many requests fail, and what happens to latency, while a
// host's traffic moves between two warm slots of a service 20 times under a
// steady open-loop load, through nginx and through HAProxy; and how long an
// instant revert (the switch back to the old slot) takes to reach all new
// traffic.
//
// Run builds cmd/sampleapp once and runs it as two real processes, the blue
// and green slots, on their own loopback ports, behind nginx or HAProxy
// started by internal/routertest (LaunchNginx, LaunchHAProxy). The switches
// are driven through internal/router directly (router level; not yet through
// the agent's deploy step), in the order the deploy step does them:
//
//	deploy:      drain the idle slot, stop it, start it on the next version,
//	             health-check it on its own port, Switch to it (100%)
//	switch back: Switch to the old slot, still running (the rollback)
//	deploy, switch back, ...                     (Options.Switches in all)
//
// Two loads run at once for the whole run, both GET /version (the body is
// the version): the main load (Options.Rate, keep-alive connections) and a
// check load on a new connection per request (Options.CheckRate). Each
// request must get the version the timeline expects at the moment it was
// sent: the active slot's before a switch begins, the new slot's once Switch
// returned (confirmed), either while Switch runs. Anything else is
// wrong_body and counts as failed, as do connection errors, timeouts, 5xx,
// other statuses and requests the generator could not send in time.
// Through nginx a kept-alive client connection an old worker accepted before
// a reload may still be answered by the old upstream (see package router):
// the main load's wrong_body count shows whether that happened; the check
// load is the unambiguous wrong-version test.
//
// Revert: after the load, Options.RevertRuns times: deploy to the idle slot,
// then Switch back; from Switch's return, sequential probes on new
// connections through the proxy until Options.RevertConsecutive answers in
// a row come from the old slot; the revert time is from the return to the
// end of the first of those answers.
package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
)

// Router kinds Run knows.
const (
	Nginx   = "nginx"
	HAProxy = "haproxy"
)

// Phase names of the loads.
const (
	// PhaseSteady: no deploy step in progress.
	PhaseSteady = "steady"
	// PhasePrepare: the idle slot is drained, stopped, started on the new
	// version and health-checked; traffic still goes to the active slot.
	PhasePrepare = "prepare"
	// PhaseSwitch: from the Switch call to its return.
	PhaseSwitch = "switch"
	// PhaseSettle: the second after Switch returned.
	PhaseSettle = "settle"
)

// Phases lists the phases in table order.
var Phases = []string{PhaseSteady, PhasePrepare, PhaseSwitch, PhaseSettle}

// Options configure a run. Zero values take the defaults named.
type Options struct {
	// Routers to measure, in order (default nginx then haproxy).
	Routers []string
	// Rate is the main load in requests per second (default 1000);
	// Requests the main load's size (default 100,000), which sets the
	// run's length (Requests/Rate).
	Rate     float64
	Requests int
	// CheckRate is the check load on new connections (default Rate/10).
	CheckRate float64
	// Switches is how many switches happen during the load (default 20),
	// alternately a deploy and a switch back, evenly spread.
	Switches int
	// Concurrency caps the main load's requests in flight (default 512);
	// Timeout bounds each request (default 5s: the machine is shared, and a
	// stalled client must not pass for a failed switch).
	Concurrency int
	Timeout     time.Duration
	// RevertRuns is how many reverts are timed per router (default 20);
	// RevertConsecutive how many answers in a row from the old slot end
	// one (default 20).
	RevertRuns        int
	RevertConsecutive int
	// DrainTimeout bounds the drain of the idle slot before it stops
	// (default 10s).
	DrainTimeout time.Duration
	// Log, when set, receives progress lines and the router's log.
	Log io.Writer
}

func (o *Options) defaults() error {
	if len(o.Routers) == 0 {
		o.Routers = []string{Nginx, HAProxy}
	}
	if o.Rate == 0 {
		o.Rate = 1000
	}
	if o.Requests == 0 {
		o.Requests = 100_000
	}
	if o.CheckRate == 0 {
		o.CheckRate = o.Rate / 10
	}
	if o.Switches == 0 {
		o.Switches = 20
	}
	if o.Concurrency == 0 {
		o.Concurrency = 512
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.RevertRuns == 0 {
		o.RevertRuns = 20
	}
	if o.RevertConsecutive == 0 {
		o.RevertConsecutive = 20
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, r := range o.Routers {
		if r != Nginx && r != HAProxy {
			return fmt.Errorf("bluegreen: router %q: want %s or %s", r, Nginx, HAProxy)
		}
	}
	switch {
	case o.Rate < 0 || o.CheckRate < 0:
		return errors.New("bluegreen: rates must be positive")
	case o.Requests < 0 || o.Switches < 0 || o.Concurrency < 0 || o.RevertRuns < 0 || o.RevertConsecutive < 0:
		return errors.New("bluegreen: counts must not be negative")
	case o.Timeout < 0 || o.DrainTimeout < 0:
		return errors.New("bluegreen: durations must not be negative")
	}
	return nil
}

// Load is what one of the two loads saw.
type Load struct {
	// Total describes every request; Phases the requests due in each
	// phase (all stretches of that name together).
	Total  loadgen.Summary
	Phases map[string]loadgen.Summary
	// Seconds is the time each phase lasted, all stretches together.
	Seconds map[string]float64
	// Achieved is the rate of answered requests (any status) over the run.
	Achieved float64
	// Errors are the distinct errors of failed requests (up to five).
	Errors []string
}

// Result is one router's figures.
type Result struct {
	Router string
	// Rate and CheckRate are the offered loads.
	Rate, CheckRate float64
	// Main is the keep-alive load, Check the new-connection load.
	Main, Check Load
	// Switches is how many switches were confirmed under load; SwitchCall
	// summarises how long each Switch call took, Prepare how long each
	// deploy's preparation (drain, stop, start, health) took.
	Switches            int
	SwitchCall, Prepare loadgen.Stats
	// Revert summarises the revert times (from the switch back's return
	// until traffic reaches the old slot), RevertCall the switch back
	// calls themselves; RevertRuns how many reverts were timed.
	Revert, RevertCall loadgen.Stats
	RevertRuns         int
	// LoadAvg is /proc/loadavg's 1-minute figure at the start and the end
	// of the load.
	LoadAvgStart, LoadAvgEnd string
	// Duration is the load's wall time.
	Duration time.Duration
}

// Failed is the failed requests of both loads.
func (r Result) Failed() int { return r.Main.Total.Failed + r.Check.Total.Failed }

// Requests is the requests of both loads.
func (r Result) Requests() int { return r.Main.Total.Requests + r.Check.Total.Requests }

// Run measures each router in turn. A router that could not be measured
// is an error, returned with the results of the others.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "bluegreen: "+format+"\n", args...) }
	tmp, err := os.MkdirTemp("", "golive-bluegreen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	logf("building sampleapp")
	root, err := benchkit.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	app := filepath.Join(tmp, "sampleapp")
	if err := benchkit.BuildBinary(ctx, root, app, "./cmd/sampleapp", []string{"CGO_ENABLED=0"}, "-trimpath"); err != nil {
		return nil, err
	}
	var (
		results []Result
		errs    []error
	)
	for _, kind := range o.Routers {
		dir := filepath.Join(tmp, kind)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return results, err
		}
		res, err := runRouter(ctx, o, kind, app, dir, logf)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kind, err))
		}
		if res.Main.Total.Requests > 0 {
			results = append(results, res)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return results, errors.Join(errs...)
}

// rig is one router in front of the two slots.
type rig struct {
	r     router.Router
	url   func(path string) string
	slots map[router.Slot]*slot
	stop  func() error
	diag  func() string
}

func startRig(o Options, kind, app, dir string, logf func(string, ...any)) (*rig, error) {
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, err
	}
	rg := &rig{slots: map[router.Slot]*slot{
		router.Blue:  {name: router.Blue, port: ports[0], bin: app, dir: dir},
		router.Green: {name: router.Green, port: ports[1], bin: app, dir: dir},
	}}
	rports := router.Ports{Blue: ports[0], Green: ports[1]}
	if err := rg.slots[router.Blue].start("v1"); err != nil {
		return nil, err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "bluegreen", Output: o.Log, Level: hclog.Info})
	bin, err := routertest.FindBinary(kind)
	if err != nil {
		rg.stopSlots()
		return nil, err
	}
	switch kind {
	case Nginx:
		name := router.UpstreamName("sampleapp")
		n, err := routertest.LaunchNginx(bin, filepath.Join(dir, "nginx"), name, rports)
		if err != nil {
			rg.stopSlots()
			return nil, err
		}
		rg.url, rg.stop, rg.diag = n.URL, n.Stop, n.ErrorLog
		rg.r, err = router.NewNginx(router.NginxConfig{Upstream: name, File: n.UpstreamFile, Reload: n.ReloadCommand(),
			ProbeURL: n.URL("/"), Ports: rports, Logger: logger})
		if err != nil {
			rg.close()
			return nil, err
		}
	case HAProxy:
		h, err := routertest.LaunchHAProxy(bin, filepath.Join(dir, "haproxy"), "sampleapp", rports, routertest.HAProxyOptions{HealthCheck: true})
		if err != nil {
			rg.stopSlots()
			return nil, err
		}
		rg.url, rg.stop, rg.diag = h.URL, h.Stop, h.Log
		rg.r, err = router.NewHAProxy(router.HAProxyConfig{Socket: h.Socket, Backend: h.Backend, ProbeURL: h.URL("/"), Logger: logger})
		if err != nil {
			rg.close()
			return nil, err
		}
	}
	logf("%s on %s, blue :%d green :%d", kind, rg.url("/"), ports[0], ports[1])
	return rg, nil
}

func (rg *rig) stopSlots() {
	for _, s := range rg.slots {
		s.stop()
	}
}

func (rg *rig) close() {
	if rg.stop != nil {
		rg.stop()
	}
	rg.stopSlots()
}

// deployer does the deploy step's work at router level, tracking which slot
// serves which version.
type deployer struct {
	o      Options
	rg     *rig
	active router.Slot
	next   int // number of the next version
	logf   func(string, ...any)
}

// prepare drains the idle slot, stops it and starts it on the next
// version, health-checked; it returns that version.
func (d *deployer) prepare(ctx context.Context) (string, error) {
	idle := d.active.Other()
	s := d.rg.slots[idle]
	if s.running() {
		if err := d.rg.r.Drain(ctx, idle, d.o.DrainTimeout); err != nil {
			return "", fmt.Errorf("drain %s: %w", idle, err)
		}
		s.stop()
	}
	v := fmt.Sprintf("v%d", d.next)
	d.next++
	if err := s.start(v); err != nil {
		return "", err
	}
	return v, nil
}

// switchTo moves all traffic to slot to and returns how long Switch took.
func (d *deployer) switchTo(ctx context.Context, to router.Slot) (time.Duration, error) {
	start := time.Now()
	err := d.rg.r.Switch(ctx, to, 100)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("switch to %s: %w", to, err)
	}
	d.active = to
	return took, nil
}

// timeline says which version a request sent at a given time must get.
type timeline struct {
	mu      sync.Mutex
	from    []time.Time
	expects []string
}

// set makes requests sent from now on expect want ("" any version).
func (tl *timeline) set(want string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.from = append(tl.from, time.Now())
	tl.expects = append(tl.expects, want)
}

// want is the ExpectBody of the loads: the version followed by a newline
// (so "v1" does not match "v10").
func (tl *timeline) want(sent time.Time) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.from) - 1; i >= 0; i-- {
		if !sent.Before(tl.from[i]) {
			if tl.expects[i] == "" {
				return ""
			}
			return tl.expects[i] + "\n"
		}
	}
	return ""
}

func runRouter(ctx context.Context, o Options, kind, app, dir string, logf func(string, ...any)) (Result, error) {
	res := Result{Router: kind, Rate: o.Rate, CheckRate: o.CheckRate}
	rg, err := startRig(o, kind, app, dir, logf)
	if err != nil {
		return res, err
	}
	defer rg.close()
	d := &deployer{o: o, rg: rg, active: router.Blue, next: 2, logf: logf}
	version := map[router.Slot]string{router.Blue: "v1"}

	tl := &timeline{}
	tl.set("v1")
	duration := time.Duration(float64(o.Requests) / o.Rate * float64(time.Second))
	mkLoad := func(rate float64, conc int, newConns bool) (*loadgen.Generator, error) {
		return loadgen.New(loadgen.Options{URL: rg.url("/version"), Rate: rate, Concurrency: conc,
			Duration: duration, Timeout: o.Timeout, ExpectBody: tl.want, DisableKeepAlives: newConns, Phase: PhaseSteady})
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
	// Switches evenly spread: one every interval, the first after one
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
	logf("%s: load %.0f rps keep-alive + %.0f rps new connections for %v, %d switches", kind, o.Rate, o.CheckRate, duration, o.Switches)
	var calls, preps []time.Duration
	var runErr error
	for i := 0; i < o.Switches; i++ {
		if runErr = hold(started.Add(time.Duration(i+1) * interval)); runErr != nil {
			break
		}
		to := d.active.Other()
		deploy := i%2 == 0
		if deploy {
			mark(PhasePrepare)
			pstart := time.Now()
			v, err := d.prepare(ctx)
			preps = append(preps, time.Since(pstart))
			if err != nil {
				runErr = fmt.Errorf("deploy %d: %w", i/2+1, err)
				break
			}
			version[to] = v
		}
		tl.set("") // while Switch runs, either slot may answer
		mark(PhaseSwitch)
		took, err := d.switchTo(ctx, to)
		calls = append(calls, took)
		if err != nil {
			runErr = fmt.Errorf("switch %d: %w", i+1, err)
			break
		}
		tl.set(version[to])
		mark(PhaseSettle)
		res.Switches++
		what := "switch back"
		if deploy {
			what = "deploy"
		}
		logf("%s: switch %d/%d (%s) to %s %s in %v", kind, i+1, o.Switches, what, to, version[to], took.Round(time.Millisecond))
		if runErr = hold(time.Now().Add(time.Second)); runErr != nil {
			break
		}
		mark(PhaseSteady)
	}
	if runErr == nil {
		// The loads end on their own at duration.
		select {
		case m := <-mainDone:
			mainOut = &m
		case <-ctx.Done():
			runErr = context.Cause(ctx)
		}
	}
	finish()
	res.Duration = time.Since(started)
	res.LoadAvgEnd = loadAvg()
	res.SwitchCall, res.Prepare = loadgen.Latencies(calls), loadgen.Latencies(preps)
	res.Main = summarize(mainOut.res)
	res.Check = summarize(checkOut.res)
	logf("%s: %d requests, %d failed; achieved %.0f + %.0f rps; load average %s -> %s", kind, res.Requests(), res.Failed(),
		res.Main.Achieved, res.Check.Achieved, res.LoadAvgStart, res.LoadAvgEnd)
	if runErr != nil {
		return res, fmt.Errorf("%w\n%s", runErr, lastLines(rg.diag(), 20))
	}
	for _, lo := range []*out{mainOut, checkOut} {
		if lo.err != nil {
			return res, fmt.Errorf("load generator: %w", lo.err)
		}
	}

	reverts, revertCalls, err := measureReverts(ctx, o, d, version, logf)
	res.Revert, res.RevertCall, res.RevertRuns = loadgen.Latencies(reverts), loadgen.Latencies(revertCalls), len(reverts)
	if err != nil {
		return res, fmt.Errorf("revert: %w", err)
	}
	return res, nil
}

// measureReverts times o.RevertRuns reverts: each a deploy to the idle slot,
// then the switch back, then probes until the old slot answers
// o.RevertConsecutive times in a row.
func measureReverts(ctx context.Context, o Options, d *deployer, version map[router.Slot]string, logf func(string, ...any)) (reverts, calls []time.Duration, err error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	defer client.CloseIdleConnections()
	url := d.rg.url("/version")
	for i := 0; i < o.RevertRuns; i++ {
		old := d.active
		to := old.Other()
		v, err := d.prepare(ctx)
		if err != nil {
			return reverts, calls, err
		}
		version[to] = v
		if _, err := d.switchTo(ctx, to); err != nil {
			return reverts, calls, err
		}
		want := version[old] + "\n"
		took, err := d.switchTo(ctx, old)
		returned := time.Now()
		calls = append(calls, took)
		if err != nil {
			return reverts, calls, err
		}
		var firstOld time.Time
		run := 0
		deadline := returned.Add(30 * time.Second)
		for run < o.RevertConsecutive {
			if time.Now().After(deadline) {
				return reverts, calls, fmt.Errorf("run %d: old slot %s did not answer %d times in a row within 30s", i+1, old, o.RevertConsecutive)
			}
			body, err := get(ctx, client, url)
			if err != nil {
				return reverts, calls, fmt.Errorf("run %d: probe: %w", i+1, err)
			}
			if body == want {
				if run == 0 {
					firstOld = time.Now()
				}
				run++
			} else {
				run = 0
			}
		}
		reverts = append(reverts, firstOld.Sub(returned))
		logf("revert %d/%d: switch back to %s took %v, traffic there %v after its return", i+1, o.RevertRuns, old,
			took.Round(time.Millisecond), firstOld.Sub(returned).Round(time.Microsecond))
	}
	return reverts, calls, nil
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

func summarize(r loadgen.Result) Load {
	l := Load{Total: r.Summary(), Phases: map[string]loadgen.Summary{}, Seconds: map[string]float64{}}
	for _, p := range Phases {
		l.Phases[p] = r.Phase(p)
	}
	for _, p := range r.Phases {
		l.Seconds[p.Name] += p.End.Sub(p.Start).Seconds()
	}
	answered := 0
	for _, rec := range r.Records {
		if rec.Status != 0 {
			answered++
		}
	}
	if span := r.Ended.Sub(r.Started); span > 0 {
		l.Achieved = float64(answered) / span.Seconds()
	}
	seen := map[string]bool{}
	for _, rec := range r.Failures() {
		e := string(rec.Class)
		if rec.Err != "" {
			e += ": " + errorKind(rec.Err)
		}
		if rec.Class == loadgen.ClassWrongBody {
			e += fmt.Sprintf(" (phase %s)", rec.Phase)
		}
		if !seen[e] && len(l.Errors) < 5 {
			seen[e] = true
			l.Errors = append(l.Errors, e)
		}
	}
	return l
}

// errorKind strips the request-specific prefix of a client error.
func errorKind(s string) string {
	if i := strings.Index(s, "\": "); i >= 0 && strings.HasPrefix(s, "Get \"") {
		return s[i+3:]
	}
	return s
}

// loadAvg is the 1-minute load average ("?" if unreadable).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
