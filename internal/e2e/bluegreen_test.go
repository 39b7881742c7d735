package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// writeBlueGreenConfig is an agent config whose service "app" is blue-green
// behind nginx n.
func writeBlueGreenConfig(t *testing.T, host, state string, ports router.Ports, n *routertest.Nginx) string {
	t.Helper()
	var reload []string
	for _, a := range n.ReloadCommand() {
		reload = append(reload, fmt.Sprintf("%q", a))
	}
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = %q
state_dir = %q
labels    = { role = "web" }
service "app" {
  swap_mode     = "blue-green"
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
  blue_green {
    blue_port     = %d
    green_port    = %d
    keep_warm     = "10m"
    drain_timeout = "2s"
    router {
      kind          = "nginx"
      upstream_file = %q
      reload        = [%s]
      probe_url     = %q
    }
  }
}
`, host, state, ports.Blue, ports.Green, n.UpstreamFile, strings.Join(reload, ", "), n.URL("/"))
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// throughNginx is what nginx answers at /version ("" on error).
func throughNginx(n *routertest.Nginx) string {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(n.URL("/version"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// slotPID is the pid the exec pidfile of slot records.
func slotPID(t *testing.T, state string, slot string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "services", "app", "app-"+slot+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.PID
}

// TestBlueGreenBehindNginx: a real agent process with a blue-green service
// behind a real nginx, driven through the controller: v1, then v2 with a
// 10% canary weight; the heartbeat names the active slot; the operator's
// rollback is a switch back to the warm v1 slot (same process); then the
// agent is killed -9 inside the switch of a new deploy and, restarted,
// finishes it: one slot serves, the one current names.
func TestBlueGreenBehindNginx(t *testing.T) {
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")
	ports := router.Ports{Blue: freePort(t), Green: freePort(t)}
	n := routertest.StartNginx(t, router.UpstreamName("app"), ports)
	host, state := "bg-1", t.TempDir()
	conf := writeBlueGreenConfig(t, host, state, ports, n)
	run := func(env ...string) *proc {
		return startEnv(t, host, env, filepath.Join(bin, "golive-agent-faultpoints"), "run", "--controller", ctlAddr,
			"--config", conf, "--metrics-addr", "", "--grpc-addr", "")
	}
	ctl, ctx := testenv.Control(t, ctlAddr, "alice")
	testenv.WaitFor(t, 30*time.Second, "controller serving", func() bool {
		_, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p := run()
	waitToken(t, ctl, host)
	shows := func(release string) (slot string) {
		t.Helper()
		testenv.WaitFor(t, 10*time.Second, "controller shows "+release, func() bool {
			la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
			if err != nil {
				return false
			}
			for _, a := range la.Agents {
				if a.HostId == host && len(a.Services) == 1 {
					s := a.Services[0]
					slot = s.ActiveSlot
					return s.CurrentRelease == release && s.State == "running" && slot != ""
				}
			}
			return false
		})
		return slot
	}
	if r := deployTo(t, ctl, httpAddr, sums, host, "v1"); r.State != "succeeded" {
		t.Fatalf("v1: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := throughNginx(n); got != "v1" {
		t.Fatalf("nginx answers %q after v1", got)
	}
	slot1 := shows("v1")

	resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", Hosts: []string{host}, WeightPercent: 10,
		ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-v2.tar.gz", Sha256: sums["v2"], MinHealthy: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if r := finish(t, ctl, ctx, resp.Rollout.Id); r.State != "succeeded" {
		t.Fatalf("v2: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := throughNginx(n); got != "v2" {
		t.Fatalf("nginx answers %q after v2", got)
	}
	slot2 := shows("v2")
	if slot2 == slot1 {
		t.Fatalf("v2 serves from slot %s, as v1 did", slot2)
	}
	pid1 := slotPID(t, state, slot1)
	if syscall.Kill(pid1, 0) != nil {
		t.Fatalf("v1's slot %s (pid %d) is not kept warm", slot1, pid1)
	}

	// The operator's rollback: a switch back to the warm slot.
	if _, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	rb, err := ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", Hosts: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	if r := finish(t, ctl, ctx, rb.Rollout.Id); r.State != "succeeded" {
		t.Fatalf("rollback: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := throughNginx(n); got != "v1" {
		t.Fatalf("nginx answers %q after the rollback", got)
	}
	if got := shows("v1"); got != slot1 {
		t.Fatalf("after the rollback slot %s serves, want %s", got, slot1)
	}
	if got := slotPID(t, state, slot1); got != pid1 {
		t.Fatalf("the rollback restarted slot %s: pid %d, was %d", slot1, got, pid1)
	}

	// kill -9 inside the switch of a new deploy of v2.
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p = run(deploystep.FaultPointEnv + "=inside_switch")
	waitToken(t, ctl, host)
	resp, err = ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", Hosts: []string{host},
		ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-v2.tar.gz", Sha256: sums["v2"], MinHealthy: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not reach inside_switch")
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the agent exited with %v, not by its fault point", p.cmd.ProcessState)
	}
	_ = run()
	r := finish(t, ctl, ctx, resp.Rollout.Id)
	t.Logf("deploy killed inside the switch: rollout %s %s", r.State, r.Reason)
	if r.State != "succeeded" {
		t.Fatalf("after the crash: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := shows("v2"); got != slot2 {
		t.Fatalf("after recovery slot %s serves, want %s", got, slot2)
	}
	if got := throughNginx(n); got != "v2" {
		t.Fatalf("nginx answers %q after recovery", got)
	}
}
