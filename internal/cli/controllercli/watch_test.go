package controllercli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// syncBuffer is a bytes buffer a running command writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSampleAgent runs an agent in the test process for host, with service
// "app" (the sample app, restart mode) on a free port.
func startSampleAgent(t *testing.T, host, controller string) {
	t.Helper()
	state := t.TempDir()
	_, p, _ := net.SplitHostPort(etcdtest.FreeAddr(t))
	conf := filepath.Join(state, "agent.hcl")
	src := fmt.Sprintf(`host_id = %q
state_dir = %q
service "app" {
  port = %s
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "5s"
  }
}
`, host, state, p)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := agentconfig.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	log := testenv.Logger(t, "agent-"+host)
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	services, err := agent.ServicesFromConfig(ctx, cfg, log, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for i := range services {
		services[i].StopOnExit = true // no sample app outlives the test
	}
	ready, done := make(chan *agent.Agent, 1), make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.Config{Controllers: []string{controller}, HostID: host, StateDir: state, Services: services,
			MaxBackoff: time.Second, Registry: reg, Ready: func(a *agent.Agent) { ready <- a }}, log)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent %s: %v", host, err)
	}
}

var startedID = regexp.MustCompile(`rollout (\S+) started`)

// TestWatchPauseWaitHistory follows a real rollout of the sample app on
// two hosts that pauses after its canary.
func TestWatchPauseWaitHistory(t *testing.T) {
	rel, sums := testenv.Releases(t)
	cfg := testenv.ControllerConfig(t)
	cfg.ArtifactsDir = rel
	c := testenv.StartController(t, cfg)
	addr := c.GRPCAddr()
	for _, h := range []string{"web-1", "web-2"} {
		startSampleAgent(t, h, addr)
	}
	ctl, ctx := testenv.Control(t, addr, "test")
	testenv.WaitFor(t, 20*time.Second, "2 agents connected", func() bool {
		st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 2
	})
	mustCLI := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := cliRun(t, addr, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
		return stdout
	}
	mustCLI("authorize", "start automation now", "--ttl", "30m", "--reason", "watch test")
	artifact := func(v string) []string {
		return []string{"--artifact", "http://" + c.MetricsAddr() + "/artifacts/sampleapp-" + v + ".tar.gz", "--sha256", sums[v]}
	}
	out := mustCLI(append([]string{"deploy", "--service", "app", "--release", "v1", "--canary", "1", "--pause-after-canary", "--min-healthy", "1s",
		"--skip-check", "previous-release"}, artifact("v1")...)...)
	m := startedID.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("deploy said %q", out)
	}
	id := m[1]
	testenv.WaitFor(t, 60*time.Second, "paused after the canary", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		return err == nil && r.Rollout.Paused && r.Rollout.State == "halted"
	})

	// A paused rollout is PAUSED (not HALTED), with the command to resume it.
	if out := mustCLI("rollout", id); !strings.Contains(out, "PAUSED") || strings.Contains(out, "HALTED") || !strings.Contains(out, "golive-controller resume "+id) {
		t.Errorf("rollout %s:\n%s", id, out)
	}
	// Completion offers the running rollout's id.
	if out := mustCLI("__complete", "watch", ""); !strings.Contains(out, id+"\tdeploy app@v1 halted") {
		t.Errorf("completion of watch ROLLOUT_ID:\n%s", out)
	}
	// pause of a paused rollout says it is stopped already (exit 0).
	if out := mustCLI("pause", id); !strings.Contains(out, "already stopped (PAUSED") || !strings.Contains(out, "resume "+id) {
		t.Errorf("pause of a paused rollout: %s", out)
	}

	// Ctrl-C in watch: exit 130, no "context canceled", the rollout goes on.
	watch := func(args ...string) (*syncBuffer, *syncBuffer, context.CancelFunc, chan int) {
		var stdout, stderr syncBuffer
		wctx, cancel := context.WithCancel(t.Context())
		code := make(chan int, 1)
		go func() {
			code <- controllercli.Main(wctx, append([]string{"--addr", addr}, args...), &stdout, &stderr)
		}()
		return &stdout, &stderr, cancel, code
	}
	stdout, stderr, cancel, code := watch("watch", id)
	testenv.WaitFor(t, 20*time.Second, "watch shows the pause", func() bool { return strings.Contains(stdout.String(), "paused") })
	cancel()
	if got := <-code; got != 130 {
		t.Errorf("watch after Ctrl-C: exit %d, want 130", got)
	}
	if e := stderr.String(); strings.Contains(e, "context canceled") || !strings.Contains(e, "rollout "+id+" continues") {
		t.Errorf("watch after Ctrl-C said %q", e)
	}
	if lines := strings.Count(stdout.String(), "\n"); lines != 1 {
		t.Errorf("watch printed %d lines for one unchanged state:\n%s", lines, stdout.String())
	}

	// watch -o json: one compact JSON object per line.
	stdout, _, cancel, code = watch("watch", id, "-o", "json")
	testenv.WaitFor(t, 20*time.Second, "a JSON line", func() bool { return strings.Contains(stdout.String(), "\n") })
	cancel()
	<-code
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || !strings.HasPrefix(line, `{"rollout":{`) {
			t.Errorf("watch -o json line %q: %v", line, err)
		}
	}

	// resume, and deploy --wait shows its progress while it waits.
	mustCLI("resume", id)
	testenv.WaitFor(t, 60*time.Second, "v1 rolled out", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		return err == nil && r.Rollout.State == "succeeded"
	})
	code2, waitOut, waitErr := cliRun(t, addr, append([]string{"deploy", "--service", "app", "--release", "v2", "--canary", "1", "--min-healthy", "1s", "--wait"}, artifact("v2")...)...)
	if code2 != 0 {
		t.Fatalf("deploy --wait v2: exit %d\n%s%s", code2, waitOut, waitErr)
	}
	if !strings.Contains(waitErr, ", canary ") || !strings.Contains(waitErr, ", wave 1 ") || !strings.Contains(waitOut, "SUCCEEDED") {
		t.Errorf("deploy --wait progress (stderr):\n%s\nresult:\n%s", waitErr, waitOut)
	}

	// agents: the last deploy's result, the live health.
	testenv.WaitFor(t, 20*time.Second, "agents show v2", func() bool {
		out := mustCLI("agents")
		return strings.Contains(out, "succeeded app@v2") && strings.Contains(out, "app:ok")
	})

	// history: a time column, and --since.
	if out := mustCLI("history", "--since", "1h"); !strings.Contains(out, "STARTED") || strings.Count(out, "deploy") != 2 {
		t.Errorf("history --since 1h:\n%s", out)
	}
	if out := mustCLI("history", "--since", time.Now().Add(time.Minute).UTC().Format(time.RFC3339)); strings.Count(out, "\n") != 1 {
		t.Errorf("history --since the future lists rollouts:\n%s", out)
	}
}
