package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/router"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// agentPrefix marks the modes driven through the controller and a real
// agent: agent-nginx, agent-haproxy.
const agentPrefix = "agent-"

// Agent-level modes.
const (
	AgentNginx   = agentPrefix + Nginx
	AgentHAProxy = agentPrefix + HAProxy
)

func agentMode(mode string) bool { return strings.HasPrefix(mode, agentPrefix) }

const agentHost = "bg-1"

// agentLevel drives a blue-green service through the built controller and
// agent: deploys with the Deploy RPC, rollbacks with Rollback, each
// followed until its rollout is terminal.
type agentLevel struct {
	ctl   *benchkit.Controller
	agent *benchkit.Proc
	api   golivev1.ControlServiceClient
	actx  context.Context
	rels  *releases
	dir   string
	close func()
}

// startAgentService starts the controller, the proxy and an agent whose
// config holds the blue-green service behind it, and approves automation.
func startAgentService(ctx context.Context, o Options, mode, dir string, rels *releases, logf func(string, ...any)) (_ *service, err error) {
	if o.ControllerBin == "" || o.AgentBin == "" {
		return nil, errors.New("the controller and agent binaries are required (Options.ControllerBin, AgentBin)")
	}
	ctlBin, err1 := filepath.Abs(o.ControllerBin)
	agentBin, err2 := filepath.Abs(o.AgentBin)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	for _, b := range []string{ctlBin, agentBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%w (run `make build`, or pass its path)", err)
		}
	}
	a := &agentLevel{rels: rels, dir: dir}
	s := &service{agent: a, blueGreen: true}
	var closers []func()
	a.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	ctlDir := filepath.Join(dir, "controller")
	if err := os.MkdirAll(ctlDir, 0o755); err != nil {
		return nil, err
	}
	a.ctl, err = benchkit.StartController(benchkit.ControllerSpec{Bin: ctlBin, Dir: ctlDir, Args: []string{"--heartbeat-interval", "1s"}})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { a.ctl.Stop(15 * time.Second) })
	if err := a.ctl.WaitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, err
	}
	px, err := launchProxy(mode, dir, "sampleapp", router.Ports{Blue: ports[0], Green: ports[1]})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = px.stop() })
	s.url = px.url
	hostDir := filepath.Join(dir, "host")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(hostDir, "agent.hcl")
	if err := os.WriteFile(conf, []byte(agentConfig(o, filepath.Join(hostDir, "state"), ports, px)), 0o644); err != nil {
		return nil, err
	}
	s.diag = func() string {
		return "agent log:\n" + benchkit.Tail(filepath.Join(hostDir, "agent.log"), 15) + "\nproxy:\n" + px.diag()
	}
	a.agent, err = benchkit.Start(benchkit.ProcSpec{Name: "agent", Bin: agentBin, Dir: hostDir, LogPath: filepath.Join(hostDir, "agent.log"),
		Args: []string{"run", "--controller", a.ctl.GRPCAddr, "--config", conf, "--metrics-addr", "", "--grpc-addr", ""}})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() {
		a.agent.Stop(20 * time.Second)
		// The agent leaves the slots running when it stops, as it
		// must for a restart of the agent alone.
		killUnder(hostDir)
	})
	conn, err := a.ctl.Dial()
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { conn.Close() })
	a.api = golivev1.NewControlServiceClient(conn)
	a.actx = metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")
	if err := waitFor(a.actx, time.Minute, "the agent to connect", func() bool {
		st, err := a.api.Status(a.actx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	}); err != nil {
		return nil, err
	}
	if _, err := a.api.Authorize(a.actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if err := waitFor(a.actx, time.Minute, "the agent to hold the approval", func() bool {
		la, err := a.api.ListAgents(a.actx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 1 && la.Agents[0].FencingToken != 0
	}); err != nil {
		return nil, err
	}
	logf("%s: controller %s, agent %s connected and approved", mode, a.ctl.GRPCAddr, agentHost)
	return s, nil
}

// runStep deploys release through the controller (rollback: release is
// ""), and follows the rollout until it is terminal. The whole step is the
// switch phase: the controller does not report the agent's stages.
func (a *agentLevel) runStep(ctx context.Context, release, want string, tl *timeline, mark func(string)) (step, error) {
	var st step
	start := time.Now()
	tl.set("")
	mark(PhaseSwitch)
	var (
		id  string
		err error
	)
	if release == "" {
		var resp *golivev1.RollbackResponse
		resp, err = a.api.Rollback(a.actx, &golivev1.RollbackRequest{Service: "sampleapp", Hosts: []string{agentHost}})
		id = resp.GetRollout().GetId()
	} else {
		var resp *golivev1.DeployResponse
		resp, err = a.api.Deploy(a.actx, &golivev1.DeployRequest{Service: "sampleapp", Release: release, Hosts: []string{agentHost},
			ArtifactUrl: a.rels.URL + "/" + release + ".tar.gz", Sha256: a.rels.sums[release], MinHealthy: durationpb.New(0)})
		id = resp.GetRollout().GetId()
	}
	if err != nil {
		return st, fmt.Errorf("call: %w", err)
	}
	r, err := a.follow(ctx, id)
	st.returned = time.Now()
	st.took = st.returned.Sub(start)
	st.switched = st.took
	if err != nil {
		return st, err
	}
	if r.State != "succeeded" {
		return st, fmt.Errorf("rollout %s: %s: %s", id, r.State, r.Reason)
	}
	tl.set(want)
	mark(PhaseSettle)
	return st, nil
}

// follow watches rollout id until it is terminal, polling if the watch
// ends early.
func (a *agentLevel) follow(ctx context.Context, id string) (*golivev1.Rollout, error) {
	ctx, cancel := context.WithTimeout(a.actx, 2*time.Minute)
	defer cancel()
	if w, err := a.api.WatchRollout(ctx, &golivev1.WatchRolloutRequest{Id: id}); err == nil {
		for {
			m, err := w.Recv()
			if err != nil {
				break
			}
			if terminal(m.Rollout.GetState()) {
				return m.Rollout, nil
			}
		}
	}
	for {
		r, err := a.api.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err == nil && terminal(r.Rollout.GetState()) {
			return r.Rollout, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rollout %s did not finish: %w", id, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func terminal(state string) bool {
	switch state {
	case "succeeded", "failed", "rolled_back", "aborted":
		return true
	}
	return false
}

func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// agentConfig is the agent's HCL: the blue-green service sampleapp on two
// slot ports behind the proxy.
func agentConfig(o Options, state string, ports []int, px proxy) string {
	quote := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = strconv.Quote(s)
		}
		return strings.Join(q, ", ")
	}
	rc := px.rc
	var rb strings.Builder
	fmt.Fprintf(&rb, "      kind      = %q\n      probe_url = %q\n", rc.Kind, rc.ProbeURL)
	if rc.UpstreamFile != "" {
		fmt.Fprintf(&rb, "      upstream_file = %q\n      reload        = [%s]\n", rc.UpstreamFile, quote(rc.Reload))
	}
	if rc.AdminSocket != "" {
		fmt.Fprintf(&rb, "      admin_socket = %q\n      backend      = %q\n", rc.AdminSocket, rc.Backend)
	}
	return fmt.Sprintf(`host_id   = %q
state_dir = %q
labels    = { role = "web" }
service "sampleapp" {
  swap_mode     = "blue-green"
  keep_releases = 3
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "10s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = %q
    timeout   = "1s"
    successes = %d
    deadline  = "10s"
  }
  blue_green {
    blue_port     = %d
    green_port    = %d
    keep_warm     = "15m"
    drain_timeout = "10s"
    router {
%s    }
  }
}
`, agentHost, state, o.HealthInterval.String(), o.HealthSuccesses, ports[0], ports[1], rb.String())
}

// killUnder SIGKILLs every process whose working directory lies under dir
// (the slots the agent started in their release directories).
func killUnder(dir string) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
