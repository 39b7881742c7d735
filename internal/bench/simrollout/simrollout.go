// Package simrollout benchmarks the controller driving rollouts of 1,000
// hosts: the controller binary on its embedded etcd (a subprocess, so its
// CPU is its own: utime+stime from /proc/<pid>/stat), and 1,000 simulated
// agents in this process, each on its own real gRPC stream speaking the
// agent protocol, whose executor reports each stage after a fixed delay.
//
// It runs, in order: a preflight of every host; a deploy (canary, then 10%
// waves, a health gate between waves) that succeeds; a deploy whose third
// wave fails on some hosts, so the gate fails and the fleet is rolled back;
// and a deploy aborted while its second wave runs. For each it reports the
// wall time from the call to the terminal record, the controller's CPU per
// host, etcd's writes (key puts and deletes) per host, and the most key
// writes one etcd transaction made (events sharing a revision: a lower
// bound of that transaction's ops; etcd refuses a transaction above 128,
// the embedded etcd's default, and the rollout would fail).
//
// etcd's writes are read after each phase, by watching from the phase's
// first revision to its last, so that watch costs the measured controller
// nothing.
package simrollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const serviceName = "app"

// TargetCPUPerHost is issue 14's goal: controller CPU per host per rollout.
const TargetCPUPerHost = 5 * time.Millisecond

// TxnOpLimit is etcd's default --max-txn-ops, which the embedded etcd keeps.
const TxnOpLimit = 128

// Options configure a run.
type Options struct {
	ControllerBin string
	ControllerEnv []string
	// ControllerArgs follow the standard serve flags (e.g. --pprof-addr).
	ControllerArgs []string
	// Hosts is the fleet size (default 1000).
	Hosts int
	// StageDelay is how long each simulated stage takes (default 100ms;
	// six stages per step).
	StageDelay time.Duration
	// MinHealthy is each wave's gate (default 2s).
	MinHealthy time.Duration
	// Timeout bounds each phase (default 10 min).
	Timeout time.Duration
	Log     io.Writer
}

// Phase is one measured operation.
type Phase struct {
	Name string
	// Hosts the operation touched (commanded at least once).
	Hosts int
	// State is the rollout's terminal state ("ok" for a preflight).
	State, Reason string
	Waves         int
	Took          time.Duration
	CPU           time.Duration
	// Writes are etcd key puts and deletes; Txns write revisions;
	// MaxTxnWrites the most key writes in one revision.
	Writes, Txns, MaxTxnWrites int64
	// Load is /proc/loadavg's first figure at the phase's start and end.
	Load0, Load1 string
	// Steps and Between are, averaged over the waves but the last, the
	// time from a wave's start to its last step's result (the agents'
	// stages, the commands' trip), and from there to the next wave's
	// start (the gate's bake, the executor's passes); from the
	// controller's "wave started" log lines.
	Steps, Between time.Duration
}

// CPUPerHost is the controller's CPU divided by the hosts the phase touched.
func (p Phase) CPUPerHost() time.Duration {
	if p.Hosts == 0 {
		return 0
	}
	return p.CPU / time.Duration(p.Hosts)
}

// WritesPerHost is etcd's key writes per touched host.
func (p Phase) WritesPerHost() float64 {
	if p.Hosts == 0 {
		return 0
	}
	return float64(p.Writes) / float64(p.Hosts)
}

// Result is a run.
type Result struct {
	Hosts      int
	StageDelay time.Duration
	MinHealthy time.Duration
	Connect    time.Duration
	Phases     []Phase
	// Sessions is how many streams the fleet opened (Hosts if none broke).
	Sessions int64
}

func (o *Options) defaults() {
	if o.Hosts == 0 {
		o.Hosts = 1000
	}
	if o.StageDelay == 0 {
		o.StageDelay = 100 * time.Millisecond
	}
	if o.MinHealthy == 0 {
		o.MinHealthy = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

func loadavg() string {
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

// badRelease fails on the hosts of the third wave whose index is a
// multiple of 10 (ten hosts of a 1,000-host fleet).
const badRelease = "v3-bad"

// Run runs the benchmark.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	res := Result{Hosts: o.Hosts, StageDelay: o.StageDelay, MinHealthy: o.MinHealthy}
	logf := func(f string, a ...any) { fmt.Fprintf(o.Log, "rollout1000: "+f+"\n", a...) }
	if err := benchkit.RaiseNoFile(uint64(o.Hosts) + 512); err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "golive-simrollout-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ctl, err := benchkit.StartController(benchkit.ControllerSpec{Bin: o.ControllerBin, Dir: dir, Env: o.ControllerEnv, Args: o.ControllerArgs})
	if err != nil {
		return res, err
	}
	defer ctl.Stop(15 * time.Second)
	if err := ctl.WaitReady(ctx, time.Minute); err != nil {
		return res, fmt.Errorf("%w\n%s", err, ctl.LogTail(10))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + benchkit.LoopbackAddr(ctl.Ports[2])},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return res, err
	}
	defer cli.Close()

	// The fleet: 50 streams per connection (the controller allows 64).
	fctx, fcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { fcancel(); wg.Wait() }()
	agents := make([]*simAgent, o.Hosts)
	hostIdx := map[string]int{}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var sessions atomic.Int64
	// Waves: canary then 10% of the rest; the third wave (index 2) is the
	// second 10% batch. Which hosts it holds is the controller's choice,
	// so the failing set is decided when a command arrives: a host fails
	// the bad release if it is in wave 2 of the rollout (known from the
	// rollout record, read once the rollout starts).
	var failSet atomic.Pointer[map[string]bool]
	empty := map[string]bool{}
	failSet.Store(&empty)
	start := time.Now()
	for i := range agents {
		if i%50 == 0 {
			conn, err := grpc.NewClient("passthrough:///"+ctl.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return res, err
			}
			conns = append(conns, conn)
		}
		host := fmt.Sprintf("sim-%04d", i)
		hostIdx[host] = i
		a := newSimAgent(host, o.StageDelay, func(rel string) bool { return rel == badRelease && (*failSet.Load())[host] })
		agents[i] = a
		conn := conns[len(conns)-1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.loop(fctx, conn, &sessions)
		}()
	}
	gconn, err := ctl.Dial()
	if err != nil {
		return res, err
	}
	defer gconn.Close()
	api := golivev1.NewControlServiceClient(gconn)
	actx := metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")
	if err := waitFor(actx, o.Timeout, fmt.Sprintf("%d agents connected", o.Hosts), func() bool {
		st, err := api.Status(actx, &golivev1.StatusRequest{})
		return err == nil && int(st.AgentsConnected) == o.Hosts
	}); err != nil {
		return res, err
	}
	res.Connect = time.Since(start)
	logf("%d agents connected in %s", o.Hosts, res.Connect.Round(time.Millisecond))

	measure := func(name string, op func(pctx context.Context, p *Phase) error) error {
		p := Phase{Name: name, Load0: loadavg()}
		st0, err := cli.Status(ctx, cli.Endpoints()[0])
		if err != nil {
			return err
		}
		cpu0, err := ctl.CPU()
		if err != nil {
			return err
		}
		t0 := time.Now()
		pctx, cancel := context.WithTimeout(actx, o.Timeout)
		err = op(pctx, &p)
		cancel()
		p.Took = time.Since(t0)
		cpu1, cerr := ctl.CPU()
		p.CPU, p.Load1 = cpu1-cpu0, loadavg()
		if err == nil {
			err = cerr
		}
		if werr := countWrites(ctx, cli, st0.Header.Revision, &p); err == nil {
			err = werr
		}
		logf("%s: %s in %s, CPU %s, %d writes in %d txns (max %d), load %s->%s", name, p.State, p.Took.Round(time.Millisecond),
			p.CPU.Round(time.Millisecond), p.Writes, p.Txns, p.MaxTxnWrites, p.Load0, p.Load1)
		res.Phases = append(res.Phases, p)
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", name, err, ctl.LogTail(10))
		}
		return nil
	}
	res.Sessions = sessions.Load()

	if err := measure("preflight", func(pctx context.Context, p *Phase) error {
		pf, err := api.Preflight(pctx, &golivev1.PreflightRequest{Service: serviceName, Timeout: durationpb.New(2 * time.Minute)})
		if err != nil {
			return err
		}
		p.Hosts, p.State = len(pf.Hosts), "ok"
		if !pf.Ok || len(pf.Hosts) != o.Hosts {
			p.State = "failed"
			return fmt.Errorf("preflight ok=%v on %d hosts, want ok on %d", pf.Ok, len(pf.Hosts), o.Hosts)
		}
		// The preflight's commands and results are deleted after it: part
		// of its cost.
		return waitFor(pctx, o.Timeout, "preflight keys deleted", func() bool {
			r, err := cli.Get(pctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return false
			}
			for _, kv := range r.Kvs {
				if strings.Contains(string(kv.Key), "/pf-") {
					return false
				}
			}
			return true
		})
	}); err != nil {
		return res, err
	}

	if _, err := api.Authorize(actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(2 * time.Hour), Reason: "rollout1000 bench"}); err != nil {
		return res, fmt.Errorf("authorize: %w", err)
	}
	if err := waitFor(actx, o.Timeout, "every agent to hold the approval", func() bool {
		for _, a := range agents {
			if a.token.Load() == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return res, err
	}

	canary := uint32(max(1, o.Hosts/100))
	deploy := func(rel string) *golivev1.DeployRequest {
		return &golivev1.DeployRequest{Service: serviceName, Release: rel, ArtifactUrl: "http://127.0.0.1:1/" + rel + ".tar.gz",
			Sha256: strings.Repeat("ab", 32), Canary: canary, Batch: "10%", MinHealthy: durationpb.New(o.MinHealthy),
			SkipChecks: []string{"backup"}}
	}
	rollout := func(pctx context.Context, p *Phase, req *golivev1.DeployRequest, during func(r *golivev1.Rollout) error) error {
		d, err := api.Deploy(pctx, req)
		if err != nil {
			return fmt.Errorf("deploy %s: %w", req.Release, err)
		}
		var last *golivev1.Rollout
		err = waitFor(pctx, o.Timeout, "rollout "+d.Rollout.Id+" ended", func() bool {
			r, err := api.GetRollout(pctx, &golivev1.GetRolloutRequest{Id: d.Rollout.Id})
			if err != nil {
				return false
			}
			last = r.Rollout
			if during != nil {
				if err := during(last); err != nil {
					logf("during %s: %v", req.Release, err)
				}
			}
			switch last.State {
			case "succeeded", "failed", "rolled_back", "aborted", "halted":
				return true
			}
			return false
		})
		if last != nil {
			p.State, p.Reason, p.Waves = last.State, last.Reason, len(last.Waves)
			p.Steps, p.Between = waveTimes(filepath.Join(dir, "controller.log"), last, req.Release, agents, hostIdx)
			for _, h := range last.Hosts {
				if h.CommandId != "" {
					p.Hosts++
				}
			}
		}
		return err
	}

	if err := measure("deploy v2 (succeeds)", func(pctx context.Context, p *Phase) error {
		if err := rollout(pctx, p, deploy("v2"), nil); err != nil {
			return err
		}
		if p.State != "succeeded" {
			return fmt.Errorf("ended %s (%s), want succeeded", p.State, p.Reason)
		}
		return nil
	}); err != nil {
		return res, err
	}

	if err := measure("deploy v3 (wave 3 fails, rolled back)", func(pctx context.Context, p *Phase) error {
		set := false
		if err := rollout(pctx, p, deploy(badRelease), func(r *golivev1.Rollout) error {
			if set || len(r.Waves) < 3 {
				return nil
			}
			set = true
			m := map[string]bool{}
			for _, h := range r.Waves[2].Hosts {
				if hostIdx[h]%10 == 0 {
					m[h] = true
				}
			}
			if len(m) == 0 && len(r.Waves[2].Hosts) > 0 {
				m[r.Waves[2].Hosts[0]] = true
			}
			failSet.Store(&m)
			return nil
		}); err != nil {
			return err
		}
		if p.State != "rolled_back" {
			return fmt.Errorf("ended %s (%s), want rolled_back", p.State, p.Reason)
		}
		return nil
	}); err != nil {
		return res, err
	}
	failSet.Store(&empty)

	if err := measure("deploy v4 (aborted in wave 2)", func(pctx context.Context, p *Phase) error {
		aborted := false
		if err := rollout(pctx, p, deploy("v4"), func(r *golivev1.Rollout) error {
			if aborted || r.CurrentWave < 1 || r.State != "wave" {
				return nil
			}
			aborted = true
			_, err := api.AbortRollout(pctx, &golivev1.AbortRolloutRequest{Id: r.Id, Reason: "bench: abort in wave 2"})
			return err
		}); err != nil {
			return err
		}
		if !aborted {
			return fmt.Errorf("ended %s before the abort", p.State)
		}
		if p.State != "aborted" && p.State != "rolled_back" {
			return fmt.Errorf("ended %s (%s), want aborted", p.State, p.Reason)
		}
		return nil
	}); err != nil {
		return res, err
	}
	res.Sessions = sessions.Load()
	return res, nil
}

// countWrites watches etcd from rev0+1 to its current revision and counts
// key writes, write revisions and the most writes in one revision.
func countWrites(ctx context.Context, cli *clientv3.Client, rev0 int64, p *Phase) error {
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		return err
	}
	rev1 := st.Header.Revision
	if rev1 <= rev0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	perRev := map[int64]int64{}
	for wr := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev0+1)) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("counting etcd writes: %w", err)
		}
		done := false
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > rev1 {
				done = true
				break
			}
			perRev[ev.Kv.ModRevision]++
			p.Writes++
		}
		if done || len(wr.Events) > 0 && wr.Events[len(wr.Events)-1].Kv.ModRevision >= rev1 {
			break
		}
	}
	p.Txns = int64(len(perRev))
	for _, n := range perRev {
		p.MaxTxnWrites = max(p.MaxTxnWrites, n)
	}
	return nil
}

// waitFor polls cond every second (the rollout polls are part of the
// measured controller's CPU: an operator watching costs as much).
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("waiting for %s", what))
		case <-time.After(time.Second):
		}
	}
}

var waveStarted = regexp.MustCompile(`^(\S+) \[INFO\]\s+\S+: wave started: rollout_id=(\S+) wave=(\d+) `)

// waveTimes reads the controller's log for when each wave of r started and
// averages, over every wave but the last, the time to its last step's
// result and from there to the next wave.
func waveTimes(logPath string, r *golivev1.Rollout, release string, agents []*simAgent, hostIdx map[string]int) (steps, between time.Duration) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, 0
	}
	starts := map[int]time.Time{}
	for _, line := range strings.Split(string(b), "\n") {
		m := waveStarted.FindStringSubmatch(line)
		if m == nil || m[2] != r.Id {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", m[1])
		w, werr := strconv.Atoi(m[3])
		if err == nil && werr == nil {
			starts[w] = at
		}
	}
	n := 0
	for i := 0; i+1 < len(r.Waves); i++ {
		s0, ok0 := starts[i]
		s1, ok1 := starts[i+1]
		if !ok0 || !ok1 {
			continue
		}
		var last time.Time
		for _, h := range r.Waves[i].Hosts {
			if t := agents[hostIdx[h]].doneAt(release); t.After(last) {
				last = t
			}
		}
		if last.IsZero() || last.Before(s0) || last.After(s1) {
			continue
		}
		steps += last.Sub(s0)
		between += s1.Sub(last)
		n++
	}
	if n == 0 {
		return 0, 0
	}
	return steps / time.Duration(n), between / time.Duration(n)
}
