package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// writeSlowHealthConfig is writeAgentConfig with a health check that needs
// many successes in a row (about 10 s of probing): a step spends long
// enough in its health stage, with the new release already serving, for a
// test to freeze the agent there and let it resume with the stage still
// running.
func writeSlowHealthConfig(t *testing.T, host string, port int, state string) string {
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
    interval  = "100ms"
    timeout   = "1s"
    successes = 100
    deadline  = "3m"
  }
}
`, host, state, port)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// serviceStarts lists the releases of the sample service's process starts
// in an agent's log, in order ("service started ... release_dir=.../v1").
var startLine = regexp.MustCompile(`service started.*release_dir=\S*/([^/\s]+)`)

func serviceStarts(log string) []string {
	var out []string
	for _, m := range startLine.FindAllStringSubmatch(log, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestFrozenAgentMidDeploy freezes a real agent process (SIGSTOP) in the
// health stage of a deploy of v2 over v1, with v2 already serving, for
// longer than the controller's lost threshold: the controller shows the
// host lost (not connected with a release it does not serve), the rollout
// fails its gate on the lost host and queues the host's rollback. After
// SIGCONT the agent finds its stream gone, halts its step saying it lost
// its controller (the approval itself is live), swaps back to v1, and the
// queued rollback to v1 is a no-op: v1 is started once after the thaw, not
// twice. At the end the host serves what `agents` shows.
func TestFrozenAgentMidDeploy(t *testing.T) {
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")
	ctl, ctx := testenv.Control(t, ctlAddr, "freeze-test")
	testenv.WaitFor(t, 60*time.Second, "controller serving", func() bool {
		_, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	const host = "frozen-1"
	h := &sampleHost{id: host, port: freePort(t), state: t.TempDir()}
	h.conf = writeSlowHealthConfig(t, host, h.port, h.state)
	h.proc = start(t, host, filepath.Join(bin, "golive-agent-faultpoints"), "run", "--controller", ctlAddr,
		"--config", h.conf, "--metrics-addr", "", "--grpc-addr", "")
	waitToken(t, ctl, host)
	if r := deployTo(t, ctl, httpAddr, sums, host, "v1"); r.State != "succeeded" {
		t.Fatalf("v1: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	agentOf := func() *golivev1.Agent {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return nil
		}
		for _, a := range la.Agents {
			if a.HostId == host {
				return a
			}
		}
		return nil
	}
	resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", Hosts: []string{host},
		ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-v2.tar.gz", Sha256: sums["v2"], MinHealthy: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Rollout.Id
	// v2 serves and the agent is probing it (its health stage runs ~10 s).
	testenv.WaitFor(t, 60*time.Second, "v2 serving, the step in its health stage", func() bool {
		a := agentOf()
		return a != nil && len(a.Services) == 1 && a.Services[0].Stage == "health" && h.answers() == "v2"
	})
	startsBefore := len(serviceStarts(h.out.String()))
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			h.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer thaw()
	var shown *golivev1.Agent
	lostAfter := testenv.WaitFor(t, 45*time.Second, host+" shown lost while frozen", func() bool {
		shown = agentOf()
		return shown != nil && shown.State == "lost"
	})
	t.Logf("frozen agent shown lost %s after SIGSTOP (last heartbeat %s before; shows %v)", lostAfter.Round(time.Millisecond),
		frozen.Sub(shown.LastHeartbeat.AsTime()).Round(time.Millisecond), shown.Services)
	if shown.FencingToken != 0 {
		t.Errorf("a lost agent is shown holding token %d", shown.FencingToken)
	}
	// What the lost record names is what the host serves: the agent's
	// state went out with the stage that followed the swap.
	if got := h.answers(); len(shown.Services) != 1 || shown.Services[0].CurrentRelease != got {
		t.Errorf("while frozen: agents shows %v, the host serves %q", shown.Services, got)
	}
	var r *golivev1.Rollout
	gateAfter := testenv.WaitFor(t, 45*time.Second, "the rollout's gate failing on the lost host", func() bool {
		g, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err != nil {
			return false
		}
		r = g.Rollout
		return r.State == "rolling_back" || r.State == "rolled_back" || r.State == "failed"
	})
	t.Logf("rollout %s %s %s after SIGSTOP (%s after the host was shown lost): %s", id, r.State, time.Since(frozen).Round(time.Millisecond),
		gateAfter.Round(time.Millisecond), r.Reason)
	if !strings.Contains(r.Reason, host+" is lost") {
		t.Errorf("rollout reason %q does not name the lost host", r.Reason)
	}
	thaw()
	thawedAt := time.Now()
	t.Logf("SIGCONT after %s frozen", thawedAt.Sub(frozen).Round(time.Millisecond))

	r = finish(t, ctl, ctx, id)
	if r.State != "rolled_back" {
		t.Errorf("rollout %s %q, want rolled_back", r.State, r.Reason)
	}
	// Settled: connected with the token, not deploying, running what it
	// serves, and the controller shows exactly that.
	var final *golivev1.Agent
	served := ""
	testenv.WaitFor(t, 90*time.Second, host+" settled and shown as it is", func() bool {
		final = agentOf()
		served = h.answers()
		if final == nil || final.State != "connected" || final.FencingToken == 0 || len(final.Services) != 1 {
			return false
		}
		s := final.Services[0]
		return served != "" && s.State == "running" && s.CurrentRelease == served && len(final.RecentResults) > 0 &&
			final.RecentResults[0].CommandId != "" && !strings.HasPrefix(final.RecentResults[0].CommandId, "pf-") && unackedGone(final, r)
	})
	t.Logf("rollout %s and the host settled %s after SIGCONT: host serves %s, agents shows %s %s", r.State, time.Since(thawedAt).Round(time.Millisecond), served,
		final.Services[0].CurrentRelease, final.Services[0].State)
	if served != "v1" {
		t.Errorf("after the rollback the host serves %q, want v1", served)
	}
	starts := serviceStarts(h.out.String())
	after := starts[startsBefore:]
	t.Logf("service starts: %v (after SIGCONT: %v)", starts, after)
	if len(after) > 1 {
		t.Errorf("the service was started %d times after SIGCONT (%v), want at most once", len(after), after)
	}
	for _, hp := range r.Hosts {
		t.Logf("rollout host %s: %s %q", hp.HostId, hp.State, hp.Error)
	}
	for _, res := range final.RecentResults {
		t.Logf("result %s %s %s@%s unchanged=%t: %s", res.CommandId, res.Outcome, res.Service, res.Release, res.Unchanged, res.Error)
		if strings.Contains(res.Error, "approval ended") {
			t.Errorf("result %s says %q: the approval was live, the agent lost its controller", res.CommandId, res.Error)
		}
	}
	var halted *golivev1.CommandResult
	for _, res := range final.RecentResults {
		if res.Release == "v2" {
			halted = res
		}
	}
	if halted == nil || halted.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED || !strings.Contains(halted.Error, "lost its controller") {
		t.Errorf("the deploy of v2: %v; want cancelled, halted because the agent lost its controller", halted)
	}
}

// unackedGone reports whether the agent's results include every command
// the rollout sent it (the deploy and its rollback): nothing is left to
// report.
func unackedGone(a *golivev1.Agent, r *golivev1.Rollout) bool {
	have := map[string]bool{}
	for _, res := range a.RecentResults {
		have[res.CommandId] = true
	}
	for _, hp := range r.Hosts {
		if hp.CommandId != "" && !have[hp.CommandId] {
			return false
		}
	}
	return true
}
