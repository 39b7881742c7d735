package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const zeroSHA = "0000000000000000000000000000000000000000000000000000000000000000"

// preflightHost starts an in-process agent whose service "app" requires
// the secret API_KEY; withSecret says whether its env file sets it.
func preflightHost(t *testing.T, host, ctlAddr string, withSecret bool) *testenv.Agent {
	t.Helper()
	state := t.TempDir()
	d, err := releasedir.Open(state, "app")
	if err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(t.TempDir(), "app.env")
	body := "OTHER=1\n"
	if withSecret {
		body += "API_KEY=e2e-canary-value\n"
	}
	if err := os.WriteFile(env, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := agentconfig.DefaultService("app")
	cfg.Exec = &agentconfig.Exec{EnvFile: env}
	cfg.Preflight.RequiredSecrets = []string{"API_KEY"}
	svc := agent.Service{Name: "app", SwapMode: "restart", Dir: d, Config: cfg, StateDir: state}
	return testenv.StartAgent(t, host, state, []agent.Service{svc}, ctlAddr)
}

// commandLog records every command written to etcd from now on, with the
// host it was written for. It watches on a client of its own, so the
// progress requests of sync reach only its watch.
type commandLog struct {
	cli   *clientv3.Client
	start int64 // revision the log starts after

	mu   sync.Mutex
	rev  int64 // every put up to this revision is in cmds
	cmds []hostCommand
}

type hostCommand struct {
	host string
	cmd  *golivev1.Command
}

func watchCommands(t *testing.T, c *testenv.Controller) *commandLog {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Client().Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		cli.Close()
	})
	prefix := c.Keys().Commands()
	rev, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	l := &commandLog{cli: cli, start: rev.Header.Revision, rev: rev.Header.Revision}
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(l.start+1))
	go func() {
		defer close(done)
		for wr := range wch {
			l.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				host, _, _ := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), prefix), "/")
				cmd := &golivev1.Command{}
				if protojson.Unmarshal(ev.Kv.Value, cmd) == nil {
					l.cmds = append(l.cmds, hostCommand{host, cmd})
				}
			}
			if wr.Header.Revision > l.rev {
				l.rev = wr.Header.Revision
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// sync waits until the log holds every command written so far: until its
// watch has reported a revision at least etcd's current one.
func (l *commandLog) sync(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	now, err := l.cli.Get(ctx, "sync", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "the command log to reach the current revision", func() bool {
		l.mu.Lock()
		caught := l.rev >= now.Header.Revision
		l.mu.Unlock()
		if !caught {
			l.cli.RequestProgress(ctx)
		}
		return caught
	})
}

// counts returns how many preflight and other commands were written.
func (l *commandLog) counts() (preflights, others int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.cmds {
		if c.cmd.GetPreflight() != nil {
			preflights++
		} else {
			others++
		}
	}
	return preflights, others
}

// deployedHosts lists the hosts that were sent a deploy command of rollout
// id, sorted.
func (l *commandLog) deployedHosts(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var hosts []string
	for _, c := range l.cmds {
		if c.cmd.GetDeploy() != nil && c.cmd.GetRolloutId() == id && !slices.Contains(hosts, c.host) {
			hosts = append(hosts, c.host)
		}
	}
	slices.Sort(hosts)
	return hosts
}

func checkOf(h *golivev1.HostChecks, name string) *golivev1.CheckResult {
	for _, c := range h.Checks {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestPreflight: the Preflight RPC asks both hosts and sums up; one host
// missing a secret makes the run not ok, names the key and never its
// value, and leaves no command or result behind. A deploy whose preflight
// fails ends failed before any host is commanded; with --skip-check it
// proceeds, and the skip is recorded and audited.
func TestPreflight(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	a1 := preflightHost(t, "web-1", c.GRPCAddr(), true)
	a2 := preflightHost(t, "web-2", c.GRPCAddr(), false)
	testenv.WaitFor(t, 10*time.Second, "agents connected", func() bool { return a1.Connected() && a2.Connected() })
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 10*time.Second, "agents listed with their service", func() bool {
		r, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		n := 0
		for _, a := range r.GetAgents() {
			if a.State == "connected" && len(a.Services) == 1 {
				n++
			}
		}
		return err == nil && n == 2
	})
	cmds := watchCommands(t, c)

	// No approval is needed to check.
	start := time.Now()
	resp, err := ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Release: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("preflight of 2 hosts took %s", time.Since(start).Round(time.Millisecond))
	if resp.Ok || len(resp.Hosts) != 2 || resp.Hosts[0].HostId != "web-1" || resp.Hosts[1].HostId != "web-2" {
		t.Fatalf("preflight = %v, want web-1 and web-2, not ok", resp)
	}
	for _, h := range resp.Hosts {
		if h.Error != "" || len(h.Checks) != 3 {
			t.Fatalf("host %s: error %q, %d checks (want secrets, disk, previous-release)", h.HostId, h.Error, len(h.Checks))
		}
	}
	if s := checkOf(resp.Hosts[0], "secrets"); s.GetStatus() != "pass" {
		t.Errorf("web-1 secrets = %v, want pass", s)
	}
	s2 := checkOf(resp.Hosts[1], "secrets")
	if s2.GetStatus() != "fail" || !strings.Contains(s2.Detail, "missing API_KEY") {
		t.Errorf("web-2 secrets = %v, want fail naming API_KEY", s2)
	}
	if b, _ := protojson.Marshal(resp); strings.Contains(string(b), "e2e-canary-value") {
		t.Fatalf("a secret value reached the controller: %s", b)
	}
	cmds.sync(t)
	if pf, others := cmds.counts(); pf != 2 || others != 0 {
		t.Fatalf("commands written: %d preflight, %d other; want 2 preflight", pf, others)
	}
	testenv.WaitFor(t, 10*time.Second, "no command or result left after the preflight", func() bool {
		for _, prefix := range []string{c.Keys().Commands(), c.Keys().Results()} {
			if r, err := c.Client().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 0 {
				return false
			}
		}
		return true
	})
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "preflight"})
	if err != nil || len(au.Entries) != 1 || au.Entries[0].Actor != "alice" || au.Entries[0].Outcome != "failed" {
		t.Fatalf("preflight audit = %v, %v", au, err)
	}

	// Skipping the failing check, or asking only the good host, is ok.
	resp, err = ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", SkipChecks: []string{"secrets"}})
	if err != nil || !resp.Ok || checkOf(resp.Hosts[1], "secrets").GetStatus() != "skip" {
		t.Fatalf("preflight skipping secrets = %v, %v; want ok with secrets skipped", resp, err)
	}
	resp, err = ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Hosts: []string{"web-1"}})
	if err != nil || !resp.Ok || len(resp.Hosts) != 1 {
		t.Fatalf("preflight of web-1 = %v, %v; want ok", resp, err)
	}
	if _, err := ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", SkipChecks: []string{"tsl"}}); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown --skip-check: %v, want InvalidArgument", err)
	}
	if _, err := ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Hosts: []string{"web-9"}}); grpcstatus.Code(err) != codes.NotFound {
		t.Fatalf("unknown host: %v, want NotFound", err)
	}

	// A host that does not answer in time is reported, not waited for.
	a2.Stop()
	testenv.WaitFor(t, 30*time.Second, "web-2 lost", func() bool {
		r, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(r.Agents) == 2 && r.Agents[1].State == "lost"
	})
	resp, err = ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Hosts: []string{"web-1", "web-2"}})
	if err != nil || resp.Ok || len(resp.Hosts) != 2 || !strings.Contains(resp.Hosts[1].Error, "not connected") || resp.Hosts[0].Error != "" {
		t.Fatalf("preflight with web-2 down = %v, %v", resp, err)
	}
	a2 = preflightHost(t, "web-2", c.GRPCAddr(), false)
	testenv.WaitFor(t, 30*time.Second, "web-2 back", func() bool {
		r, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(r.Agents) == 2 && r.Agents[1].State == "connected"
	})

	// A deploy runs the preflight first: web-2 fails it, nothing is deployed.
	ap, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "preflight e2e"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "token on the agents", func() bool {
		return a1.FencingToken() == ap.Approval.FencingToken && a2.FencingToken() == ap.Approval.FencingToken
	})
	// The artifact exists (the disk check sizes it) but is no release: a
	// deploy that gets past the preflight fails on the hosts.
	artifact := filepath.Join(t.TempDir(), "app.tar.gz")
	if err := os.WriteFile(artifact, []byte("not a release\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("not a release\n"))
	artifactURL, artifactSHA := "file://"+artifact, hex.EncodeToString(sum[:])
	cmds = watchCommands(t, c)
	dep, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: artifactURL, Sha256: artifactSHA})
	if err != nil {
		t.Fatal(err)
	}
	r := waitRollout(t, ctl, ctx, dep.Rollout.Id, func(r *golivev1.Rollout) bool { return r.FinishedAt != nil })
	if r.State != "failed" || !strings.Contains(r.Reason, "preflight failed: host web-2: check secrets failed") {
		t.Fatalf("rollout = %s %q, want failed by web-2's secrets check", r.State, r.Reason)
	}
	if len(r.Preflight) != 2 || checkOf(r.Preflight[1], "secrets").GetStatus() != "fail" {
		t.Fatalf("rollout's preflight table = %v", r.Preflight)
	}
	cmds.sync(t)
	if pf, others := cmds.counts(); pf != 2 || others != 0 {
		t.Fatalf("commands written for the refused rollout: %d preflight, %d other; want 2 preflight and no deploy", pf, others)
	}
	for _, a := range []*testenv.Agent{a1, a2} {
		for _, sv := range a.Status().Services {
			if sv.CurrentRelease != "" {
				t.Fatalf("%s: current release %q after a refused rollout", a.Config.HostID, sv.CurrentRelease)
			}
		}
	}

	// --skip-check secrets: the preflight passes and the hosts are commanded.
	cmds = watchCommands(t, c)
	dep, err = ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: artifactURL, Sha256: artifactSHA, SkipChecks: []string{"secrets"}})
	if err != nil {
		t.Fatal(err)
	}
	// The artifact is no release, so the rollout fails and rolls back
	// (more commands, however many): assert on its end, where every host
	// has been sent its deploy command.
	r = waitRollout(t, ctl, ctx, dep.Rollout.Id, func(r *golivev1.Rollout) bool { return r.FinishedAt != nil })
	cmds.sync(t)
	if got := strings.Join(cmds.deployedHosts(dep.Rollout.Id), ","); got != "web-1,web-2" {
		t.Fatalf("hosts sent a deploy command after a skipped check: %q, want web-1,web-2 (rollout %s %q)", got, r.State, r.Reason)
	}
	if len(r.Preflight) != 2 {
		t.Fatalf("rollout's preflight table = %v, want both hosts", r.Preflight)
	}
	if strings.Join(r.SkippedChecks, ",") != "secrets" || checkOf(r.Preflight[1], "secrets").GetStatus() != "skip" {
		t.Fatalf("rollout skipped %v, table %v; want secrets skipped", r.SkippedChecks, r.Preflight)
	}
	au, err = ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "deploy"})
	if err != nil || len(au.Entries) != 2 || !strings.Contains(au.Entries[len(au.Entries)-1].Detail+au.Entries[0].Detail, "skip_checks=secrets") {
		t.Fatalf("deploy audit = %v, %v; want the skip recorded", au, err)
	}
	if _, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v3", ArtifactUrl: "file:///x", Sha256: zeroSHA, SkipChecks: []string{"nope"}, DryRun: true}); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("deploy with an unknown --skip-check: %v, want InvalidArgument", err)
	}
}

func waitRollout(t *testing.T, ctl golivev1.ControlServiceClient, ctx context.Context, id string, cond func(*golivev1.Rollout) bool) *golivev1.Rollout {
	t.Helper()
	var r *golivev1.Rollout
	testenv.WaitFor(t, 60*time.Second, "rollout "+id, func() bool {
		resp, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err != nil {
			return false
		}
		r = resp.Rollout
		return cond(r)
	})
	return r
}

// TestPreflightNoAnswerInTime: a host whose checks outlast the run is
// reported as not answering, the RPC returns at its timeout, and the answer
// that lands later is swept away.
func TestPreflightNoAnswerInTime(t *testing.T) {
	// A TLS port that accepts and never speaks: the tls check hangs until
	// its own timeout (10s), far beyond the run's 1s.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	state := t.TempDir()
	d, err := releasedir.Open(state, "app")
	if err != nil {
		t.Fatal(err)
	}
	cfg := agentconfig.DefaultService("app")
	cfg.Preflight.Domain, cfg.Preflight.TLSPort = "localhost", l.Addr().(*net.TCPAddr).Port
	a := testenv.StartAgent(t, "web-1", state, []agent.Service{{Name: "app", SwapMode: "restart", Dir: d, Config: cfg, StateDir: state}}, c.GRPCAddr())
	testenv.WaitFor(t, 10*time.Second, "agent connected", a.Connected)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 10*time.Second, "agent listed", func() bool {
		r, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(r.Agents) == 1 && r.Agents[0].State == "connected" && len(r.Agents[0].Services) == 1
	})
	start := time.Now()
	resp, err := ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Timeout: durationpb.New(time.Second)})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Ok || len(resp.Hosts) != 1 || !strings.Contains(resp.Hosts[0].Error, "no answer within 1s") {
		t.Fatalf("preflight = %v, want web-1 without answer", resp)
	}
	if took > 5*time.Second {
		t.Fatalf("the RPC took %s with a 1s timeout", took)
	}
	t.Logf("preflight with a silent host returned after %s", took.Round(time.Millisecond))
	// The agent answers once its tls check times out; the sweeper removes it.
	testenv.WaitFor(t, 30*time.Second, "the late answer swept", func() bool {
		a, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(a.Agents) != 1 || len(a.Agents[0].RecentResults) == 0 {
			return false // not answered yet
		}
		r, err := c.Client().Get(ctx, c.Keys().Results(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || r.Count != 0 {
			return false
		}
		r, err = c.Client().Get(ctx, c.Keys().Commands(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 0 // no command left behind either
	})
}
