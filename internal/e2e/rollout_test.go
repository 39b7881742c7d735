package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// fleet is a controller (or several) and n agent processes running the
// sample service, v1 deployed everywhere.
type fleet struct {
	t        *testing.T
	bin      string
	sums     map[string]string
	httpAddr string
	addrs    []string
	ctl      golivev1.ControlServiceClient
	ctx      context.Context
	hosts    []*sampleHost
	token    int64
}

// startFleet starts a controller on embedded etcd, unless replicas (with
// artifactsAddr serving /artifacts/) are given.
func startFleet(t *testing.T, n int, replicas []string, artifactsAddr string) *fleet {
	t.Helper()
	f := &fleet{t: t, bin: testenv.Binaries(t), httpAddr: artifactsAddr}
	rel, sums := testenv.Releases(t)
	f.sums = sums
	if replicas == nil {
		ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
		start(t, "controller", filepath.Join(f.bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
			"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
			"--artifacts-dir", rel, "--heartbeat-interval", "1s")
		f.addrs, f.httpAddr = []string{ctlAddr}, httpAddr
	} else {
		f.addrs = replicas
	}
	f.ctl, f.ctx = testenv.Control(t, f.addrs[0], "alice")
	for i := 1; i <= n; i++ {
		f.hosts = append(f.hosts, startSampleHost(t, f.bin, strings.Join(f.addrs, ","), fmt.Sprintf("web-%d", i)))
	}
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d agents connected", n), func() bool {
		st, err := f.ctl.Status(f.ctx, &golivev1.StatusRequest{})
		return err == nil && int(st.AgentsConnected) == n
	})
	f.authorize()
	if r := f.deploy("v1", 0, "", time.Second); r.State != "succeeded" {
		t.Fatalf("v1: %s %s", r.State, r.Reason)
	}
	return f
}

func (f *fleet) authorize() {
	f.t.Helper()
	resp, err := f.ctl.Authorize(f.ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		f.t.Fatal(err)
	}
	f.token = resp.Approval.FencingToken
	// Every host's agent: a failed or short listing is no proof.
	// The token an agent holds is shown live by the replica that holds its
	// stream (other replicas see it as of the record's last write): ask
	// every replica.
	type client struct {
		ctl golivev1.ControlServiceClient
		ctx context.Context
	}
	var ctls []client
	for _, addr := range f.addrs {
		ctl, ctx := testenv.Control(f.t, addr, "alice")
		ctls = append(ctls, client{ctl, ctx})
	}
	testenv.WaitFor(f.t, 30*time.Second, "agents hold the token", func() bool {
		holding := map[string]bool{}
		for _, c := range ctls {
			la, err := c.ctl.ListAgents(c.ctx, &golivev1.ListAgentsRequest{})
			if err != nil {
				return false
			}
			for _, a := range la.Agents {
				if a.State == "connected" && a.FencingToken == f.token {
					holding[a.HostId] = true
				}
			}
		}
		return len(holding) == len(f.hosts)
	})
}

func (f *fleet) start(v string, canary uint32, batch string, bake time.Duration) string {
	f.t.Helper()
	artifactHost := f.httpAddr
	resp, err := f.ctl.Deploy(f.ctx, &golivev1.DeployRequest{Service: "app", Release: v, Canary: canary, Batch: batch,
		MinHealthy: durationpb.New(bake), ArtifactUrl: "http://" + artifactHost + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: f.sums[v]})
	if err != nil {
		f.t.Fatalf("deploy %s: %v", v, err)
	}
	return resp.Rollout.Id
}

func (f *fleet) deploy(v string, canary uint32, batch string, bake time.Duration) *golivev1.Rollout {
	f.t.Helper()
	return finish(f.t, f.ctl, f.ctx, f.start(v, canary, batch, bake))
}

func (f *fleet) rollout(id string) *golivev1.Rollout {
	resp, err := f.ctl.GetRollout(f.ctx, &golivev1.GetRolloutRequest{Id: id})
	if err != nil {
		return nil
	}
	return resp.Rollout
}

func (f *fleet) waitState(id string, states ...string) *golivev1.Rollout {
	f.t.Helper()
	var r *golivev1.Rollout
	testenv.WaitFor(f.t, 60*time.Second, "rollout "+id+" in "+strings.Join(states, "|"), func() bool {
		r = f.rollout(id)
		if r == nil {
			return false
		}
		for _, s := range states {
			if r.State == s {
				return true
			}
		}
		return false
	})
	return r
}

func (f *fleet) serving() map[string]string {
	out := map[string]string{}
	for _, h := range f.hosts {
		out[h.id] = h.answers()
	}
	return out
}

func (f *fleet) allServe(v string) {
	f.t.Helper()
	for id, got := range f.serving() {
		if got != v {
			f.t.Fatalf("%s serves %q, want %s (all: %v)", id, got, v, f.serving())
		}
	}
}

// deploysStarted counts "step started ... kind=deploy" lines per host in the
// agents' own logs: the test's ground truth for "no host deployed twice".
func (f *fleet) deploysStarted(release string) map[string]int {
	out := map[string]int{}
	for _, h := range f.hosts {
		for _, line := range strings.Split(h.out.String(), "\n") {
			if strings.Contains(line, "step started") && strings.Contains(line, "kind=deploy") && strings.Contains(line, "release="+release) {
				out[h.id]++
			}
		}
	}
	return out
}

func TestRolloutCanaryWavesGateFailureAndFleetRollback(t *testing.T) {
	f := startFleet(t, 5, nil, "")
	r := f.deploy("v2", 1, "2", time.Second)
	if r.State != "succeeded" || len(r.Waves) != 3 {
		t.Fatalf("v2: %s %q waves=%d", r.State, r.Reason, len(r.Waves))
	}
	f.allServe("v2")
	for h, n := range f.deploysStarted("v2") {
		if n != 1 {
			t.Fatalf("%s started v2 %d times", h, n)
		}
	}
	// v3 fails health: the canary's gate fails and only the canary was
	// touched; it is back on v2, nobody else ever saw v3.
	r = f.deploy("v3", 1, "2", time.Second)
	if r.State != "rolled_back" {
		t.Fatalf("v3: %s %q", r.State, r.Reason)
	}
	f.allServe("v2")
	started := f.deploysStarted("v3")
	if len(started) != 1 || started["web-1"] != 1 {
		t.Fatalf("v3 reached %v, want only the canary web-1", started)
	}
	// History tells the story.
	h, err := f.ctl.ListRollouts(f.ctx, &golivev1.ListRolloutsRequest{Service: "app"})
	if err != nil || len(h.Rollouts) != 3 || h.Rollouts[0].State != "rolled_back" || h.Rollouts[1].State != "succeeded" {
		t.Fatalf("history: %v %v", h, err)
	}
}

func TestRolloutGateFailsClosedOnLostHostAndRollsBackTouchedHosts(t *testing.T) {
	f := startFleet(t, 5, nil, "")
	// Canary web-1, then waves of 2, with a 20 s bake: kill -9 the canary's
	// agent while the first wave bakes.
	id := f.start("v2", 1, "2", 20*time.Second)
	testenv.WaitFor(t, 60*time.Second, "canary baking", func() bool {
		r := f.rollout(id)
		return r != nil && r.Gate != nil
	})
	f.hosts[0].kill9(t)
	r := f.waitState(id, "rolling_back", "failed", "rolled_back")
	t.Logf("with the canary's agent gone: %s %q", r.State, r.Reason)
	// The fleet rollback waits for the lost host: bring its agent back (it
	// adopts its service and gets the pending rollback command).
	h := f.hosts[0]
	h.proc = startEnv(t, h.id, nil, filepath.Join(f.bin, "golive-agent"), "run", "--controller", f.addrs[0], "--config", h.conf,
		"--metrics-addr", "", "--grpc-addr", "")
	r = finish(t, f.ctl, f.ctx, id)
	if r.State != "rolled_back" {
		t.Fatalf("with a lost canary: %s %q", r.State, r.Reason)
	}
	if !strings.Contains(r.Reason, "web-1") {
		t.Fatalf("reason %q does not name the lost host", r.Reason)
	}
	f.allServe("v1")
}

func TestRolloutHaltsOnRevokeAndResumesWithoutRedoingHosts(t *testing.T) {
	f := startFleet(t, 5, nil, "")
	id := f.start("v2", 1, "1", 3*time.Second)
	testenv.WaitFor(t, 60*time.Second, "wave 1 reached", func() bool {
		r := f.rollout(id)
		return r != nil && r.CurrentWave >= 1
	})
	if _, err := f.ctl.Revoke(f.ctx, &golivev1.RevokeRequest{Reason: "stop!"}); err != nil {
		t.Fatal(err)
	}
	r := f.waitState(id, "halted")
	t.Logf("halted at wave %d: %s", r.CurrentWave, r.Reason)
	// Halted means halted: nothing new starts while there is no approval.
	before := f.deploysStarted("v2")
	if _, err := f.ctl.ResumeRollout(f.ctx, &golivev1.ResumeRolloutRequest{Id: id}); err == nil {
		t.Fatal("resume without approval accepted")
	}
	f.authorize()
	if _, err := f.ctl.ResumeRollout(f.ctx, &golivev1.ResumeRolloutRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	r = finish(t, f.ctl, f.ctx, id)
	if r.State != "succeeded" {
		t.Fatalf("after resume: %s %q", r.State, r.Reason)
	}
	f.allServe("v2")
	after := f.deploysStarted("v2")
	for h, n := range after {
		if n > 1 && before[h] != n-1 {
			t.Fatalf("%s deployed v2 %d times", h, n)
		}
	}
	if len(after) != 5 {
		t.Fatalf("v2 reached %d hosts: %v", len(after), after)
	}
}

func TestRolloutPauseAfterCanaryThenAbort(t *testing.T) {
	f := startFleet(t, 5, nil, "")
	resp, err := f.ctl.Deploy(f.ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", Canary: 1, Batch: "2", PauseAfterCanary: true,
		MinHealthy: durationpb.New(time.Second), ArtifactUrl: "http://" + f.httpAddr + "/artifacts/sampleapp-v2.tar.gz", Sha256: f.sums["v2"]})
	if err != nil {
		t.Fatal(err)
	}
	r := f.waitState(resp.Rollout.Id, "halted")
	if got := f.serving(); got["web-1"] != "v2" || got["web-2"] != "v1" {
		t.Fatalf("paused after canary but serving %v", got)
	}
	// Abort is the safety path: no approval needed; touched hosts go back.
	if _, err := f.ctl.Revoke(f.ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ctl.AbortRollout(f.ctx, &golivev1.AbortRolloutRequest{Id: r.Id, Reason: "changed my mind"}); err != nil {
		t.Fatal(err)
	}
	r = finish(t, f.ctl, f.ctx, r.Id)
	if r.State != "aborted" {
		t.Fatalf("abort: %s %q", r.State, r.Reason)
	}
	f.allServe("v1")
}

func TestRolloutSurvivesLeaderKill9AndStaleLeaderIsFenced(t *testing.T) {
	bin := testenv.Binaries(t)
	rel, _ := testenv.Releases(t)
	cluster := etcdtest.Start(t, 3)
	// Artifacts come from a server of their own, so that killing a replica
	// does not take them away.
	art := httptest.NewServer(http.StripPrefix("/artifacts/", http.FileServer(http.Dir(rel))))
	t.Cleanup(art.Close)
	reps := map[string]*proc{}
	addrs := map[string]string{}
	for _, id := range []string{"ctl-a", "ctl-b"} {
		addr := etcdtest.FreeAddr(t)
		addrs[id] = addr
		reps[id] = start(t, id, filepath.Join(bin, "golive-controller"), "serve", "--listen", addr, "--metrics-addr", etcdtest.FreeAddr(t),
			"--etcd-endpoints", strings.Join(cluster.Endpoints(), ","), "--replica-id", id, "--leader-ttl", "3s",
			"--heartbeat-interval", "1s")
	}
	f := startFleet(t, 5, []string{addrs["ctl-a"], addrs["ctl-b"]}, strings.TrimPrefix(art.URL, "http://"))
	leader := func(via string) string {
		st, err := status(t, addrs[via])
		if err != nil {
			return ""
		}
		return st.Leader
	}
	var lead string
	testenv.WaitFor(t, 10*time.Second, "a leader", func() bool { lead = leader("ctl-a"); return lead != "" })
	other := map[string]string{"ctl-a": "ctl-b", "ctl-b": "ctl-a"}[lead]
	f.ctl, f.ctx = testenv.Control(t, addrs[other], "alice")

	id := f.start("v2", 1, "1", 2*time.Second)
	testenv.WaitFor(t, 60*time.Second, "wave 1 reached", func() bool {
		r := f.rollout(id)
		return r != nil && r.CurrentWave >= 1
	})
	// Stale leader: SIGSTOP it past its session TTL; the other takes over.
	if err := reps[lead].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took := testenv.WaitFor(t, 15*time.Second, other+" leads", func() bool { return leader(other) == other })
	t.Logf("%s took over %s after %s was stopped", other, took, lead)
	contAt := len(reps[lead].out.String())
	reps[lead].cmd.Process.Signal(syscall.SIGCONT)
	r := finish(t, f.ctl, f.ctx, id)
	if r.State != "succeeded" {
		t.Fatalf("rollout after failover: %s %q", r.State, r.Reason)
	}
	// The stale leader, woken up, committed nothing: no wave, no rollback,
	// no state change of the rollout came from it.
	after := reps[lead].out.String()[contAt:]
	// On a loaded machine the woken replica may win a later election
	// fairly (the other's session lapsing in turn): what it does once it
	// leads again is not stale. Judge only what it logged before.
	if i := strings.Index(after, "golive-controller: leading:"); i >= 0 {
		after = after[:i]
	}
	for _, committed := range []string{"wave started", "rolling back", "rollout state"} {
		if strings.Contains(after, committed) {
			t.Fatalf("the stale leader %s logged %q after SIGCONT:\n%s", lead, committed, after)
		}
	}
	f.allServe("v2")
	for h, n := range f.deploysStarted("v2") {
		if n != 1 {
			t.Fatalf("%s started v2 %d times (fencing or resume broken)", h, n)
		}
	}
	if n := len(f.deploysStarted("v2")); n != 5 {
		t.Fatalf("v2 reached %d of 5 hosts", n)
	}

	// Now kill -9 whoever leads, mid-rollout (back to v1, bake 2s per wave).
	lead = leader(other)
	id = f.start("v1", 1, "1", 2*time.Second)
	testenv.WaitFor(t, 60*time.Second, "v1 wave 1 reached", func() bool {
		r := f.rollout(id)
		return r != nil && r.CurrentWave >= 1
	})
	survivor := map[string]string{"ctl-a": "ctl-b", "ctl-b": "ctl-a"}[lead]
	f.ctl, f.ctx = testenv.Control(t, addrs[survivor], "alice")
	killed := time.Now()
	reps[lead].kill9(t)
	testenv.WaitFor(t, 10*time.Second, survivor+" leads", func() bool { return leader(survivor) == survivor })
	t.Logf("after kill -9 of %s, %s leads in %s", lead, survivor, time.Since(killed))
	r = finish(t, f.ctl, f.ctx, id)
	if r.State != "succeeded" && r.State != "rolled_back" {
		t.Fatalf("rollout after leader kill -9: %s %q", r.State, r.Reason)
	}
	for h, n := range f.deploysStarted("v1") {
		if n > 2 { // v1 once at setup, once now
			t.Fatalf("%s started v1 %d times", h, n)
		}
	}
}
