// Package reconnectbench measures how fast a fleet of mutual-TLS agents
// reconnects after the controller restarts.
//
// Run issues N agent certificates (CN = host id, OU=agent) and the
// controller's from a CA made for the run, starts the real controller
// binary with --tls-* (embedded etcd in a temporary data directory, free
// loopback ports) and, in the calling process, N simulated agents. Each
// runs the real agent's connect loop: its own grpc.ClientConn over real
// loopback TCP and TLS 1.3 with its own certificate, an
// AgentService.Connect stream, Hello with its host id, Welcome (the agent
// counts as connected then), the approval acked, heartbeats at the
// Welcome's interval, and on any end of the stream the agent's jittered
// exponential backoff before the next attempt.
//
// Once every agent is connected the controller is restarted: SIGTERM (a
// graceful stop, which closes every stream with Unavailable) or SIGKILL,
// waited for, then started again on the same ports and data directory.
// Measured from the moment the new listener accepts TCP connections (the
// first TCP connection to the new process, a probe's dialling every 2 ms or
// an agent's, whichever is first) until every
// agent has been welcomed again: the reconnect time, each agent's own
// reconnect time (p50/p99), every failed attempt by cause, split into those
// while the controller was down (expected: TCP refused) and those after its
// listener was up (the errors the goal is about), the new controller's
// peak CPU (cores, sampled every 250 ms from /proc) and its peak resident
// set (VmHWM).
package reconnectbench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
)

// Target is the reconnect goal at N=10,000: every agent welcomed again
// within it, with no failed attempt once the new listener accepts.
const Target = 20 * time.Second

// Options configure one run.
type Options struct {
	// N is the number of simulated agents (default 5000).
	N int
	// Kill restarts the controller with SIGKILL instead of SIGTERM.
	Kill bool
	// ControllerBin is the controller binary (default bin/golive-controller).
	ControllerBin string
	// ControllerArgs are appended to its serve flags (both starts), e.g.
	// --accept-rate 2000.
	ControllerArgs []string
	// ControllerEnv is added to the controller's environment.
	ControllerEnv []string
	// MaxBackoff caps the agents' reconnect delay (default 10s, the real
	// agent's default).
	MaxBackoff time.Duration
	// ConnectConcurrency bounds agents in their first connect at once
	// (default 64); reconnects are not bounded.
	ConnectConcurrency int
	// SourceAddrs is how many loopback source addresses the agents'
	// connections are spread over (default 1 per 2,000 agents).
	SourceAddrs int
	// WelcomeTimeout bounds one attempt's wait for Welcome (default 30s).
	WelcomeTimeout time.Duration
	// Timeout bounds each phase: the controller starting, all agents
	// connecting, all reconnecting (default 3 min).
	Timeout time.Duration
	// Log, when set, receives progress lines; ControllerLog the
	// controller's output (always kept in controller-1.log and
	// controller-2.log in the run's directory, quoted on failure).
	Log, ControllerLog io.Writer
}

func (o *Options) defaults() error {
	if o.N == 0 {
		o.N = 5000
	}
	if o.ControllerBin == "" {
		o.ControllerBin = filepath.Join("bin", "golive-controller")
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.ConnectConcurrency == 0 {
		o.ConnectConcurrency = 64
	}
	if o.SourceAddrs == 0 {
		o.SourceAddrs = (o.N + 1999) / 2000
	}
	if o.WelcomeTimeout == 0 {
		o.WelcomeTimeout = 30 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.N < 1:
		return fmt.Errorf("reconnect: N %d: need at least one agent", o.N)
	case o.MaxBackoff < 200*time.Millisecond:
		return fmt.Errorf("reconnect: max backoff %s: want at least 200ms", o.MaxBackoff)
	case o.ConnectConcurrency < 1:
		return fmt.Errorf("reconnect: connect concurrency %d: need at least 1", o.ConnectConcurrency)
	case o.SourceAddrs < 1 || o.SourceAddrs > 250:
		return fmt.Errorf("reconnect: source addresses %d: want 1..250", o.SourceAddrs)
	}
	return nil
}

// Result is what one run measured.
type Result struct {
	N int
	// Signal is how the controller was stopped: "SIGTERM" or "SIGKILL".
	Signal string
	// InitialConnect is how long the first connect of all agents took.
	InitialConnect time.Duration
	// RSSConnected is the first controller's resident set with all agents.
	RSSConnected int64
	// Stop is from the signal until the old controller had exited; Down
	// from the signal until the new listener accepted.
	Stop, Down time.Duration
	// ServingAfter is from the listener accepting until the controller's
	// health service said SERVING.
	ServingAfter time.Duration
	// Reconnected counts agents welcomed again (N unless the phase timed out).
	Reconnected int
	// Reconnect is from the new listener accepting until the last agent
	// was welcomed; PerAgent the same for each agent (p50/p99/max).
	Reconnect time.Duration
	PerAgent  Stats
	// AttemptsDown are failed attempts while the controller was down;
	// DownCauses them by cause.
	AttemptsDown int
	DownCauses   map[string]int
	// Attempts are attempts after the listener accepted (welcomed ones
	// included); Errors the failed ones, Causes them by cause, with one
	// message each in Examples.
	Attempts, Errors int
	Causes           map[string]int
	Examples         map[string]string
	// Dropped counts streams welcomed after the restart that ended again
	// before the end of the phase; DropExample is why the first ended.
	Dropped     int
	DropExample string
	// LoadAvg is the machine's 1-minute load average when the storm ended
	// (the figures are only as good as the CPUs the controller got).
	LoadAvg string
	// PeakCores is the new controller's highest CPU use over a span of
	// at least 250 ms during the storm (CPU time has 10 ms resolution); MeanCores its mean from its start until all
	// agents were welcomed (etcd start included). BenchCores is this
	// process's (the simulated agents') mean over the same span.
	PeakCores, MeanCores, BenchCores float64
	// PeakRSS is the new controller's highest resident set (VmHWM) by the
	// end of the storm; RSSEnd its resident set then.
	PeakRSS, RSSEnd int64
	// Err is why the run stopped early, if it did.
	Err error
}

// Met reports whether all agents came back within Target with no failed
// attempt or dropped stream after the listener accepted.
func (r Result) Met() bool {
	return r.Err == nil && r.Reconnected == r.N && r.Reconnect <= Target && r.Errors == 0 && r.Dropped == 0
}

// Stats summarise a set of durations (nearest rank).
type Stats struct {
	P50, P99, Max time.Duration
}

// Run runs the benchmark. The returned error is also in Result.Err when
// some figures were measured before it happened.
func Run(ctx context.Context, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, err
	}
	res := Result{N: opts.N, Signal: "SIGTERM"}
	sig := syscall.SIGTERM
	if opts.Kill {
		res.Signal, sig = "SIGKILL", syscall.SIGKILL
	}
	// One socket per agent, a quarter more for connections closing while
	// their agents redial, and the probes.
	if err := benchkit.RaiseNoFile(uint64(opts.N)*5/4 + 512); err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "golive-reconnect-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	logf := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "reconnect N=%d %s: "+format+"\n", append([]any{opts.N, res.Signal}, args...)...)
	}

	ca, err := benchkit.NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	certs, err := ca.IssueAgents(hostIDs(opts.N))
	if err != nil {
		return res, err
	}
	logf("issued %d agent certificates in %s", opts.N, time.Since(t0).Round(time.Millisecond))

	spec := benchkit.ControllerSpec{Bin: opts.ControllerBin, Dir: dir, Args: append(ca.ServerArgs(), opts.ControllerArgs...),
		Env: opts.ControllerEnv, Log: opts.ControllerLog, LogName: "controller-1.log", Creds: ca.Operator()}
	ctrl, err := benchkit.StartController(spec)
	if err != nil {
		return res, err
	}
	// cur is the controller now running; the deferred stop reaps it.
	cur := ctrl
	defer func() { cur.Stop(15 * time.Second) }()
	fail := func(err error) (Result, error) {
		if tail := cur.LogTail(15); tail != "" {
			err = fmt.Errorf("%w\ncontroller log (last lines):\n%s", err, tail)
		}
		res.Err = err
		return res, err
	}
	if err := ctrl.WaitReady(ctx, opts.Timeout); err != nil {
		return fail(err)
	}
	logf("controller pid %d ready on %s (mutual TLS)", ctrl.PID(), ctrl.GRPCAddr)

	fl := newFleet(opts, ctrl.GRPCAddr, certs, ca.Config)
	defer fl.stop()
	first := fl.begin()
	start := time.Now()
	fl.start()
	if n := first.wait(ctx, opts.Timeout, func(n int) { logf("%d agents welcomed", n) }); n < opts.N {
		return fail(fmt.Errorf("initial connect: only %d of %d agents welcomed within %s (%d failed attempts, first: %s)",
			n, opts.N, opts.Timeout, len(first.failures), firstFailure(first)))
	}
	res.InitialConnect = time.Since(start)
	res.RSSConnected, _ = ctrl.RSS()
	logf("%d agents connected in %s; controller RSS %.1f MB; restarting it with %s",
		opts.N, res.InitialConnect.Round(time.Millisecond), mb(res.RSSConnected), res.Signal)

	// The restart.
	storm := fl.begin()
	signalled := fl.now()
	if err := ctrl.Signal(sig); err != nil {
		return fail(fmt.Errorf("signal the controller: %w", err))
	}
	select {
	case <-ctrl.Context().Done():
	case <-time.After(opts.Timeout):
		return fail(fmt.Errorf("the controller did not exit within %s of %s", opts.Timeout, res.Signal))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	res.Stop = time.Duration(fl.now() - signalled)
	spec.Ports, spec.LogName = ctrl.Ports, "controller-2.log"
	ctrl2, err := benchkit.StartController(spec)
	if err != nil {
		return fail(fmt.Errorf("restart the controller: %w", err))
	}
	cur = ctrl2
	started := fl.now()
	fl.armDialWatch()
	samples := startSampler(ctrl2.PID(), 250*time.Millisecond)
	self0 := benchkit.SelfCPU()
	// The probe and the health check run beside the storm: under it, a
	// probe's SYN may wait in a full accept queue for long.
	probed := make(chan int64, 1)
	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go func() { probed <- waitListening(pctx, ctrl2, fl.now) }()
	type served struct {
		at  int64
		err error
	}
	serving := make(chan served, 1)
	go func() {
		err := ctrl2.WaitReady(ctx, opts.Timeout)
		serving <- served{fl.now(), err}
	}()

	n := storm.wait(ctx, opts.Timeout, func(n int) { logf("%d agents welcomed again", n) })
	end := fl.now()
	cpu1, _ := ctrl2.CPU()
	self1 := benchkit.SelfCPU()
	peak := samples.stop()
	stopProbe()
	// The listener accepted at the first TCP connection to the new
	// process, the probe's or an agent's.
	up := <-probed
	if d := fl.firstDial.Load(); d != 0 && (up == 0 || d < up) {
		up = d
	}
	if up == 0 {
		return fail(fmt.Errorf("the restarted controller accepted no connection within %s", opts.Timeout))
	}
	res.Down = time.Duration(up - signalled)
	logf("new controller pid %d: listener accepting %s after the signal (old one exited after %s)",
		ctrl2.PID(), res.Down.Round(time.Millisecond), res.Stop.Round(time.Millisecond))
	res.Reconnected = n
	if n == opts.N {
		var last int64
		for i := range storm.welcomed {
			last = max(last, storm.welcomed[i].Load())
		}
		res.Reconnect = time.Duration(last - up)
		end = last
	}
	if span := time.Duration(end - started); span > 0 {
		res.MeanCores = float64(cpu1) / float64(span)
		res.BenchCores = float64(self1-self0) / float64(span)
	}
	res.PeakCores = peak
	res.LoadAvg = loadAvg()
	res.PeakRSS, _ = ctrl2.PeakRSS()
	res.RSSEnd, _ = ctrl2.RSS()
	res.PerAgent = perAgent(storm, up)
	tally(&res, storm, up)
	sv := <-serving
	if sv.err != nil {
		return fail(sv.err)
	}
	res.ServingAfter = time.Duration(sv.at - up)
	logf("%d of %d agents welcomed again %s after the listener accepted; %d attempts after it, %d failed; %d failed while down",
		n, opts.N, res.Reconnect.Round(time.Millisecond), res.Attempts, res.Errors, res.AttemptsDown)
	if n < opts.N {
		return fail(fmt.Errorf("only %d of %d agents reconnected within %s", n, opts.N, opts.Timeout))
	}
	return res, nil
}

// waitListening dials the controller every 2 ms until a TCP connection
// succeeds and returns that moment on the fleet clock (0 if the controller
// exited or ctx ended first).
func waitListening(ctx context.Context, c *benchkit.Controller, now func() int64) int64 {
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	for {
		conn, err := d.DialContext(ctx, "tcp", c.GRPCAddr)
		if err == nil {
			at := now()
			conn.Close()
			return at
		}
		if c.Exited() {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// perAgent is each agent's reconnect time, from the listener accepting.
func perAgent(e *epoch, up int64) Stats {
	var ds []time.Duration
	for i := range e.welcomed {
		if at := e.welcomed[i].Load(); at != 0 {
			ds = append(ds, time.Duration(max(at-up, 0)))
		}
	}
	if len(ds) == 0 {
		return Stats{}
	}
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Stats{P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1]}
}

// tally splits the epoch's failures at the moment the listener accepted:
// an attempt that began before it counts as while down, even when its
// failure (a refused dial, say) was seen just after.
func tally(r *Result, e *epoch, up int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r.DownCauses, r.Causes, r.Examples = map[string]int{}, map[string]int{}, map[string]string{}
	welcomed := 0
	for i := range e.welcomed {
		if e.welcomed[i].Load() != 0 {
			welcomed++
		}
	}
	for _, f := range e.failures {
		if f.at < up {
			r.AttemptsDown++
			r.DownCauses[f.class]++
			continue
		}
		r.Errors++
		r.Causes[f.class]++
		if _, ok := r.Examples[f.class]; !ok {
			r.Examples[f.class] = f.msg
		}
	}
	r.Attempts = r.Errors + welcomed
	r.Dropped, r.DropExample = e.dropped, e.dropExample
}

func firstFailure(e *epoch) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.failures) == 0 {
		return "none"
	}
	return e.failures[0].msg
}

// sampler reads a process's CPU time at an interval and keeps the highest
// rate seen.
type sampler struct {
	done chan struct{}
	peak chan float64
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{done: make(chan struct{}), peak: make(chan float64, 1)}
	// read is one sample: the CPU time and when it was read. A read during
	// which this process was descheduled (more than 5 ms between the clock
	// readings around it) is not trusted: the CPU time and the clock would
	// not match.
	read := func() (time.Duration, time.Time, bool) {
		t0 := time.Now()
		cpu, err := benchkit.ProcCPU(pid)
		t1 := time.Now()
		return cpu, t0.Add(t1.Sub(t0) / 2), err == nil && t1.Sub(t0) < 5*time.Millisecond
	}
	go func() {
		var peak float64
		defer func() { s.peak <- peak }()
		prev, prevAt, ok := read()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			cpu, at, good := read()
			if !good {
				ok = false
				continue
			}
			if !ok {
				prev, prevAt, ok = cpu, at, true // a new baseline
				continue
			}
			if at.Sub(prevAt) < every {
				continue // a tick that waited in the channel: too short a span
			}
			peak = max(peak, float64(cpu-prev)/float64(at.Sub(prevAt)))
			prev, prevAt = cpu, at
		}
	}()
	return s
}

// stop ends sampling and returns the peak, in cores.
func (s *sampler) stop() float64 {
	close(s.done)
	return <-s.peak
}

// loadAvg is the 1-minute load average from /proc/loadavg ("?" if unread).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// sortedCauses lists causes by count, most first.
func sortedCauses(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return keys
}
