// Package e2e runs the built golive binaries as separate processes against
// real etcd, to test what only processes can show: kill -9, SIGSTOP, and
// several controller replicas on one etcd cluster.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the process's output copier and
// the test reading it at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

func start(t *testing.T, name string, bin string, args ...string) *proc {
	t.Helper()
	return startEnv(t, name, nil, bin, args...)
}

func startEnv(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	if filepath.Base(bin) == "golive-controller" && len(args) > 0 && args[0] == "serve" && !slices.Contains(args, "--data-dir") {
		// With external etcd the controller still keeps files of its own
		// (the brake, the dashboard's key): never in the source tree.
		args = append(args, "--data-dir", t.TempDir())
	}
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		// SIGTERM first: a clean agent exit also stops the services it
		// supervises, so no sample service outlives the test.
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.stop()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop ends the process gracefully (SIGTERM, then SIGKILL after 15s) and
// reaps it; it is safe to call on a process that already exited.
func (p *proc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	p.cmd.Wait()
}

type replica struct {
	*proc
	addr string
}

func startReplica(t *testing.T, bin, id string, endpoints []string) replica {
	addr := etcdtest.FreeAddr(t)
	p := start(t, id, filepath.Join(bin, "golive-controller"), "serve", "--listen", addr, "--metrics-addr", etcdtest.FreeAddr(t),
		"--etcd-endpoints", strings.Join(endpoints, ","), "--replica-id", id, "--leader-ttl", "3s", "--heartbeat-interval", "1s")
	return replica{p, addr}
}

func startAgentProc(t *testing.T, bin, host string, controllers ...string) *proc {
	return start(t, host, filepath.Join(bin, "golive-agent"), "run", "--controller", strings.Join(controllers, ","), "--host-id", host,
		"--state-dir", t.TempDir(), "--metrics-addr", "", "--grpc-addr", "")
}

func status(t *testing.T, addr string) (*golivev1.StatusResponse, error) {
	ctl, ctx := testenv.Control(t, addr, "e2e")
	return ctl.Status(ctx, &golivev1.StatusRequest{})
}

func agentStates(t *testing.T, addr string) map[string]*golivev1.Agent {
	ctl, ctx := testenv.Control(t, addr, "e2e")
	resp, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		return nil
	}
	out := map[string]*golivev1.Agent{}
	for _, a := range resp.Agents {
		out[a.HostId] = a
	}
	return out
}

func TestLeaderKill9FailoverWithin5s(t *testing.T) {
	bin := testenv.Binaries(t)
	cluster := etcdtest.Start(t, 3)
	r := map[string]replica{
		"ctl-a": startReplica(t, bin, "ctl-a", cluster.Endpoints()),
		"ctl-b": startReplica(t, bin, "ctl-b", cluster.Endpoints()),
	}
	addrs := []string{r["ctl-a"].addr, r["ctl-b"].addr}
	for i := 0; i < 3; i++ {
		startAgentProc(t, bin, fmt.Sprintf("web-%d", i), addrs...)
	}
	var leader string
	testenv.WaitFor(t, 30*time.Second, "a leader and 3 connected agents", func() bool {
		st, err := status(t, addrs[0])
		if err != nil || st.Leader == "" || st.AgentsConnected != 3 {
			return false
		}
		leader = st.Leader
		return true
	})
	other := "ctl-a"
	if leader == "ctl-a" {
		other = "ctl-b"
	}
	killedAt := time.Now()
	r[leader].kill9(t)
	testenv.WaitFor(t, 10*time.Second, "the other replica leads", func() bool {
		st, err := status(t, r[other].addr)
		return err == nil && st.Leader == other
	})
	took := time.Since(killedAt)
	t.Logf("leader %s killed; %s leads after %s", leader, other, took)
	if took > 5*time.Second {
		t.Fatalf("failover took %s, want <= 5s", took)
	}
	testenv.WaitFor(t, 30*time.Second, "all agents connected to the survivor", func() bool {
		st := agentStates(t, r[other].addr)
		if len(st) != 3 {
			return false
		}
		for _, a := range st {
			if a.State != "connected" || a.Replica != other {
				return false
			}
		}
		return true
	})
	// The approval still reaches every agent through the survivor.
	ctl, ctx := testenv.Control(t, r[other].addr, "alice")
	resp, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "token on every agent", func() bool {
		st := agentStates(t, r[other].addr) // nil when the RPC fails
		if len(st) != 3 {
			return false
		}
		for _, a := range st {
			if a.FencingToken != resp.Approval.FencingToken {
				return false
			}
		}
		return true
	})
}

func TestKilledOrSilentAgentShownLost(t *testing.T) {
	bin := testenv.Binaries(t)
	cluster := etcdtest.Start(t, 1)
	rep := startReplica(t, bin, "ctl", cluster.Endpoints())
	killed := startAgentProc(t, bin, "web-killed", rep.addr)
	stopped := startAgentProc(t, bin, "web-silent", rep.addr)
	startAgentProc(t, bin, "web-ok", rep.addr)
	testenv.WaitFor(t, 30*time.Second, "3 agents connected", func() bool {
		n := 0
		for _, a := range agentStates(t, rep.addr) {
			if a.State == "connected" {
				n++
			}
		}
		return n == 3
	})
	t0 := time.Now()
	killed.kill9(t)
	// SIGSTOP: the process is alive, its socket open, but it says nothing:
	// what a host behind a silent network looks like to the controller.
	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	lost := map[string]time.Duration{}
	testenv.WaitFor(t, 30*time.Second, "killed and silent agents lost", func() bool {
		st := agentStates(t, rep.addr)
		for _, h := range []string{"web-killed", "web-silent"} {
			if a := st[h]; a != nil && a.State == "lost" {
				if _, ok := lost[h]; !ok {
					lost[h] = time.Since(t0)
				}
			}
		}
		return len(lost) == 2 && st["web-ok"].GetState() == "connected"
	})
	t.Logf("lost after: %v", lost)
	stopped.cmd.Process.Signal(syscall.SIGCONT)
	testenv.WaitFor(t, 30*time.Second, "silent agent back after SIGCONT", func() bool {
		return agentStates(t, rep.addr)["web-silent"].GetState() == "connected"
	})
}

func TestAgentDoesNotImportEtcd(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/golive/golive/cmd/agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "go.etcd.io/") || dep == "github.com/golive/golive/internal/state" {
			t.Errorf("golive-agent depends on %s: only the controller may talk to etcd", dep)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	os.Exit(code)
}
