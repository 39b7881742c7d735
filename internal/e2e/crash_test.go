package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestKill9AtEveryStageBoundary deploys v2 over v1 with an agent that kills
// itself (SIGKILL) at one fault point, restarts the agent, and checks: the
// host serves v1 or v2 completely and healthy, and the controller ends up
// showing what the host really serves. GOLIVE_CRASH_ROUNDS repeats every
// point (make soak).
func TestKill9AtEveryStageBoundary(t *testing.T) {
	rounds := 1
	if v := os.Getenv("GOLIVE_CRASH_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")
	ctl, ctx := testenv.Control(t, ctlAddr, "crash-test")
	testenv.WaitFor(t, 30*time.Second, "controller serving", func() bool {
		_, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	torn := 0
	total := 0
	for round := 0; round < rounds; round++ {
		for i, fp := range deploystep.FaultPoints {
			host := fmt.Sprintf("crash-%d-%d", round, i)
			h := &sampleHost{id: host, port: freePort(t), state: t.TempDir()}
			h.conf = writeAgentConfig(t, host, h.port, h.state)
			run := func(env ...string) *proc {
				return startEnv(t, host, env, filepath.Join(bin, "golive-agent-faultpoints"), "run", "--controller", ctlAddr,
					"--config", h.conf, "--metrics-addr", "", "--grpc-addr", "")
			}
			h.proc = run()
			waitToken(t, ctl, host)
			if r := deployTo(t, ctl, httpAddr, sums, host, "v1"); r.State != "succeeded" {
				t.Fatalf("%s: v1: %s %v", fp, r.State, r.Hosts)
			}
			// kill -9 between steps too: the next agent (which arms the fault
			// point) adopts the service this one leaves running.
			h.cmd.Process.Kill()
			h.cmd.Wait()
			h.proc = run(deploystep.FaultPointEnv + "=" + fp)
			waitToken(t, ctl, host)
			// undo_* points are on the way back from a failed release: v3
			// fails its health check; everything else is on v2's way in.
			v := "v2"
			if strings.HasPrefix(fp, "undo_") {
				v = "v3"
			}
			resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{host},
				ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], MinHealthy: durationpb.New(time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { h.cmd.Wait(); close(exited) }()
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("%s: the agent did not reach its fault point", fp)
			}
			if ws, ok := h.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("%s: the agent exited with %v, not by its fault point's SIGKILL", fp, h.cmd.ProcessState)
			}
			h.proc = run()
			r := finish(t, ctl, ctx, resp.Rollout.Id)
			total++
			got := ""
			testenv.WaitFor(t, 15*time.Second, host+" serving", func() bool { got = h.answers(); return got != "" })
			shown := ""
			testenv.WaitFor(t, 10*time.Second, "controller shows "+host+" serving "+got, func() bool {
				la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
				if err != nil {
					return false
				}
				for _, a := range la.Agents {
					if a.HostId == host && len(a.Services) == 1 {
						shown = a.Services[0].CurrentRelease
						return shown == got && a.Services[0].State == "running"
					}
				}
				return false
			})
			if got != "v1" && got != "v2" {
				torn++
				t.Errorf("%s: host serves %q after crash and recovery", fp, got)
			}
			t.Logf("fault point %-22s rollout %-11s host serves %s, controller shows %s", fp, r.State, got, shown)
			h.stop() // clean exit: the agent stops its service too
		}
	}
	t.Logf("kill -9 at stage boundaries: %d crashes, %d torn hosts", total, torn)
}

// waitToken waits until host's agent, started at or after now, is
// connected and holds the approval token (not a previous agent's stream).
func waitToken(t *testing.T, ctl golivev1.ControlServiceClient, host string) {
	t.Helper()
	since := time.Now().Add(-100 * time.Millisecond)
	testenv.WaitFor(t, 30*time.Second, host+" connected with the token", func() bool {
		la, err := ctl.ListAgents(t.Context(), &golivev1.ListAgentsRequest{})
		if err != nil {
			return false
		}
		for _, a := range la.Agents {
			if a.HostId == host {
				return a.State == "connected" && a.FencingToken != 0 && a.ConnectedAt.AsTime().After(since)
			}
		}
		return false
	})
}

func deployTo(t *testing.T, ctl golivev1.ControlServiceClient, httpAddr string, sums map[string]string, host, v string) *golivev1.Rollout {
	t.Helper()
	resp, err := ctl.Deploy(t.Context(), &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{host},
		ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], MinHealthy: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return finish(t, ctl, t.Context(), resp.Rollout.Id)
}
