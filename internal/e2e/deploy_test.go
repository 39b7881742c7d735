package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// freePort is a port for a sample service to bind later. It comes from
// below Linux's ephemeral range (32768-60999): a port the kernel handed out
// for ":0" is also what outgoing connections draw from, and one of them
// could take it before the service binds it (the service then exits
// "address in use").
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// sampleHost is an agent process running the sample service.
type sampleHost struct {
	*proc
	id    string
	port  int
	state string
	conf  string
}

func writeAgentConfig(t *testing.T, host string, port int, state string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = %q
state_dir = %q
labels    = { role = "web" }
service "app" {
  port = %d
  keep_releases = 3
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
`, host, state, port)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

func startSampleHost(t *testing.T, bin, ctlAddr, host string, env ...string) *sampleHost {
	t.Helper()
	h := &sampleHost{id: host, port: freePort(t), state: t.TempDir()}
	h.conf = writeAgentConfig(t, host, h.port, h.state)
	h.proc = startEnv(t, host, env, filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--config", h.conf,
		"--metrics-addr", "", "--grpc-addr", "")
	return h
}

// answers is what the host's sample service says at /version ("" if down).
func (h *sampleHost) answers() string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/version", h.port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func TestDeployRollBackAndOperatorRollbackOnThreeHosts(t *testing.T) {
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")
	var hosts []*sampleHost
	var ids []string
	for i := 1; i <= 3; i++ {
		h := startSampleHost(t, bin, ctlAddr, fmt.Sprintf("web-%d", i))
		hosts = append(hosts, h)
		ids = append(ids, h.id)
	}
	ctl, ctx := testenv.Control(t, ctlAddr, "alice")
	testenv.WaitFor(t, 30*time.Second, "3 agents connected", func() bool {
		st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 3
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "agents hold the token", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(la.Agents) != 3 {
			return false
		}
		for _, a := range la.Agents {
			if a.FencingToken == 0 {
				return false
			}
		}
		return true
	})
	deploy := func(v string) *golivev1.Rollout {
		t.Helper()
		resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: ids,
			ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], MinHealthy: durationpb.New(time.Second)})
		if err != nil {
			t.Fatalf("deploy %s: %v", v, err)
		}
		return finish(t, ctl, ctx, resp.Rollout.Id)
	}
	for _, v := range []string{"v1", "v2"} {
		r := deploy(v)
		if r.State != "succeeded" {
			t.Fatalf("deploy %s: rollout %s %s: %v", v, r.State, r.Reason, r.Hosts)
		}
		for _, h := range hosts {
			if got := h.answers(); got != v {
				t.Fatalf("%s answers %q after deploying %s", h.id, got, v)
			}
		}
	}
	// v3 fails its health check on the canary host, which swaps back by
	// itself; the gate fails and every touched host is rolled back.
	r := deploy("v3")
	if r.State != "rolled_back" {
		t.Fatalf("v3: rollout %s %q, want rolled_back", r.State, r.Reason)
	}
	for _, hp := range r.Hosts {
		if hp.State != "waiting" && (!strings.HasPrefix(hp.State, "rollback_succeeded") || !strings.Contains(hp.Error, "health")) {
			t.Fatalf("v3 on %s: %s %q, want rolled back after failing health", hp.HostId, hp.State, hp.Error)
		}
	}
	for _, h := range hosts {
		if got := h.answers(); got != "v2" {
			t.Fatalf("%s answers %q after v3 was rolled back", h.id, got)
		}
	}
	// The controller comes to show the true state (host status arrives
	// with the agents' reports, not with the rollout's end).
	var shown []*golivev1.Agent
	testenv.WaitFor(t, 30*time.Second, "the controller shows v2 on every host", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(la.Agents) != 3 {
			return false
		}
		shown = la.Agents
		for _, a := range la.Agents {
			if len(a.Services) != 1 || a.Services[0].CurrentRelease != "v2" {
				return false
			}
		}
		return true
	})
	for _, a := range shown {
		t.Logf("%s shows %v", a.HostId, a.Services)
	}
	// The operator's rollback, without approval: back to v1 everywhere.
	if _, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	rb, err := ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", Hosts: ids})
	if err != nil {
		t.Fatal(err)
	}
	if r := finish(t, ctl, ctx, rb.Rollout.Id); r.State != "succeeded" {
		t.Fatalf("rollback: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	for _, h := range hosts {
		if got := h.answers(); got != "v1" {
			t.Fatalf("%s answers %q after rollback", h.id, got)
		}
	}
}

func finish(t *testing.T, ctl golivev1.ControlServiceClient, ctx context.Context, id string) *golivev1.Rollout {
	t.Helper()
	var r *golivev1.Rollout
	testenv.WaitFor(t, 60*time.Second, "rollout "+id+" to finish", func() bool {
		resp, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err != nil {
			return false
		}
		r = resp.Rollout
		switch r.State {
		case "succeeded", "failed", "rolled_back", "aborted":
			return true
		}
		return false
	})
	return r
}
