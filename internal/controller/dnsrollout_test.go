package controller_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const dnsApp = "app.example.test."

// rolloutSimAgent speaks the agent protocol for service "app": healthy
// probe windows in every heartbeat, deploys that succeed (or fail, with
// failDeploys), rollbacks and pre-live checks that pass.
type rolloutSimAgent struct {
	host        string
	failDeploys bool
	release     atomic.Value // string
	deploys     atomic.Int32
	rollbacks   atomic.Int32
}

func (a *rolloutSimAgent) service() *golivev1.ServiceState {
	rel, _ := a.release.Load().(string)
	return &golivev1.ServiceState{Name: "app", CurrentRelease: rel, PreviousRelease: "v1", State: "running",
		Health: &golivev1.HealthWindow{Requests: 50, Healthy: true, LastProbe: timestamppb.Now(), WindowSeconds: 30, AvgLatencyMs: 3}}
}

func (a *rolloutSimAgent) run(ctx context.Context, conn *grpc.ClientConn) error {
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	send := func(m *golivev1.ConnectRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-sim", AgentVersion: "sim", Services: []*golivev1.ServiceState{a.service()}}}}); err != nil {
		return err
	}
	hbDone := make(chan struct{})
	defer func() { <-hbDone }()
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	go func() {
		defer close(hbDone)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
					Services: []*golivev1.ServiceState{a.service()}, SentAt: timestamppb.Now()}}})
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		p, ok := m.Payload.(*golivev1.ConnectResponse_Command)
		if !ok {
			continue
		}
		c := p.Command
		res := &golivev1.CommandResult{CommandId: c.Id, Service: "app", FinishedAt: timestamppb.Now(), Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED}
		switch act := c.Action.(type) {
		case *golivev1.Command_Deploy:
			a.deploys.Add(1)
			res.Release = act.Deploy.Release
			if a.failDeploys {
				res.Outcome, res.Error = golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK, "simulated failure"
			} else {
				a.release.Store(act.Deploy.Release)
			}
		case *golivev1.Command_Rollback:
			a.rollbacks.Add(1)
			res.Release = "v1"
			a.release.Store("v1")
		case *golivev1.Command_Preflight:
			res.Checks = []*golivev1.CheckResult{{Name: "disk", Status: "pass"}}
		}
		if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}}); err != nil {
			return err
		}
	}
}

func startRolloutAgents(t *testing.T, e *dnsEnv, failDeploys bool, hosts ...string) []*rolloutSimAgent {
	t.Helper()
	return startSimFleet(t, e.ctl, e.ctx, e.c.GRPCAddr(), failDeploys, hosts...)
}

func startRolloutAgentsAt(t *testing.T, ctl golivev1.ControlServiceClient, ctx context.Context, addr string, hosts ...string) []*rolloutSimAgent {
	t.Helper()
	return startSimFleet(t, ctl, ctx, addr, false, hosts...)
}

func startSimFleet(t *testing.T, ctl golivev1.ControlServiceClient, cctx context.Context, addr string, failDeploys bool, hosts ...string) []*rolloutSimAgent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); conn.Close() })
	var out []*rolloutSimAgent
	for _, h := range hosts {
		a := &rolloutSimAgent{host: h, failDeploys: failDeploys}
		a.release.Store("v1")
		out = append(out, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a.run(ctx, conn)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	testenv.WaitFor(t, 20*time.Second, "agents connected", func() bool {
		st, err := ctl.Status(cctx, &golivev1.StatusRequest{})
		return err == nil && int(st.AgentsConnected) == len(hosts)
	})
	return out
}

func dnsDeployRequest(dns ...string) *golivev1.DeployRequest {
	return &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "http://127.0.0.1:1/a.tgz", Sha256: strings.Repeat("ab", 32),
		Canary: 1, MinHealthy: durationpb.New(0), SkipChecks: []string{"backup"}, Dns: dns}
}

// served is what the zone's primary answers for name now.
func (e *dnsEnv) served(t *testing.T, name string) []string {
	t.Helper()
	resp, err := e.ctl.DnsShow(e.ctx, &golivev1.DnsShowRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Records[0].ServedValues
}

// TestDeployWithDNSSetsRecordsAndRollbackRestores: deploy --dns points
// the name at the pool after the last wave, confirmed at the primary
// (real BIND), and the rollout's record shows before/after and when; an
// operator's rollback of the service, without an approval, puts back the
// records and says so on its own record.
func TestDeployWithDNSSetsRecordsAndRollbackRestores(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	e.authorize(t)
	if _, err := e.ctl.DnsSet(e.ctx, &golivev1.DnsSetRequest{Name: dnsApp, Values: []string{"192.0.2.10"}, Ttl: durationpb.New(30 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	agents := startRolloutAgents(t, e, false, "web-1", "web-2")
	dep, err := e.ctl.Deploy(e.ctx, dnsDeployRequest("app.example.test=green"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dep.Rollout.Dns) != 1 || dep.Rollout.Dns[0].State != "waiting" || dep.Rollout.Dns[0].Pool != "green" {
		t.Fatalf("planned dns %v", dep.Rollout.Dns)
	}
	r := waitTerminal(t, e.ctl, e.ctx, dep.Rollout.Id, 60*time.Second)
	if r.State != "succeeded" {
		t.Fatalf("rollout %s: %s", r.State, r.Reason)
	}
	if got := e.served(t, dnsApp); !slices.Equal(got, dnsGreen) {
		t.Fatalf("primary serves %v after the rollout, want %v", got, dnsGreen)
	}
	d := r.Dns[0]
	if d.State != "succeeded" || !slices.Equal(d.Before, []string{"192.0.2.10"}) || !slices.Equal(d.After, dnsGreen) || d.ConfirmedAt == nil ||
		d.ConfirmedAt.AsTime().Before(r.CreatedAt.AsTime()) {
		t.Fatalf("rollout's dns: %v", d)
	}
	hist, err := e.ctl.DnsHistory(e.ctx, &golivev1.DnsHistoryRequest{Name: dnsApp})
	if err != nil || hist.Entries[0].Kind != "rollout" || hist.Entries[0].Outcome != "confirmed" || hist.Entries[0].FencingToken != r.FencingToken {
		t.Fatalf("history %v %v", hist, err)
	}

	// The operator's rollback needs no approval.
	if _, err := e.ctl.Revoke(e.ctx, &golivev1.RevokeRequest{Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	rb, err := e.ctl.Rollback(e.ctx, &golivev1.RollbackRequest{Service: "app"})
	if err != nil {
		t.Fatal(err)
	}
	r = waitTerminal(t, e.ctl, e.ctx, rb.Rollout.Id, 60*time.Second)
	if r.State != "succeeded" || len(r.Dns) != 1 || r.Dns[0].Action != "restore" || r.Dns[0].State != "succeeded" || r.Dns[0].FromRollout != dep.Rollout.Id ||
		!slices.Equal(r.Dns[0].After, []string{"192.0.2.10"}) || r.Dns[0].ConfirmedAt == nil {
		t.Fatalf("rollback %s (%s): dns %v", r.State, r.Reason, r.Dns)
	}
	if got := e.served(t, dnsApp); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("primary serves %v after the rollback, want 192.0.2.10", got)
	}
	for _, a := range agents {
		if a.rollbacks.Load() != 1 {
			t.Fatalf("%s got %d rollbacks", a.host, a.rollbacks.Load())
		}
	}
}

// TestDeployWithDNSFailedWaveLeavesDNSUntouched: a wave that fails is
// rolled back automatically and DNS is never touched.
func TestDeployWithDNSFailedWaveLeavesDNSUntouched(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	e.authorize(t)
	startRolloutAgents(t, e, true, "web-1", "web-2")
	dep, err := e.ctl.Deploy(e.ctx, dnsDeployRequest("app.example.test=green"))
	if err != nil {
		t.Fatal(err)
	}
	r := waitTerminal(t, e.ctl, e.ctx, dep.Rollout.Id, 60*time.Second)
	if r.State != "rolled_back" && r.State != "failed" || r.Dns[0].State != "waiting" {
		t.Fatalf("rollout %s (%s), dns %v", r.State, r.Reason, r.Dns)
	}
	if got := e.served(t, dnsApp); len(got) != 0 {
		t.Fatalf("primary serves %v for %s, want nothing", got, dnsApp)
	}
	if n := countPrefix(t, e.c.Client(), e.c.Keys().DNSHistory(dnsApp, "A")); n != 0 {
		t.Fatalf("%d dns history entries for %s", n, dnsApp)
	}
}

// TestDeployWithDNSConflictFailsKeepsHosts: a record someone else changed
// while the rollout ran fails the prerequisite: the rollout ends failed
// saying so, the other party's record stays, and no host is rolled back.
func TestDeployWithDNSConflictFailsKeepsHosts(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	e.authorize(t)
	if _, err := e.ctl.DnsSet(e.ctx, &golivev1.DnsSetRequest{Name: dnsApp, Values: []string{"192.0.2.10"}}); err != nil {
		t.Fatal(err)
	}
	agents := startRolloutAgents(t, e, false, "web-1", "web-2")
	req := dnsDeployRequest("app.example.test=green")
	req.PauseAfterCanary = true
	dep, err := e.ctl.Deploy(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "paused after the canary", func() bool {
		r, err := e.ctl.GetRollout(e.ctx, &golivev1.GetRolloutRequest{Id: dep.Rollout.Id})
		return err == nil && r.Rollout.Paused
	})
	if out, err := e.dns.Nsupdate(e.ctx, dnstest.KeyOther, "update delete app.example.test. A\nupdate add app.example.test. 30 A 192.0.2.99"); err != nil {
		t.Fatalf("nsupdate: %v: %s", err, out)
	}
	if _, err := e.ctl.ResumeRollout(e.ctx, &golivev1.ResumeRolloutRequest{Id: dep.Rollout.Id}); err != nil {
		t.Fatal(err)
	}
	r := waitTerminal(t, e.ctl, e.ctx, dep.Rollout.Id, 60*time.Second)
	if r.State != "failed" || !strings.Contains(r.Reason, "DNS step failed") || !strings.Contains(r.Reason, "hosts keep app@v2") || r.Dns[0].State != "failed" {
		t.Fatalf("rollout %s (%s), dns %v", r.State, r.Reason, r.Dns)
	}
	if got := e.served(t, dnsApp); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("primary serves %v, want the other party's 192.0.2.99", got)
	}
	for _, a := range agents {
		if a.rollbacks.Load() != 0 || a.deploys.Load() != 1 {
			t.Fatalf("%s: %d deploys, %d rollbacks; want 1, 0", a.host, a.deploys.Load(), a.rollbacks.Load())
		}
	}
}

// TestDeployWithDNSRefusals: a --dns name outside the zones, an unknown
// pool, a failover name, a bad form, or a controller without DNS config:
// refused at once, nothing written.
func TestDeployWithDNSRefusals(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	e.authorize(t)
	startRolloutAgents(t, e, false, "web-1", "web-2")
	for _, tt := range []struct {
		give string
		want string
	}{
		{give: "app.other.test=green", want: "in no zone"},
		{give: "app.example.test=purple", want: `no pool "purple"`},
		{give: "www.example.test=green", want: "failover record"},
		{give: "app.example.test", want: "want NAME=POOL"},
	} {
		_, err := e.ctl.Deploy(e.ctx, dnsDeployRequest(tt.give))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("--dns %s: %v, want InvalidArgument saying %q", tt.give, err, tt.want)
		}
	}
	keys := e.c.Keys()
	if n := countPrefix(t, e.c.Client(), keys.Rollouts()) + countPrefix(t, e.c.Client(), keys.DNSHistoryAll()); n != 0 {
		t.Fatalf("refused deploys wrote %d keys", n)
	}

	c := testenv.StartController(t, testenv.ControllerConfig(t))
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "t"}); err != nil {
		t.Fatal(err)
	}
	_, err := ctl.Deploy(ctx, dnsDeployRequest("app.example.test=green"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--dns-config") {
		t.Fatalf("--dns without DNS config: %v", err)
	}
	if n := countPrefix(t, c.Client(), c.Keys().Rollouts()); n != 0 {
		t.Fatalf("refused deploy wrote %d rollouts", n)
	}
}

// TestDeployWithDNSLeaderKilledMidStep: the rollout's DNS update is in
// flight on leader a (its intent stored, the update sent to a primary that
// does not answer: named is SIGSTOPped) when a is killed with SIGKILL.
// Replica b leads, finds the change in flight under the rollout's tag and,
// past the grace, resolves it from what the primary serves; the rollout
// ends in the state that matches: succeeded with the records set, or
// failed with them untouched; the change is sent once and has one end.
func TestDeployWithDNSLeaderKilledMidStep(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the controller binary and waits out the pending grace")
	}
	s := dnstest.Start(t, dnstest.BIND)
	bin := testenv.Binaries(t)
	etcd := etcdtest.Start(t, 1)
	cli := etcd.Client(t)
	conf := dnsConfigFile(t, s, s.Secrets[dnstest.KeyGolive])
	replica := func(id string) (*exec.Cmd, string) {
		addr := etcdtest.FreeAddr(t)
		cmd := exec.Command(filepath.Join(bin, "golive-controller"), "serve", "--listen", addr, "--metrics-addr", etcdtest.FreeAddr(t),
			"--data-dir", t.TempDir(), "--replica-id", id, "--etcd-endpoints", strings.Join(etcd.Endpoints(), ","),
			"--dns-config", conf, "--dashboard-addr", "")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("--- replica %s:\n%s", id, out.String())
			}
		})
		return cmd, addr
	}
	a, aAddr := replica("a")
	ctlA, ctx := testenv.Control(t, aAddr, "alice")
	testenv.WaitFor(t, 60*time.Second, "replica a leading", func() bool {
		st, err := ctlA.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.Leader == "a"
	})
	_, bAddr := replica("b")
	ctlB, _ := testenv.Control(t, bAddr, "alice")
	testenv.WaitFor(t, 60*time.Second, "replica b serving", func() bool {
		_, err := ctlB.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	e := &dnsEnv{dns: s, ctl: ctlB, ctx: ctx}
	e.authorize(t)
	if _, err := ctlB.DnsSet(ctx, &golivev1.DnsSetRequest{Name: dnsApp, Values: []string{"192.0.2.10"}}); err != nil {
		t.Fatal(err)
	}
	agents := startRolloutAgentsAt(t, ctlB, ctx, bAddr, "web-1", "web-2")
	req := dnsDeployRequest("app.example.test=green")
	req.PauseAfterCanary = true
	dep, err := ctlB.Deploy(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	id := dep.Rollout.Id
	testenv.WaitFor(t, 60*time.Second, "paused after the canary", func() bool {
		r, err := ctlB.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		return err == nil && r.Rollout.Paused
	})
	pidb, err := os.ReadFile(filepath.Join(s.Dir, "named.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidb)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	if _, err := ctlB.ResumeRollout(ctx, &golivev1.ResumeRolloutRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	keys := state.NewKeys("/golive/")
	testenv.WaitFor(t, 60*time.Second, "the rollout's DNS intent stored", func() bool {
		resp, err := cli.Get(ctx, keys.DNSRecord(dnsApp, "A"))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		var rec struct {
			Pending *struct {
				Rollout string `json:"rollout"`
			} `json:"pending"`
		}
		json.Unmarshal(resp.Kvs[0].Value, &rec)
		return rec.Pending != nil && strings.HasPrefix(rec.Pending.Rollout, id+"/dns/")
	})
	if err := a.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	syscall.Kill(pid, syscall.SIGCONT)

	r := waitTerminal(t, ctlB, ctx, id, 120*time.Second)
	served := e.served(t, dnsApp)
	switch {
	case slices.Equal(served, dnsGreen):
		if r.State != "succeeded" || r.Dns[0].State != "succeeded" || !slices.Equal(r.Dns[0].Before, []string{"192.0.2.10"}) || !slices.Equal(r.Dns[0].After, dnsGreen) {
			t.Fatalf("the primary serves green but the rollout is %s (%s): %v", r.State, r.Reason, r.Dns)
		}
	case slices.Equal(served, []string{"192.0.2.10"}):
		if r.State != "failed" || r.Dns[0].State != "failed" {
			t.Fatalf("the primary serves the old record but the rollout is %s (%s): %v", r.State, r.Reason, r.Dns)
		}
	default:
		t.Fatalf("the primary serves %v, neither before nor after", served)
	}
	hist, err := ctlB.DnsHistory(ctx, &golivev1.DnsHistoryRequest{Name: dnsApp})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range hist.Entries {
		if h.Kind == "rollout" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d history entries of the rollout's change, want 1: %v", n, hist.Entries)
	}
	for _, ag := range agents {
		if ag.rollbacks.Load() != 0 {
			t.Fatalf("%s rolled back", ag.host)
		}
	}
	t.Logf("after the kill: rollout %s, primary serves %v", r.State, served)
}

// TestDeployWithDNSServerDownFailsKeepsHosts: with the zone's primary
// down when the DNS step runs, the rollout ends failed saying why, and no
// host is rolled back; the record is untouched once the server is back.
func TestDeployWithDNSServerDownFailsKeepsHosts(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	e.authorize(t)
	if _, err := e.ctl.DnsSet(e.ctx, &golivev1.DnsSetRequest{Name: dnsApp, Values: []string{"192.0.2.10"}}); err != nil {
		t.Fatal(err)
	}
	agents := startRolloutAgents(t, e, false, "web-1", "web-2")
	req := dnsDeployRequest("app.example.test=green")
	req.PauseAfterCanary = true
	dep, err := e.ctl.Deploy(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "paused after the canary", func() bool {
		r, err := e.ctl.GetRollout(e.ctx, &golivev1.GetRolloutRequest{Id: dep.Rollout.Id})
		return err == nil && r.Rollout.Paused
	})
	if err := e.dns.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctl.ResumeRollout(e.ctx, &golivev1.ResumeRolloutRequest{Id: dep.Rollout.Id}); err != nil {
		t.Fatal(err)
	}
	r := waitTerminal(t, e.ctl, e.ctx, dep.Rollout.Id, 90*time.Second)
	if r.State != "failed" || !strings.Contains(r.Reason, "DNS step failed") || r.Dns[0].State != "failed" || r.Dns[0].Error == "" {
		t.Fatalf("rollout %s (%s), dns %v", r.State, r.Reason, r.Dns)
	}
	for _, a := range agents {
		if a.rollbacks.Load() != 0 {
			t.Fatalf("%s rolled back after a DNS failure", a.host)
		}
	}
	if err := e.dns.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := e.served(t, dnsApp); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("primary serves %v once back, want the old 192.0.2.10", got)
	}
	t.Logf("failed: %s", r.Reason)
}
