// Package bluegreen benchmarks blue-green deploys behind a real load
// balancer: how many requests fail, and what happens to latency, while the
// real deploy step (deploystep.Runner, as the agent runs it) switches a
// host's traffic between the two slots of a service 20 times under a steady
// open-loop load, through nginx and through HAProxy; the same load through
// restart mode for comparison; and how long an instant revert (a rollback
// on a blue-green service: the switch back to the warm old slot) takes to
// reach all new traffic.
//
// Run builds cmd/sampleapp as releases v1, v2 and v3 (tarballs served over
// loopback HTTP) and, per mode, builds the service as the agent does
// (internal/agent): agentconfig.DefaultService with an exec command, one
// execmgr.Manager per slot, router.New from the service's blue_green block,
// deploystep.New; nginx or HAProxy run on free ports (routertest.LaunchNginx,
// LaunchHAProxy). Restart mode is the same service on one port, no proxy.
//
//	deploy v1 ──▶ loads start ──▶ deploy v2 ─▶ rollback ─▶ deploy v3 ─▶ rollback ─▶ deploy v2 ... (Options.Switches)
//	               main: Rate rps, keep-alive      check: CheckRate rps, a new connection each
//
// Each request (GET /version, whose body is the version) must get the
// version the timeline expects when it was sent: the serving release's
// before a step's switch stage begins (blue-green: "switch"; restart:
// "swap", which precedes the restart), the new one once the switch is
// confirmed (blue-green: the stage after "switch" began; restart: the step
// returned SUCCEEDED), either in between. Anything else is wrong_body and
// counts as failed, as do connection errors, timeouts, 5xx, other statuses
// and requests the generator could not send in time. Through nginx a
// kept-alive client connection an old worker accepted before a reload may
// still be answered by the old upstream (see package router): the main
// load's wrong_body count shows whether that happened; the check load is
// the unambiguous wrong-version test.
//
// Revert: after the load, Options.RevertRuns times: deploy, then rollback;
// from the rollback step's return, sequential probes on new connections
// through the proxy until Options.RevertConsecutive answers in a row come
// from the old release; the revert time runs from the return to the end of
// the first of those answers.
package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
)

// Modes Run knows.
const (
	Nginx   = "nginx"
	HAProxy = "haproxy"
	Restart = "restart"
)

// Phase names of the loads.
const (
	// PhaseSteady: no step in progress.
	PhaseSteady = "steady"
	// PhasePrepare: a step runs but has not reached its switch (fetch,
	// unpack, start and health-check the idle slot).
	PhasePrepare = "prepare"
	// PhaseSwitch: from the switch stage's start until the switch is
	// confirmed (see the package doc).
	PhaseSwitch = "switch"
	// PhaseSettle: from then until a second after the step returned.
	PhaseSettle = "settle"
)

// Phases lists the phases in table order.
var Phases = []string{PhaseSteady, PhasePrepare, PhaseSwitch, PhaseSettle}

// Options configure a run. Zero values take the defaults named.
type Options struct {
	// Modes to measure, in order (default nginx, haproxy, restart, then
	// agent-nginx and agent-haproxy when ControllerBin and AgentBin are
	// set). nginx, haproxy and restart drive deploystep.Runner in this
	// process; agent-nginx and agent-haproxy drive the built controller and
	// agent (Deploy and Rollback calls to the controller).
	Modes []string
	// ControllerBin and AgentBin are the binaries of the agent-* modes.
	ControllerBin, AgentBin string
	// Rate is the main load in requests per second (default 1000);
	// Requests the main load's size (default 100,000), which sets the
	// run's length (Requests/Rate).
	Rate     float64
	Requests int
	// CheckRate is the check load on new connections (default Rate/10).
	CheckRate float64
	// Switches is how many switches happen during the load (default 20),
	// alternately a deploy and a rollback, evenly spread.
	Switches int
	// Concurrency caps the main load's requests in flight (default 512);
	// Timeout bounds each request (default 5s: the machine is shared, and a
	// stalled client must not pass for a failed switch).
	Concurrency int
	Timeout     time.Duration
	// RevertRuns is how many reverts are timed per mode (default 20);
	// RevertConsecutive how many answers in a row from the old release
	// end one (default 20).
	RevertRuns        int
	RevertConsecutive int
	// HealthInterval and HealthSuccesses override the service's health
	// check (defaults 250ms and 2).
	HealthInterval  time.Duration
	HealthSuccesses int
	// Log, when set, receives progress lines and the deploy step's log.
	Log io.Writer
}

func (o *Options) defaults() error {
	if len(o.Modes) == 0 {
		o.Modes = []string{Nginx, HAProxy, Restart}
		if o.ControllerBin != "" && o.AgentBin != "" {
			o.Modes = append(o.Modes, AgentNginx, AgentHAProxy)
		}
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
	if o.HealthInterval == 0 {
		o.HealthInterval = 250 * time.Millisecond
	}
	if o.HealthSuccesses == 0 {
		o.HealthSuccesses = 2
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, m := range o.Modes {
		switch m {
		case Nginx, HAProxy, Restart, AgentNginx, AgentHAProxy:
		default:
			return fmt.Errorf("bluegreen: mode %q: want %s, %s, %s, %s or %s", m, Nginx, HAProxy, Restart, AgentNginx, AgentHAProxy)
		}
	}
	switch {
	case o.Rate < 0 || o.CheckRate < 0:
		return errors.New("bluegreen: rates must be positive")
	case o.Requests < 0 || o.Switches < 0 || o.Concurrency < 0 || o.RevertRuns < 0 || o.RevertConsecutive < 0 || o.HealthSuccesses < 0:
		return errors.New("bluegreen: counts must not be negative")
	case o.Timeout < 0 || o.HealthInterval < 0:
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
	// WrongMaxLag is the longest time from a confirmed switch to the
	// sending of a request that still got the old version (0: none did).
	WrongMaxLag time.Duration
	// Errors are the distinct errors of failed requests (up to five).
	Errors []string
}

// Result is one mode's figures.
type Result struct {
	// Mode is nginx, haproxy (blue-green behind it) or restart.
	Mode string
	// Rate and CheckRate are the offered loads.
	Rate, CheckRate float64
	// Main is the keep-alive load, Check the new-connection load.
	Main, Check Load
	// Switches is how many steps succeeded under load; Deploy and Rollback
	// summarise the deploy and rollback steps' wall times, Switch the
	// switch phases (see PhaseSwitch).
	Switches                 int
	Deploy, Rollback, Switch loadgen.Stats
	// Revert summarises the revert times (from the rollback step's return
	// until traffic reaches the old release), RevertStep the rollback
	// steps themselves; RevertRuns how many reverts were timed and
	// ProbeErrors how many revert probes got no 200.
	Revert, RevertStep      loadgen.Stats
	RevertRuns, ProbeErrors int
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's 1-minute figure at
	// the start and the end of the load.
	LoadAvgStart, LoadAvgEnd string
	// Duration is the load's wall time.
	Duration time.Duration
}

// Failed is the failed requests of both loads, of every class (the strict
// count).
func (r Result) Failed() int { return r.Main.Total.Failed + r.Check.Total.Failed }

// StaleKeepAlive is, through nginx, the main (keep-alive) load's requests
// answered by the old version after a confirmed switch: the limitation
// package router documents (a connection an old worker accepted before the
// reload keeps its upstream), which the issue's count leaves to the check
// load's new connections. 0 for the other modes, where they count.
func (r Result) StaleKeepAlive() int {
	if strings.TrimPrefix(r.Mode, agentPrefix) != Nginx {
		return 0
	}
	return r.Main.Total.ByClass[loadgen.ClassWrongBody]
}

// FailedIssue is the issue's count: connection errors, timeouts, 5xx,
// other statuses, dropped requests, and wrong versions except
// StaleKeepAlive.
func (r Result) FailedIssue() int { return r.Failed() - r.StaleKeepAlive() }

// Requests is the requests of both loads.
func (r Result) Requests() int { return r.Main.Total.Requests + r.Check.Total.Requests }

// Run measures each mode in turn. A mode that could not be measured is an
// error, returned with the results of the others.
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

	logf("building sampleapp v1, v2 and v3")
	tarballs, err := benchkit.SampleReleases(ctx, tmp, "", "v1", "v2", "v3")
	if err != nil {
		return nil, err
	}
	arts := serveReleases(tarballs)
	defer arts.Close()
	var (
		results []Result
		errs    []error
	)
	for _, mode := range o.Modes {
		res, err := runMode(ctx, o, mode, tmp, arts, logf)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mode, err))
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

// since is how long before t the expectation in effect at t was set.
func (tl *timeline) since(t time.Time) time.Duration {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.from) - 1; i >= 0; i-- {
		if !t.Before(tl.from[i]) {
			return t.Sub(tl.from[i])
		}
	}
	return 0
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

func summarize(r loadgen.Result, tl *timeline) Load {
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
		if rec.Class == loadgen.ClassWrongBody {
			l.WrongMaxLag = max(l.WrongMaxLag, tl.since(rec.Sent))
		}
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
