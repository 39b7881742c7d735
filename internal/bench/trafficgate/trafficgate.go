// Package trafficgate benchmarks the real-traffic gate end to end: the
// built controller and agent, a blue-green sample service behind a real
// nginx writing the golive JSON access log, and an open-loop load of Rate
// requests/s through nginx while rollouts run.
//
//	v1 (stable) ──▶ v4 (5% of / answer 500)  ── time from the first 500 to rolling_back
//	            ──▶ v5 (+300 ms on /)        ── time from the first slow answer to rolling_back
//	            ──▶ v2, v1, v2, ... (good)   ── rollouts rolled back although nothing was wrong
//
// plus what following the access log costs (a Follower reading lines
// written at 1,000 and 10,000 lines/s, as internal/traffic's
// BenchmarkFollowRate, measured as this process's CPU less the writer's
// alone) and the agent process's CPU under the real load.
//
// A failed release is deployed with MinHealthyBad (30s) so that the
// rollback can only come from the gate failing early; good ones with
// MinHealthyGood (10s). After a failed release the next rollout waits until
// the failed slot's traffic window (traffic.DefaultWindow) no longer holds
// its requests: a slot's window is not reset when a new release starts in
// it (a known gap: the next release there would be judged on them).
// Everything it started is stopped before Run returns.
package trafficgate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/traffic"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Options configure a run; zero values take the defaults named.
type Options struct {
	ControllerBin, AgentBin string
	// Rate is the load through nginx in requests/s (default 1000).
	Rate float64
	// GoodRollouts is how many good rollouts are checked for false
	// rollbacks (default 20).
	GoodRollouts int
	// MinHealthyBad and MinHealthyGood are the bake windows (30s, 10s).
	MinHealthyBad, MinHealthyGood time.Duration
	// FollowRates are the access log rates whose following cost is
	// measured (1000, 10000 lines/s), each for FollowFor (10s).
	FollowRates []int
	FollowFor   time.Duration
	// Log receives progress (nil: none).
	Log io.Writer
}

func (o *Options) defaults() {
	if o.Rate == 0 {
		o.Rate = 1000
	}
	if o.GoodRollouts == 0 {
		o.GoodRollouts = 20
	}
	if o.MinHealthyBad == 0 {
		o.MinHealthyBad = 30 * time.Second
	}
	if o.MinHealthyGood == 0 {
		o.MinHealthyGood = 10 * time.Second
	}
	if len(o.FollowRates) == 0 {
		o.FollowRates = []int{1000, 10000}
	}
	if o.FollowFor == 0 {
		o.FollowFor = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Detection is one bad release's way to its rollback.
type Detection struct {
	Release, Bad string // e.g. "v4", "5% 500s"
	// FirstBad is when the first bad answer came back; RollingBack when
	// the rollout was first seen rolling back (zero if it never did).
	FirstBad, RollingBack time.Time
	State, Reason         string
	// Load is the load's summary during the rollout.
	Load loadgen.Summary
}

// Took is the time from the first bad answer to the rollback starting.
func (d Detection) Took() time.Duration {
	if d.FirstBad.IsZero() || d.RollingBack.IsZero() {
		return 0
	}
	return d.RollingBack.Sub(d.FirstBad)
}

// Follow is the cost of following the access log at one rate.
type Follow struct {
	Rate  int
	Lines uint64
	CPU   time.Duration // of the follower, over Wall
	Wall  time.Duration
}

// PercentCore is the follower's CPU as a share of one core.
func (f Follow) PercentCore() float64 { return float64(f.CPU) / float64(f.Wall) * 100 }

// Result is a run's figures.
type Result struct {
	Rate       float64
	Detections []Detection
	// Good counts the good rollouts; FalseRollbacks lists the reason of
	// each that did not succeed.
	Good           int
	FalseRollbacks []string
	GoodLoad       loadgen.Summary
	// AgentIdle and AgentLoaded are the agent process's CPU as a share of
	// one core with no load and during the good rollouts' load.
	AgentIdle, AgentLoaded float64
	Follows                []Follow
}

// Run runs the benchmark.
func Run(ctx context.Context, o Options) (res Result, err error) {
	o.defaults()
	res.Rate = o.Rate
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "trafficgate: "+format+"\n", args...) }
	for _, rate := range o.FollowRates {
		f, err := measureFollow(ctx, rate, o.FollowFor)
		if err != nil {
			return res, fmt.Errorf("follow at %d lines/s: %w", rate, err)
		}
		logf("following %d lines/s: %.2f%% of a core", rate, f.PercentCore())
		res.Follows = append(res.Follows, f)
	}
	st, err := startStack(ctx, o, logf)
	if err != nil {
		return res, err
	}
	defer st.close()

	// v1, with the load on from the moment it serves.
	if err := st.deployStable(ctx, o); err != nil {
		return res, fmt.Errorf("v1: %w", err)
	}
	cpu0, t0 := st.agentCPU()
	if err := sleep(ctx, 5*time.Second); err != nil {
		return res, err
	}
	cpu1, t1 := st.agentCPU()
	res.AgentIdle = share(cpu1-cpu0, t1.Sub(t0))
	logf("agent idle: %.2f%% of a core", res.AgentIdle)

	for _, bad := range []struct{ release, what string }{{"v4", "5% of / answer 500"}, {"v5", "/ takes 300 ms more"}} {
		d, err := st.detect(ctx, o, bad.release, bad.what)
		res.Detections = append(res.Detections, d)
		if err != nil {
			return res, fmt.Errorf("%s: %w", bad.release, err)
		}
		logf("%s: %s %q, first bad answer to rolling back %s", bad.release, d.State, d.Reason, d.Took())
		// Let the failed slot's window forget the bad release's requests.
		if err := sleep(ctx, traffic.DefaultWindow+5*time.Second); err != nil {
			return res, err
		}
	}

	g, err := st.startLoad(o)
	if err != nil {
		return res, err
	}
	cpu0, t0 = st.agentCPU()
	next := []string{"v2", "v1"}
	for i := range o.GoodRollouts {
		if ctx.Err() != nil {
			break
		}
		v := next[i%2]
		r, err := st.rollout(ctx, v, o.MinHealthyGood)
		if err != nil {
			g.stop()
			return res, fmt.Errorf("good rollout %d (%s): %w", i+1, v, err)
		}
		res.Good++
		if r.State != "succeeded" {
			res.FalseRollbacks = append(res.FalseRollbacks, fmt.Sprintf("%s: %s %s", v, r.State, r.Reason))
			logf("good rollout %d (%s): FALSE %s %q", i+1, v, r.State, r.Reason)
			// Put the expected release back before the next one.
			next[0], next[1] = next[1], next[0]
		} else {
			logf("good rollout %d (%s): succeeded", i+1, v)
		}
	}
	cpu1, t1 = st.agentCPU()
	res.AgentLoaded = share(cpu1-cpu0, t1.Sub(t0))
	lr := g.stop()
	res.GoodLoad = lr.Summary()
	return res, ctx.Err()
}

func share(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(cpu) / float64(wall) * 100
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// stack is the controller, nginx and agent of a run.
type stack struct {
	ctl    *benchkit.Controller
	agent  *benchkit.Proc
	nginx  *routertest.Nginx
	api    golivev1.ControlServiceClient
	actx   context.Context
	sums   map[string]string
	artURL string
	dir    string
	logf   func(string, ...any)
	closer []func()
}

const host = "tg-1"

func (s *stack) close() {
	for i := len(s.closer) - 1; i >= 0; i-- {
		s.closer[i]()
	}
	os.RemoveAll(s.dir)
}

func startStack(ctx context.Context, o Options, logf func(string, ...any)) (_ *stack, err error) {
	if o.ControllerBin == "" || o.AgentBin == "" {
		return nil, errors.New("the controller and agent binaries are required")
	}
	agentBin, err := filepath.Abs(o.AgentBin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(agentBin); err != nil {
		return nil, fmt.Errorf("%w (run `make build`, or pass its path)", err)
	}
	nginxBin, err := routertest.FindBinary("nginx")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "golive-trafficgate-")
	if err != nil {
		return nil, err
	}
	s := &stack{dir: dir, logf: logf}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	rel := filepath.Join(dir, "releases")
	if s.sums, err = buildReleases(ctx, rel); err != nil {
		return nil, err
	}
	ctlDir := filepath.Join(dir, "controller")
	if err := os.MkdirAll(ctlDir, 0o755); err != nil {
		return nil, err
	}
	s.ctl, err = benchkit.StartController(benchkit.ControllerSpec{Bin: o.ControllerBin, Dir: ctlDir,
		Args: []string{"--heartbeat-interval", "1s", "--artifacts-dir", rel}})
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, func() { s.ctl.Stop(15 * time.Second) })
	if err := s.ctl.WaitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	s.artURL = "http://" + benchkit.LoopbackAddr(s.ctl.Ports[1]) + "/artifacts/"
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, err
	}
	bg := router.Ports{Blue: ports[0], Green: ports[1]}
	if s.nginx, err = launchNginxJSON(ctx, nginxBin, filepath.Join(dir, "nginx"), bg); err != nil {
		return nil, err
	}
	s.closer = append(s.closer, func() { _ = s.nginx.Stop() })
	hostDir := filepath.Join(dir, "host")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(hostDir, "agent.hcl")
	if err := os.WriteFile(conf, []byte(agentConfig(filepath.Join(hostDir, "state"), bg, s.nginx)), 0o644); err != nil {
		return nil, err
	}
	s.agent, err = benchkit.Start(benchkit.ProcSpec{Name: "agent", Bin: agentBin, Dir: hostDir, LogPath: filepath.Join(hostDir, "agent.log"),
		Args: []string{"run", "--controller", s.ctl.GRPCAddr, "--config", conf, "--metrics-addr", "", "--grpc-addr", ""}})
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, func() {
		s.agent.Stop(20 * time.Second)
		killUnder(hostDir)
	})
	conn, err := s.ctl.Dial()
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, func() { conn.Close() })
	s.api = golivev1.NewControlServiceClient(conn)
	s.actx = metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")
	if err := waitFor(s.actx, time.Minute, "the agent to connect", func() bool {
		st, err := s.api.Status(s.actx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	}); err != nil {
		return nil, err
	}
	if _, err := s.api.Authorize(s.actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(3 * time.Hour)}); err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if err := waitFor(s.actx, time.Minute, "the agent to hold the approval", func() bool {
		la, err := s.api.ListAgents(s.actx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 1 && la.Agents[0].FencingToken != 0
	}); err != nil {
		return nil, err
	}
	logf("controller %s, nginx :%d, agent %s connected and approved", s.ctl.GRPCAddr, s.nginx.Port, host)
	return s, nil
}

// buildReleases runs cmd/sampleapp/mkreleases.sh (`make releases`) into
// dir and returns the sha256 of each sampleapp release by version.
func buildReleases(ctx context.Context, dir string) (map[string]string, error) {
	root, err := benchkit.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "cmd/sampleapp/mkreleases.sh"), dir)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkreleases.sh: %w\n%s", err, b)
	}
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "sampleapp-") {
			sums[strings.TrimSuffix(strings.TrimPrefix(f[1], "sampleapp-"), ".tar.gz")] = f[0]
		}
	}
	return sums, nil
}

// agentConfig is the agent's HCL: the blue-green sample service behind
// nginx, its traffic read from nginx's JSON access log. No probe_url: the
// prober would go through nginx before any release runs (see the e2e
// traffic tests).
func agentConfig(state string, ports router.Ports, n *routertest.Nginx) string {
	var reload []string
	for _, a := range n.ReloadCommand() {
		reload = append(reload, strconv.Quote(a))
	}
	return fmt.Sprintf(`host_id   = %q
state_dir = %q
service "app" {
  swap_mode     = "blue-green"
  keep_releases = 3
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "10s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "20s"
  }
  blue_green {
    blue_port     = %d
    green_port    = %d
    keep_warm     = "30m"
    drain_timeout = "5s"
    router {
      kind          = "nginx"
      upstream_file = %q
      reload        = [%s]
      access_log    = %q
    }
  }
}
`, host, state, ports.Blue, ports.Green, n.UpstreamFile, strings.Join(reload, ", "), filepath.Join(n.Dir, "access.log"))
}

// load is one open-loop generator through nginx.
type load struct {
	gen  *loadgen.Generator
	done chan loadgen.Result
}

func (s *stack) startLoad(o Options) (*load, error) {
	g, err := loadgen.New(loadgen.Options{URL: s.nginx.URL("/"), Rate: o.Rate, Concurrency: 512, Duration: time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	l := &load{gen: g, done: make(chan loadgen.Result, 1)}
	go func() {
		r, _ := g.Run(context.Background())
		l.done <- r
	}()
	return l, nil
}

// stop ends the load and returns its result.
func (l *load) stop() loadgen.Result {
	l.gen.Stop()
	return <-l.done
}

// deployStable deploys v1 with the load on from the moment it serves
// (resuming once if the bake saw too few requests) and leaves it serving.
func (s *stack) deployStable(ctx context.Context, o Options) error {
	id, err := s.deploy(ctx, "v1", o.MinHealthyGood)
	if err != nil {
		return err
	}
	// Asked of the controller, not through nginx: a request through nginx
	// before v1 listens is logged as failed attempts to both slots, which
	// the slot's window would count against v1.
	if err := waitFor(s.actx, 2*time.Minute, "v1 serving", func() bool {
		la, err := s.api.ListAgents(s.actx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return false
		}
		for _, a := range la.Agents {
			for _, sv := range a.Services {
				if a.HostId == host && sv.Name == "app" && sv.CurrentRelease == "v1" && sv.State == "running" && sv.ActiveSlot != "" {
					return true
				}
			}
		}
		return false
	}); err != nil {
		return err
	}
	l, err := s.startLoad(o)
	if err != nil {
		return err
	}
	defer l.stop()
	r, err := s.follow(ctx, id, nil)
	if err != nil {
		return err
	}
	if r.State == "halted" && strings.Contains(r.Reason, "inconclusive") {
		if _, err := s.api.ResumeRollout(s.actx, &golivev1.ResumeRolloutRequest{Id: id}); err != nil {
			return err
		}
		if r, err = s.follow(ctx, id, nil); err != nil {
			return err
		}
	}
	if r.State != "succeeded" {
		return fmt.Errorf("rollout %s: %s %s", id, r.State, r.Reason)
	}
	return nil
}

// detect deploys a bad release under load and times its rollback.
func (s *stack) detect(ctx context.Context, o Options, release, what string) (Detection, error) {
	d := Detection{Release: release, Bad: what}
	l, err := s.startLoad(o)
	if err != nil {
		return d, err
	}
	r, err := s.rollout(ctx, release, o.MinHealthyBad, func(r *golivev1.Rollout) {
		if d.RollingBack.IsZero() && (r.State == "rolling_back" || r.State == "rolled_back") {
			d.RollingBack = time.Now()
		}
	})
	lr := l.stop()
	d.Load = lr.Summary()
	if err != nil {
		return d, err
	}
	d.State, d.Reason = r.State, r.Reason
	for _, rec := range lr.Records {
		bad := false
		switch release {
		case "v4":
			bad = rec.Status == 500
		case "v5":
			bad = rec.Status == 200 && rec.Latency >= 300*time.Millisecond
		}
		if at := rec.Due.Add(rec.Latency); bad && (d.FirstBad.IsZero() || at.Before(d.FirstBad)) {
			d.FirstBad = at
		}
	}
	if d.State != "rolled_back" {
		return d, fmt.Errorf("rollout ended %s %q, want rolled_back", d.State, d.Reason)
	}
	return d, nil
}

// rollout deploys release and follows it to its end.
func (s *stack) rollout(ctx context.Context, release string, minHealthy time.Duration, seen ...func(*golivev1.Rollout)) (*golivev1.Rollout, error) {
	id, err := s.deploy(ctx, release, minHealthy)
	if err != nil {
		return nil, err
	}
	var cb func(*golivev1.Rollout)
	if len(seen) > 0 {
		cb = seen[0]
	}
	r, err := s.follow(ctx, id, cb)
	if err != nil {
		return nil, err
	}
	if r.State == "halted" {
		return r, fmt.Errorf("rollout %s halted: %s", id, r.Reason)
	}
	return r, nil
}

func (s *stack) deploy(ctx context.Context, release string, minHealthy time.Duration) (string, error) {
	resp, err := s.api.Deploy(s.actx, &golivev1.DeployRequest{Service: "app", Release: release, Hosts: []string{host},
		ArtifactUrl: s.artURL + "sampleapp-" + release + ".tar.gz", Sha256: s.sums[release], MinHealthy: durationpb.New(minHealthy)})
	if err != nil {
		return "", fmt.Errorf("deploy %s: %w", release, err)
	}
	return resp.Rollout.Id, nil
}

// follow watches rollout id (calling seen with each version of it) until
// it ends or halts.
func (s *stack) follow(ctx context.Context, id string, seen func(*golivev1.Rollout)) (*golivev1.Rollout, error) {
	ctx, cancel := context.WithTimeout(s.actx, 5*time.Minute)
	defer cancel()
	stop := func(r *golivev1.Rollout) bool {
		if seen != nil {
			seen(r)
		}
		switch r.GetState() {
		case "succeeded", "failed", "rolled_back", "aborted", "halted":
			return true
		}
		return false
	}
	if w, err := s.api.WatchRollout(ctx, &golivev1.WatchRolloutRequest{Id: id}); err == nil {
		for {
			m, err := w.Recv()
			if err != nil {
				break
			}
			if stop(m.Rollout) {
				return m.Rollout, nil
			}
		}
	}
	for {
		r, err := s.api.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err == nil && stop(r.Rollout) {
			return r.Rollout, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rollout %s did not finish: %w", id, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *stack) agentCPU() (time.Duration, time.Time) {
	c, _ := s.agent.CPU()
	return c, time.Now()
}

// PrintTable writes r as a table.
func PrintTable(w io.Writer, r Result) error {
	tw := benchkit.NewTable(w)
	fmt.Fprintf(tw, "measure\tvalue\t  note\n")
	for _, d := range r.Detections {
		fmt.Fprintf(tw, "%s (%s): first bad answer -> rollback starts\t%ss\t  %s; %.0f rps offered, %d requests; %s\n",
			d.Release, d.Bad, benchkit.Sec(d.Took()), d.State, d.Load.OfferedRate(), d.Load.Requests, benchkit.FirstLine(d.Reason))
	}
	fmt.Fprintf(tw, "false rollbacks over good rollouts\t%d of %d\t  goal 0; load %d requests, %d failed, p99 %sms\n",
		len(r.FalseRollbacks), r.Good, r.GoodLoad.Requests, r.GoodLoad.Failed, benchkit.Ms(r.GoodLoad.Latency.P99))
	for _, f := range r.FalseRollbacks {
		fmt.Fprintf(tw, "  false rollback\t\t  %s\n", benchkit.FirstLine(f))
	}
	fmt.Fprintf(tw, "agent CPU, idle\t%.2f%% core\t\n", r.AgentIdle)
	fmt.Fprintf(tw, "agent CPU, %.0f rps through nginx during rollouts\t%.2f%% core\t  following the access log, heartbeats, deploy steps\n", r.Rate, r.AgentLoaded)
	for _, f := range r.Follows {
		fmt.Fprintf(tw, "access log follower at %d lines/s\t%.2f%% core\t  %.0f ns CPU/line over %s (%d lines)\n",
			f.Rate, f.PercentCore(), float64(f.CPU)/float64(max(f.Lines, 1)), benchkit.Sec(f.Wall)+"s", f.Lines)
	}
	return tw.Flush()
}
