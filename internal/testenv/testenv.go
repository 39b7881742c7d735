// Package testenv starts real golive parts for tests: a controller on an
// embedded etcd (in process), agents (in process), and the built binaries.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/etcdtest"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Logger routes logs into t.Log.
func Logger(t testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: tWriter{t}})
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Controller is a controller running in the test process.
type Controller struct {
	*controller.Server
	Config controller.Config
	cancel context.CancelFunc
	done   chan error
}

// ControllerConfig returns a config on free loopback ports in a temp dir.
func ControllerConfig(t testing.TB) controller.Config {
	cfg := controller.DefaultConfig()
	cfg.Listen = etcdtest.FreeAddr(t)
	cfg.MetricsAddr = etcdtest.FreeAddr(t)
	cfg.EmbeddedClient = etcdtest.FreeAddr(t)
	cfg.EmbeddedPeer = etcdtest.FreeAddr(t)
	cfg.DataDir = t.TempDir()
	cfg.ReplicaID = "ctl-test"
	cfg.HeartbeatInterval = time.Second
	return cfg
}

// StartController runs a controller until Stop or test end.
func StartController(t testing.TB, cfg controller.Config) *Controller {
	t.Helper()
	ready := make(chan *controller.Server, 1)
	cfg.Ready = func(s *controller.Server) { ready <- s }
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- controller.Run(ctx, cfg, Logger(t, "controller")) }()
	select {
	case s := <-ready:
		c.Server = s
	case err := <-c.done:
		cancel()
		t.Fatalf("controller did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("controller did not start within 60s")
	}
	t.Cleanup(c.Stop)
	return c
}

// Stop stops the controller and waits for it.
func (c *Controller) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
}

// Agent is an agent running in the test process.
type Agent struct {
	*agent.Agent
	Config agent.Config
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// StartAgent runs an agent against controllers until Stop or test end.
func StartAgent(t testing.TB, host string, stateDir string, services []agent.Service, controllers ...string) *Agent {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	ready := make(chan *agent.Agent, 1)
	cfg := agent.Config{Controllers: controllers, HostID: host, StateDir: stateDir, Services: services,
		MaxBackoff: time.Second, Labels: map[string]string{"role": "web"}, Ready: func(a *agent.Agent) { ready <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- agent.Run(ctx, cfg, Logger(t, "agent-"+host)) }()
	select {
	case ag := <-ready:
		a.Agent = ag
	case err := <-a.done:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	}
	t.Cleanup(a.Stop)
	return a
}

// Stop stops the agent and waits for it.
func (a *Agent) Stop() {
	a.once.Do(func() {
		a.cancel()
		<-a.done
	})
}

// Control dials addr's ControlService as actor.
func Control(t testing.TB, addr, actor string) (golivev1.ControlServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), controller.ActorMetadataKey, actor)
	return golivev1.NewControlServiceClient(conn), ctx
}

// WaitFor polls cond until it holds or d passes.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds golive-controller and golive-agent once per test binary
// and returns the directory holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		binDir, buildErr = os.MkdirTemp("", "golive-bin-")
		if buildErr != nil {
			return
		}
		for name, args := range map[string][]string{
			"golive-controller": {"./cmd/controller"},
			"golive-agent":      {"./cmd/agent"},
			// An agent with fault points compiled in: GOLIVE_FAULTPOINT=<name>
			// makes it kill -9 itself at that stage boundary.
			"golive-agent-faultpoints": {"-tags", "faultpoints", "./cmd/agent"},
		} {
			cmd := exec.Command("go", append([]string{"build", "-o", filepath.Join(binDir, name)}, args...)...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{pkg: name, out: string(out), err: err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binDir
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return e.pkg + ": " + e.err.Error() + "\n" + e.out }

var (
	relOnce sync.Once
	relDir  string
	relSums map[string]string
	relErr  error
)

// Releases builds the sample service's releases v1, v2 and v3 (v3 fails its
// health check) once per test binary with `make releases`' script, and
// returns their directory and sha256 by version.
func Releases(t testing.TB) (string, map[string]string) {
	t.Helper()
	relOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			relErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		if relDir, relErr = os.MkdirTemp("", "golive-releases-"); relErr != nil {
			return
		}
		cmd := exec.Command("bash", filepath.Join(root, "cmd/sampleapp/mkreleases.sh"), relDir)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			relErr = &buildError{pkg: "mkreleases.sh", out: string(b), err: err}
			return
		}
		sums, err := os.ReadFile(filepath.Join(relDir, "SHA256SUMS"))
		if err != nil {
			relErr = err
			return
		}
		relSums = map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				v := strings.TrimSuffix(strings.TrimPrefix(f[1], "sampleapp-"), ".tar.gz")
				relSums[v] = f[0]
			}
		}
	})
	if relErr != nil {
		t.Fatalf("build sample releases: %v", relErr)
	}
	return relDir, relSums
}
