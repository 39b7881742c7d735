// Package fanout benchmarks how fast a revoke reaches a fleet of agents.
//
// Run starts the real controller binary as a separate process (embedded
// etcd in a temporary data directory, free loopback ports) and, in the
// calling process, N simulated agents. Each agent has its own
// grpc.ClientConn over real loopback TCP and a real AgentService.Connect
// stream: it says Hello, waits for Welcome, sends heartbeats at the interval
// the Welcome names and acknowledges every ApprovalUpdate with an
// ApprovalAck, as the real agent does.
//
// Each round authorizes automation (and waits until every agent holds the
// active approval), then revokes it and records, per agent, the time from
// the return of the Revoke RPC until the agent received the inactive update
// and had sent its ack, and the same from the Revoke call (the controller
// pushes the update before it answers, so most acks precede the return).
// Times are taken in the benchmark process, on one monotonic clock; the
// controller and the agents share the machine's CPUs, so the figures include
// the simulated agents' own work. The CPU time each side spent per revoke is
// reported too.
//
// The controller's resident set is read from /proc/<pid>/status before any
// agent connects and after all have; the difference divided by N is the
// memory an agent stream costs the controller (etcd records included, since
// etcd is embedded).
package fanout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Targets the fan-out is held to (at N=5,000).
const (
	TargetP99        = 300 * time.Millisecond
	TargetKBPerAgent = 40.0
)

// Options configure one fan-out run.
type Options struct {
	// N is the number of simulated agents (default 1000).
	N int
	// Rounds of authorize+revoke (default 20).
	Rounds int
	// ControllerBin is the controller binary (default bin/golive-controller).
	ControllerBin string
	// ControllerArgs are appended to the binary's "serve" flags.
	ControllerArgs []string
	// ControllerEnv is added to the controller's environment (e.g.
	// GOGC=50, to see what the GC's headroom costs per agent).
	ControllerEnv []string
	// ConnectConcurrency bounds agents connecting at once (default 64).
	ConnectConcurrency int
	// SourceAddrs is how many loopback source addresses (127.0.0.2, ...)
	// the agents' connections are spread over (default 1 per 2,000 agents).
	SourceAddrs int
	// PhaseTimeout bounds the wait for every agent to see one update and
	// for the controller to start (default 60s).
	PhaseTimeout time.Duration
	// TLS runs the controller with mutual TLS (--tls-*): every simulated
	// agent dials with its own certificate (CN = its host id) from a CA
	// made for the run, and the operator calls use an approver's.
	TLS bool
	// Label names the server in the table ("golive", "baseline").
	Label string
	// MovingFigures makes every heartbeat carry new health and traffic
	// figures, as a real agent's do (the etcd-budget benchmark).
	MovingFigures bool
	// Log, when set, receives progress lines.
	Log io.Writer
	// ControllerLog, when set, receives the controller's output; it is
	// always kept in controller.log in the run's temporary directory too,
	// whose last lines are quoted when the controller fails.
	ControllerLog io.Writer
}

func (o *Options) defaults() error {
	if o.N == 0 {
		o.N = 1000
	}
	if o.Rounds == 0 {
		o.Rounds = 20
	}
	if o.ControllerBin == "" {
		o.ControllerBin = filepath.Join("bin", "golive-controller")
	}
	if o.ConnectConcurrency == 0 {
		o.ConnectConcurrency = 64
	}
	if o.SourceAddrs == 0 {
		o.SourceAddrs = (o.N + 1999) / 2000
	}
	if o.PhaseTimeout == 0 {
		o.PhaseTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.N < 1:
		return fmt.Errorf("fanout: N %d: need at least one agent", o.N)
	case o.Rounds < 1:
		return fmt.Errorf("fanout: rounds %d: need at least one", o.Rounds)
	case o.ConnectConcurrency < 1:
		return fmt.Errorf("fanout: connect concurrency %d: need at least 1", o.ConnectConcurrency)
	case o.SourceAddrs < 1 || o.SourceAddrs > 250:
		return fmt.Errorf("fanout: source addresses %d: want 1..250", o.SourceAddrs)
	}
	return nil
}

// Stats summarise a set of latencies.
type Stats struct {
	P50, P99, Max time.Duration
	Samples       int
}

// Result is what one run measured.
type Result struct {
	// Label is Options.Label.
	Label     string
	N, Rounds int
	// TLS is Options.TLS.
	TLS bool
	// Acked is the fewest agents that acknowledged a revoke in any round
	// (N when every agent acked every revoke).
	Acked int
	// RoundsDone counts completed rounds (Rounds unless Err is set).
	RoundsDone int
	// PerAgent: Revoke RPC return -> agent received the update and sent its ack.
	PerAgent Stats
	// LastAgent: the same for the last agent of each round.
	LastAgent Stats
	// FromCall and LastFromCall are PerAgent and LastAgent measured from
	// the Revoke call instead of its return. The controller pushes the
	// update before it answers, so most acks precede the return and the
	// from-call figures are the ones the targets are judged on.
	FromCall, LastFromCall Stats
	// FirstFromCall is the first agent's ack of each round, from the
	// Revoke call: the etcd write and watch, before the fan-out proper.
	FirstFromCall Stats
	// BeforeReturn counts acks sent before the Revoke RPC had returned
	// (counted as 0 in PerAgent).
	BeforeReturn int
	// RevokeRPC is the Revoke round trip itself.
	RevokeRPC Stats
	// ConnectTime is how long connecting all agents took.
	ConnectTime time.Duration
	// Controller resident set (bytes) before agents and with all connected.
	RSSBefore, RSSAfter int64
	// RSSEnd is the controller's resident set after the last round.
	RSSEnd int64
	// CPU time per revoke (from the call until every agent acked), of the
	// controller and of this process (the simulated agents), averaged over
	// rounds; the controller's has 10 ms resolution per round.
	ControllerCPU, AgentsCPU time.Duration
	// Wall is the mean time from the Revoke call until every agent acked.
	Wall time.Duration
	// StreamErrors counts agent streams that ended during the run.
	StreamErrors int
	// Err is why the run stopped early, if it did.
	Err error
}

// KBPerAgent is the controller's resident set growth per connected agent.
func (r Result) KBPerAgent() float64 {
	if r.N == 0 || r.RSSAfter == 0 {
		return 0
	}
	return float64(r.RSSAfter-r.RSSBefore) / 1024 / float64(r.N)
}

// LatencyMet reports whether every agent acked every revoke and the
// per-agent p99 is within TargetP99, measured from the Revoke call (which
// bounds the figure from its return).
func (r Result) LatencyMet() bool {
	return r.Err == nil && r.RoundsDone == r.Rounds && r.Acked == r.N && r.FromCall.P99 <= TargetP99
}

// CPUPerAgent is the controller's CPU per agent per revoke.
func (r Result) CPUPerAgent() time.Duration {
	if r.N == 0 {
		return 0
	}
	return r.ControllerCPU / time.Duration(r.N)
}

// MemoryMet reports whether the per-agent memory is within TargetKBPerAgent.
func (r Result) MemoryMet() bool { return r.RSSAfter > 0 && r.KBPerAgent() <= TargetKBPerAgent }

// Run runs the benchmark. The returned error is also in Result.Err when
// some figures were measured before it happened.
func Run(ctx context.Context, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, err
	}
	res := Result{Label: opts.Label, N: opts.N, Rounds: opts.Rounds, TLS: opts.TLS}
	if err := benchkit.RaiseNoFile(uint64(opts.N) + 256); err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "golive-fanout-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	spec := benchkit.ControllerSpec{Bin: opts.ControllerBin, Dir: dir,
		Args: opts.ControllerArgs, Env: opts.ControllerEnv, Log: opts.ControllerLog}
	var agentCerts []tls.Certificate
	var ca *benchkit.PKI
	if opts.TLS {
		if ca, err = benchkit.NewPKI(filepath.Join(dir, "pki")); err != nil {
			return res, err
		}
		if agentCerts, err = ca.IssueAgents(hostIDs(opts.N)); err != nil {
			return res, err
		}
		spec.Args = append(ca.ServerArgs(), spec.Args...)
		spec.Creds = ca.Operator()
	}
	ctrl, err := benchkit.StartController(spec)
	if err != nil {
		return res, err
	}
	defer ctrl.Stop(15 * time.Second)
	// The controller exiting early ends the run.
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	stopWatch := context.AfterFunc(ctrl.Context(), func() { cancelCause(ctrl.Err()) })
	defer stopWatch()

	fail := func(err error) (Result, error) {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && !errors.Is(cause, context.Canceled) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		if tail := ctrl.LogTail(15); tail != "" {
			err = fmt.Errorf("%w\ncontroller log (last lines):\n%s", err, tail)
		}
		res.Err = err
		return res, err
	}

	if err := ctrl.WaitReady(ctx, opts.PhaseTimeout); err != nil {
		return fail(err)
	}
	if res.RSSBefore, err = ctrl.RSS(); err != nil {
		return fail(err)
	}
	fmt.Fprintf(opts.Log, "fanout N=%d TLS=%v: controller pid %d ready on %s, RSS %.1f MB\n", opts.N, opts.TLS, ctrl.PID(), ctrl.GRPCAddr, mb(res.RSSBefore))

	fleet := newFleet(opts, ctrl.GRPCAddr)
	if opts.TLS {
		fleet.creds = func(i int) credentials.TransportCredentials { return credentials.NewTLS(ca.Config(agentCerts[i])) }
	}
	defer fleet.stop()
	start := time.Now()
	if err := fleet.connect(ctx); err != nil {
		return fail(err)
	}
	res.ConnectTime = time.Since(start)
	if res.RSSAfter, err = ctrl.RSS(); err != nil {
		return fail(err)
	}
	fmt.Fprintf(opts.Log, "fanout N=%d: %d agents connected in %s, controller RSS %.1f MB\n",
		opts.N, opts.N, res.ConnectTime.Round(time.Millisecond), mb(res.RSSAfter))

	op, err := ctrl.Dial()
	if err != nil {
		return fail(err)
	}
	defer op.Close()
	control := golivev1.NewControlServiceClient(op)
	octx := metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")

	var perAgent, fromCall, last, lastCall, firstCall, rpc []time.Duration
	var ctrlCPU, selfCPUSum, wall time.Duration
	summarizeAll := func() {
		res.PerAgent, res.LastAgent, res.RevokeRPC = summarize(perAgent), summarize(last), summarize(rpc)
		res.FromCall, res.LastFromCall, res.FirstFromCall = summarize(fromCall), summarize(lastCall), summarize(firstCall)
		res.StreamErrors = fleet.streamErrors()
		if res.RoundsDone > 0 {
			d := time.Duration(res.RoundsDone)
			res.ControllerCPU, res.AgentsCPU, res.Wall = ctrlCPU/d, selfCPUSum/d, wall/d
		}
		res.RSSEnd, _ = ctrl.RSS()
	}
	res.Acked = opts.N
	for r := range opts.Rounds {
		// Authorize, and wait until every agent holds the active approval.
		ph := fleet.begin(true)
		cctx, ccancel := context.WithTimeout(octx, opts.PhaseTimeout)
		_, err := control.Authorize(cctx, &golivev1.AuthorizeRequest{
			Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: fmt.Sprintf("fan-out bench round %d", r+1),
		})
		ccancel()
		if err != nil {
			return fail(fmt.Errorf("round %d: authorize: %w", r+1, err))
		}
		if n := ph.wait(ctx, opts.PhaseTimeout); n < opts.N {
			return fail(fmt.Errorf("round %d: only %d of %d agents received the active approval within %s (%d streams ended)",
				r+1, n, opts.N, opts.PhaseTimeout, fleet.streamErrors()))
		}

		// Revoke, and time every agent's receipt and ack.
		ph = fleet.begin(false)
		cctx, ccancel = context.WithTimeout(octx, opts.PhaseTimeout)
		cpu0, _ := ctrl.CPU()
		self0 := benchkit.SelfCPU()
		called := fleet.now()
		_, err = control.Revoke(cctx, &golivev1.RevokeRequest{Reason: fmt.Sprintf("fan-out bench round %d", r+1)})
		returned := fleet.now()
		ccancel()
		if err != nil {
			return fail(fmt.Errorf("round %d: revoke: %w", r+1, err))
		}
		rpc = append(rpc, time.Duration(returned-called))
		n := ph.wait(ctx, opts.PhaseTimeout)
		wall += time.Duration(fleet.now() - called)
		cpu1, _ := ctrl.CPU()
		ctrlCPU += cpu1 - cpu0
		selfCPUSum += benchkit.SelfCPU() - self0
		res.Acked = min(res.Acked, n)
		var roundMax, roundMaxCall time.Duration
		roundMinCall := time.Duration(1<<63 - 1)
		for i := range ph.ack {
			at := ph.ack[i].Load()
			if at == 0 {
				continue
			}
			d, dc := time.Duration(at-returned), time.Duration(at-called)
			if d < 0 {
				d = 0
				res.BeforeReturn++
			}
			perAgent = append(perAgent, d)
			fromCall = append(fromCall, dc)
			roundMax, roundMaxCall, roundMinCall = max(roundMax, d), max(roundMaxCall, dc), min(roundMinCall, dc)
		}
		last, lastCall = append(last, roundMax), append(lastCall, roundMaxCall)
		if n > 0 {
			firstCall = append(firstCall, roundMinCall)
		}
		res.RoundsDone++
		fmt.Fprintf(opts.Log, "fanout N=%d: round %d/%d: %d acked; from the Revoke call: RPC returned %s, first ack %s, last ack %s\n",
			opts.N, r+1, opts.Rounds, n, rnd(time.Duration(returned-called)), rnd(roundMinCall), rnd(roundMaxCall))
		if n < opts.N {
			summarizeAll()
			return fail(fmt.Errorf("round %d: only %d of %d agents acked the revoke within %s (%d streams ended)",
				r+1, n, opts.N, opts.PhaseTimeout, fleet.streamErrors()))
		}
	}
	summarizeAll()
	return res, nil
}

func rnd(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// summarize returns nearest-rank percentiles.
func summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Stats{P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1], Samples: len(s)}
}

// hostIDs are the simulated agents' host ids, bench-00000 on.
func hostIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = hostID(i)
	}
	return out
}

func hostID(i int) string { return fmt.Sprintf("bench-%05d", i) }

// phase tracks one approval change: which agents have received it and
// sent their ack, at what time (fleet clock, 0 = not yet).
type phase struct {
	active bool
	ack    []atomic.Int64
	count  atomic.Int64
	n      int64
	done   chan struct{}
}

// observe records that agent i acked an update with the given active flag.
func (p *phase) observe(i int, active bool, at int64) {
	if active != p.active || !p.ack[i].CompareAndSwap(0, at) {
		return
	}
	if p.count.Add(1) == p.n {
		close(p.done)
	}
}

// wait returns how many agents acked, once all have or timeout passed.
func (p *phase) wait(ctx context.Context, timeout time.Duration) int {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	case <-ctx.Done():
	}
	return int(p.count.Load())
}

// dialers spread connections over loopback source addresses so that the
// ephemeral port range of one address is never the limit.
func dialers(n int) []func(context.Context, string) (net.Conn, error) {
	out := make([]func(context.Context, string) (net.Conn, error), n)
	for i := range out {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}}
		out[i] = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return out
}

// once-guarded helper for the first stream error.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
