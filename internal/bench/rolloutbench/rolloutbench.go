// Package rolloutbench benchmarks a fleet rollout end to end on one machine:
// how long a canary-then-25%-waves rollout of a tiny release takes on N real
// hosts, what it costs the controller, and, when one host fails its health
// check, how long the fleet takes to serve the old release again.
//
// Run starts the real controller binary (embedded etcd in a temporary data
// directory, free loopback ports) and N sample hosts, each a real
// golive-agent process with its own HCL config, state directory and service
// port running cmd/sampleapp (so 2N+1 processes). The releases are
// cmd/sampleapp built with -X main.version=v1, v2 and v3, packed as
// tarballs and served by an HTTP server in the benchmark process.
//
//	start controller, N agents --> authorize --> deploy v1 (setup: one wave, bake 0)
//	    --> deploy v2: canary 1, then waves of 25%, bake 0      measured: wall, controller CPU
//	    --> deploy v3: the same, one host fails health           measured: fleet rollback
//
// The failing host is the last host id in sort order, so it is in the last
// wave and the gate fails when every host has been touched: the fleet
// rollback then covers all N hosts, the worst case. Release v3 is as healthy
// as v2; only on the failing host it fails its health check, because that
// host's exec.command is a host-local launcher (a shell script that execs
// sampleapp) which adds --fail-health when the release's VERSION is v3. The
// agent, its deploy step, its health check and its local swap back, the
// controller's gate and fleet rollback are all the real ones.
//
// Times are taken in the benchmark process. The rollout is followed with
// WatchRollout (GetRollout every 20 ms if the watch ends early); the
// rollback is timed from the first record in rolling_back, after which every
// touched host's /version is polled every 20 ms until it answers the old
// release. Controller CPU is utime+stime from /proc/<pid>/stat, before the
// Deploy call and once the rollout ended; the agents, the sample services
// and the benchmark share the machine's CPUs with it.
//
// Everything Run started is stopped before it returns: agents get SIGTERM
// (a clean exit stops their service), stragglers SIGKILL, then any process
// left whose working directory is in the run's directory is killed.
package rolloutbench

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
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Goals the benchmark is held to (at 100 hosts).
const (
	TargetRollout  = 10 * time.Second
	TargetRollback = 5 * time.Second
)

// Releases: v1 is the setup, v2 the measured rollout, v3 the one that fails
// on one host.
const (
	relSetup    = "v1"
	relRollout  = "v2"
	relFailing  = "v3"
	pollEvery   = 20 * time.Millisecond
	serviceName = "app"
)

// Options configure one run. Zero values take the defaults named.
type Options struct {
	// Hosts is the number of sample hosts (default 100).
	Hosts int
	// ControllerBin and AgentBin are the binaries (defaults
	// bin/golive-controller and bin/golive-agent).
	ControllerBin, AgentBin string
	// HeartbeatInterval, when set, is passed to the controller
	// (--heartbeat-interval); zero keeps the controller's default.
	HeartbeatInterval time.Duration
	// ControllerEnv is added to the controller's environment.
	ControllerEnv []string
	// Timeout bounds each wait: the controller and agents coming up, and
	// each rollout (default 2m).
	Timeout time.Duration
	// WorkDir, when set, holds the run's files and is kept (controller.log,
	// hosts/<id>/agent.log); otherwise a temporary directory is removed.
	WorkDir string
	// Log, when set, receives progress lines.
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Hosts == 0 {
		o.Hosts = 100
	}
	if o.ControllerBin == "" {
		o.ControllerBin = filepath.Join("bin", "golive-controller")
	}
	if o.AgentBin == "" {
		o.AgentBin = filepath.Join("bin", "golive-agent")
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.Hosts < 2 || o.Hosts > 999:
		return fmt.Errorf("rolloutbench: hosts %d: want 2..999 (one of them fails health)", o.Hosts)
	case o.Timeout < 0 || o.HeartbeatInterval < 0:
		return errors.New("rolloutbench: durations must not be negative")
	}
	return nil
}

// WaveTime is where one wave's time went, as the benchmark saw the record
// change: Deploy from the wave's first record in "deploying" until its
// first in "baking" (every host's step done), Gate from then until it
// passed (the gate waits for a health sample taken after the bake window).
// A phase the watch did not see separately is zero.
type WaveTime struct {
	Name         string
	Hosts        int
	Start        time.Duration // from the Deploy call
	Deploy, Gate time.Duration
}

// Result is one run's figures.
type Result struct {
	Hosts, Waves int
	// Heartbeat is the heartbeat interval passed to the controller (zero:
	// its default).
	Heartbeat time.Duration
	// Setup is the time to start everything and deploy v1.
	Setup time.Duration
	// Rollout is the v2 rollout's wall time, from the Deploy call until the
	// benchmark saw it terminal; RolloutState its end state.
	Rollout      time.Duration
	RolloutState string
	// ControllerCPU is the controller's CPU time during the v2 rollout.
	ControllerCPU time.Duration
	RolloutWaves  []WaveTime

	// The v3 rollout, which fails on FailingHost.
	FailingHost string
	// GateFailed is when the record first showed rolling_back, from the
	// Deploy call.
	GateFailed time.Duration
	// FailState and FailReason are the rollout's end state and reason.
	FailState, FailReason string
	// Touched is how many hosts the rollout had touched at the gate failure.
	Touched int
	// ServeOld is the time from the gate failure until every touched host
	// answered the old release (v2) at /version; SlowestHost the last one.
	ServeOld    time.Duration
	SlowestHost string
	// Terminal is the time from the gate failure until the rollout was
	// terminal (every rollback step reported).
	Terminal time.Duration
	// RollbackCPU is the controller's CPU time during the v3 rollout.
	RollbackCPU time.Duration
	FailWaves   []WaveTime

	// Leftovers is how many processes had to be killed by their working
	// directory after the agents had stopped (0 when every agent stopped
	// its service).
	Leftovers int
}

// RolloutMet reports whether the v2 rollout succeeded within TargetRollout.
func (r Result) RolloutMet() bool {
	return r.RolloutState == "succeeded" && r.Rollout > 0 && r.Rollout <= TargetRollout
}

// RollbackMet reports whether the v3 rollout rolled back and every touched
// host served the old release within TargetRollback of the gate failure.
func (r Result) RollbackMet() bool {
	return r.FailState == "rolled_back" && r.ServeOld > 0 && r.ServeOld <= TargetRollback
}

// CPUPerHost is the controller's CPU time per host in the v2 rollout.
func (r Result) CPUPerHost() time.Duration {
	if r.Hosts == 0 {
		return 0
	}
	return r.ControllerCPU / time.Duration(r.Hosts)
}

// sampleHost is one agent and its service.
type sampleHost struct {
	id   string
	port int
	dir  string
	p    *benchkit.Proc
}

// Run starts the fleet, deploys v1, and measures the v2 and v3 rollouts.
// On an error it returns the figures taken so far.
func Run(ctx context.Context, o Options) (res Result, err error) {
	if err := o.defaults(); err != nil {
		return res, err
	}
	start := time.Now()
	res.Hosts, res.Heartbeat = o.Hosts, o.HeartbeatInterval
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "rolloutbench: %s "+format+"\n", append([]any{time.Since(start).Round(time.Millisecond)}, args...)...)
	}
	ctlBin, err1 := filepath.Abs(o.ControllerBin)
	agentBin, err2 := filepath.Abs(o.AgentBin)
	if err := errors.Join(err1, err2); err != nil {
		return res, err
	}
	for _, b := range []string{ctlBin, agentBin} {
		if _, err := os.Stat(b); err != nil {
			return res, fmt.Errorf("%w (run `make build`, or pass its path)", err)
		}
	}

	dir := o.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "golive-rolloutbench-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return res, err
	}

	logf("building sampleapp %s, %s, %s", relSetup, relRollout, relFailing)
	tarballs, err := benchkit.SampleReleases(ctx, dir, "-s -w", relSetup, relRollout, relFailing)
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

	ports, err := benchkit.FreePorts(4 + o.Hosts)
	if err != nil {
		return res, err
	}
	ctlAddr := benchkit.LoopbackAddr(ports[0])
	var args []string
	if o.HeartbeatInterval > 0 {
		args = append(args, "--heartbeat-interval", o.HeartbeatInterval.String())
	}
	ctl, err := benchkit.StartController(benchkit.ControllerSpec{Bin: ctlBin, Dir: dir, Args: args, Env: o.ControllerEnv, Ports: ports[:4]})
	if err != nil {
		return res, err
	}
	var hosts []*sampleHost
	defer func() {
		var ps []*benchkit.Proc
		for _, h := range hosts {
			ps = append(ps, h.p)
		}
		ctlDied := ctl.Exited()
		logf("stopping %d agents", len(ps))
		benchkit.StopAll(ps, 20*time.Second)
		res.Leftovers = killUnder(dir)
		ctl.Stop(15 * time.Second)
		if n := killUnder(dir); n > 0 {
			res.Leftovers += n
		}
		if res.Leftovers > 0 {
			logf("killed %d processes left in %s", res.Leftovers, dir)
		}
		if err != nil && ctlDied {
			err = fmt.Errorf("%w; controller log:\n%s", err, ctl.LogTail(15))
		}
	}()
	if err := ctl.WaitReady(ctx, o.Timeout); err != nil {
		return res, err
	}

	launcher := filepath.Join(dir, "failing-host-launcher.sh")
	if err := os.WriteFile(launcher, fmt.Appendf(nil, failingLauncher, relFailing), 0o755); err != nil {
		return res, err
	}
	res.FailingHost = hostID(o.Hosts)
	logf("starting %d agents (failing host %s)", o.Hosts, res.FailingHost)
	for i := 1; i <= o.Hosts; i++ {
		h := &sampleHost{id: hostID(i), port: ports[3+i], dir: filepath.Join(dir, "hosts", hostID(i))}
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			return res, err
		}
		command := []string{"bin/sampleapp", "--port", "{port}"}
		if h.id == res.FailingHost {
			command = []string{launcher, "{port}"}
		}
		conf := filepath.Join(h.dir, "agent.hcl")
		if err := os.WriteFile(conf, []byte(agentConfig(h.id, filepath.Join(h.dir, "state"), h.port, command)), 0o644); err != nil {
			return res, err
		}
		// One at a time: starting is quick; the agents then connect at once.
		h.p, err = benchkit.Start(benchkit.ProcSpec{Name: h.id, Bin: agentBin, Dir: h.dir, LogPath: filepath.Join(h.dir, "agent.log"),
			Args: []string{"run", "--controller", ctlAddr, "--config", conf, "--metrics-addr", "", "--grpc-addr", ""}})
		if err != nil {
			return res, err
		}
		hosts = append(hosts, h)
	}

	conn, err := grpc.NewClient("passthrough:///"+ctlAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	api := golivev1.NewControlServiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")

	if err := waitFor(actx, o.Timeout, fmt.Sprintf("%d agents connected", o.Hosts), func() (bool, error) {
		st, err := api.Status(actx, &golivev1.StatusRequest{})
		return err == nil && int(st.AgentsConnected) == o.Hosts, nil
	}); err != nil {
		return res, err
	}
	if _, err := api.Authorize(actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		return res, fmt.Errorf("authorize: %w", err)
	}
	if err := waitFor(actx, o.Timeout, "every agent to hold the approval", func() (bool, error) {
		la, err := api.ListAgents(actx, &golivev1.ListAgentsRequest{})
		if err != nil || len(la.Agents) != o.Hosts {
			return false, nil
		}
		for _, a := range la.Agents {
			if a.FencingToken == 0 {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return res, err
	}

	deploy := func(v string, canary uint32, batch string) *golivev1.DeployRequest {
		sum := sha256.Sum256(tarballs[v])
		return &golivev1.DeployRequest{Service: serviceName, Release: v, ArtifactUrl: arts.URL + "/" + v + ".tar.gz",
			Sha256: hex.EncodeToString(sum[:]), Canary: canary, Batch: batch, MinHealthy: durationpb.New(0)}
	}
	rctx, cancel := context.WithTimeout(actx, o.Timeout)
	defer cancel()

	logf("deploying %s to all %d hosts (setup)", relSetup, o.Hosts)
	setup, _, err := runRollout(rctx, api, deploy(relSetup, 0, "100%"), nil)
	if err != nil {
		return res, fmt.Errorf("setup deploy of %s: %w", relSetup, err)
	}
	if setup.State != "succeeded" {
		return res, fmt.Errorf("setup deploy of %s: rollout %s: %s", relSetup, setup.State, setup.Reason)
	}
	if bad := serving(ctx, hosts, relSetup); len(bad) > 0 {
		return res, fmt.Errorf("after the setup deploy, hosts not serving %s: %s", relSetup, strings.Join(bad, ", "))
	}
	res.Setup = time.Since(start)

	// The measured rollout.
	logf("deploying %s: canary 1, batches of 25%%, bake 0", relRollout)
	rctx2, cancel2 := context.WithTimeout(actx, o.Timeout)
	defer cancel2()
	cpu0, err := ctl.CPU()
	if err != nil {
		return res, err
	}
	tl := newTimeline()
	called := time.Now()
	final, endAt, err := runRollout(rctx2, api, deploy(relRollout, 1, "25%"), tl.observe)
	if err != nil {
		return res, fmt.Errorf("rollout of %s: %w", relRollout, err)
	}
	cpu1, cerr := ctl.CPU()
	res.Rollout, res.RolloutState, res.ControllerCPU = endAt.Sub(called), final.State, cpu1-cpu0
	res.Waves = len(final.Waves)
	res.RolloutWaves = tl.waves(final, called)
	logf("%s: %s after %v; controller CPU %v", relRollout, final.State, res.Rollout.Round(time.Millisecond), res.ControllerCPU)
	if cerr != nil {
		return res, cerr
	}
	if final.State != "succeeded" {
		return res, fmt.Errorf("rollout of %s: %s: %s", relRollout, final.State, final.Reason)
	}
	if bad := serving(ctx, hosts, relRollout); len(bad) > 0 {
		return res, fmt.Errorf("after the rollout, hosts not serving %s: %s", relRollout, strings.Join(bad, ", "))
	}

	// One host fails health in the last wave: the fleet rolls back.
	logf("deploying %s: canary 1, batches of 25%%, bake 0; %s fails health", relFailing, res.FailingHost)
	rb := newRollbackWatch(hosts, relRollout)
	defer rb.wait() // after cancel3: the pollers end with rctx3
	rctx3, cancel3 := context.WithTimeout(actx, o.Timeout)
	defer cancel3()
	if cpu0, err = ctl.CPU(); err != nil {
		return res, err
	}
	tl = newTimeline()
	called = time.Now()
	final, endAt, err = runRollout(rctx3, api, deploy(relFailing, 1, "25%"), func(r *golivev1.Rollout, at time.Time) {
		tl.observe(r, at)
		if r.State == "rolling_back" {
			rb.start(rctx3, r, at)
		}
	})
	if err != nil {
		return res, fmt.Errorf("rollout of %s: %w", relFailing, err)
	}
	cpu1, cerr = ctl.CPU()
	res.RollbackCPU = cpu1 - cpu0
	res.FailState, res.FailReason = final.State, final.Reason
	res.FailWaves = tl.waves(final, called)
	if !rb.started() {
		return res, fmt.Errorf("rollout of %s ended %s (%s) without rolling back", relFailing, final.State, final.Reason)
	}
	res.GateFailed = rb.gateAt.Sub(called)
	res.Terminal = endAt.Sub(rb.gateAt)
	res.Touched = len(rb.hosts)
	logf("%s: gate failed after %v, %d hosts touched; %s after %v more; waiting for every touched host to serve %s",
		relFailing, res.GateFailed.Round(time.Millisecond), res.Touched, final.State, res.Terminal.Round(time.Millisecond), relRollout)
	rb.wait()
	res.ServeOld, res.SlowestHost = rb.result()
	if cerr != nil {
		return res, cerr
	}
	if res.ServeOld == 0 {
		return res, fmt.Errorf("not every touched host served %s again within %s of the gate failure", relRollout, o.Timeout)
	}
	logf("every touched host served %s %v after the gate failure (last: %s)", relRollout, res.ServeOld.Round(time.Millisecond), res.SlowestHost)
	return res, nil
}

func hostID(i int) string { return fmt.Sprintf("web-%03d", i) }

// terminal reports whether a rollout state is final.
func terminal(state string) bool {
	switch state {
	case "succeeded", "failed", "rolled_back", "aborted":
		return true
	}
	return false
}

// runRollout calls Deploy and follows the rollout until it is terminal,
// calling observe (if set) with every record seen and when it was seen. It
// returns the terminal record and when it was seen.
func runRollout(ctx context.Context, api golivev1.ControlServiceClient, req *golivev1.DeployRequest,
	observe func(*golivev1.Rollout, time.Time)) (*golivev1.Rollout, time.Time, error) {
	resp, err := api.Deploy(ctx, req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("deploy: %w", err)
	}
	id := resp.Rollout.GetId()
	if id == "" {
		return nil, time.Time{}, errors.New("deploy: no rollout id in the answer")
	}
	seen := func(r *golivev1.Rollout) (bool, time.Time) {
		at := time.Now()
		if observe != nil {
			observe(r, at)
		}
		return terminal(r.State), at
	}
	// Watch; should the stream end early, poll instead.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if w, err := api.WatchRollout(wctx, &golivev1.WatchRolloutRequest{Id: id}); err == nil {
		for {
			m, err := w.Recv()
			if err != nil {
				break
			}
			if done, at := seen(m.Rollout); done {
				return m.Rollout, at, nil
			}
		}
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		r, err := api.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err == nil {
			if done, at := seen(r.Rollout); done {
				return r.Rollout, at, nil
			}
		} else if ctx.Err() != nil {
			return nil, time.Time{}, fmt.Errorf("rollout %s did not finish: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, fmt.Errorf("rollout %s did not finish: %w", id, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// waitFor polls cond every 100ms until it holds, returns an error, or
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// versionClient asks a service for its version on a new connection each
// time: a kept-alive connection to a stopped process must not answer.
var versionClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// version is what a service answers at /version ("" if it does not).
func version(ctx context.Context, port int) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/version", port), nil)
	if err != nil {
		return ""
	}
	resp, err := versionClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// serving lists the hosts not answering want at /version.
func serving(ctx context.Context, hosts []*sampleHost, want string) []string {
	var (
		mu  sync.Mutex
		bad []string
		wg  sync.WaitGroup
	)
	sem := make(chan struct{}, 32)
	for _, h := range hosts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if got := version(ctx, h.port); got != want {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s (%q)", h.id, got))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(bad)
	return bad
}

// rollbackWatch times the fleet rollback: from the first record in
// rolling_back, it polls every touched host's /version until it answers the
// old release.
type rollbackWatch struct {
	all    map[string]*sampleHost
	old    string
	gateAt time.Time
	hosts  []*sampleHost
	wg     sync.WaitGroup
	mu     sync.Mutex
	back   map[string]time.Time
}

func newRollbackWatch(hosts []*sampleHost, old string) *rollbackWatch {
	rb := &rollbackWatch{all: map[string]*sampleHost{}, old: old, back: map[string]time.Time{}}
	for _, h := range hosts {
		rb.all[h.id] = h
	}
	return rb
}

func (rb *rollbackWatch) started() bool { return !rb.gateAt.IsZero() }

// start begins polling once, on the first rolling_back record; the pollers
// end when each host answers the old release or ctx ends.
func (rb *rollbackWatch) start(ctx context.Context, r *golivev1.Rollout, at time.Time) {
	if rb.started() {
		return
	}
	rb.gateAt = at
	for _, hp := range r.Hosts {
		h := rb.all[hp.HostId]
		if h == nil || hp.State == "waiting" {
			continue
		}
		rb.hosts = append(rb.hosts, h)
		rb.wg.Go(func() {
			t := time.NewTicker(pollEvery)
			defer t.Stop()
			for {
				if version(ctx, h.port) == rb.old {
					rb.mu.Lock()
					rb.back[h.id] = time.Now()
					rb.mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
}

func (rb *rollbackWatch) wait() { rb.wg.Wait() }

// result is the time from the gate failure until the last touched host
// served the old release, and that host; zero if one never did.
func (rb *rollbackWatch) result() (time.Duration, string) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if len(rb.hosts) == 0 || len(rb.back) != len(rb.hosts) {
		return 0, ""
	}
	var last time.Time
	var slowest string
	for id, at := range rb.back {
		if at.After(last) {
			last, slowest = at, id
		}
	}
	return max(last.Sub(rb.gateAt), time.Nanosecond), slowest
}

// timeline records when each wave's state was first seen.
type timeline struct {
	first map[uint32]map[string]time.Time
}

func newTimeline() *timeline { return &timeline{first: map[uint32]map[string]time.Time{}} }

func (tl *timeline) observe(r *golivev1.Rollout, at time.Time) {
	for _, w := range r.Waves {
		m := tl.first[w.Index]
		if m == nil {
			m = map[string]time.Time{}
			tl.first[w.Index] = m
		}
		if _, ok := m[w.State]; !ok {
			m[w.State] = at
		}
	}
}

// waves is the per-wave breakdown of the final record's waves, times from
// called.
func (tl *timeline) waves(final *golivev1.Rollout, called time.Time) []WaveTime {
	var out []WaveTime
	for _, w := range final.Waves {
		m := tl.first[w.Index]
		wt := WaveTime{Name: w.Name, Hosts: len(w.Hosts)}
		dep, okD := m["deploying"]
		bake, okB := m["baking"]
		end, okE := m["passed"]
		if !okE {
			end, okE = m[final.State]
		}
		if okD {
			wt.Start = dep.Sub(called)
			if okB {
				wt.Deploy = bake.Sub(dep)
			} else if okE {
				wt.Deploy = end.Sub(dep)
			}
		}
		if okB && okE {
			wt.Gate = end.Sub(bake)
		}
		out = append(out, wt)
	}
	return out
}
