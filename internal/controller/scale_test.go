package controller_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// simAgent speaks the real agent protocol on a real stream and answers
// every command at once: deploys with deployOutcome, rollbacks and
// preflights with success. It counts what it was sent.
type simAgent struct {
	host          string
	deployOutcome golivev1.CommandOutcome
	deploys       atomic.Int32
	rollbacks     atomic.Int32
	preflights    atomic.Int32
	connected     atomic.Bool
	// metricsAddr and svcMetricsPort, when set, are announced in Hello.
	metricsAddr    string
	svcMetricsPort uint32
	// ignoreRollbacks: rollback commands are taken and never answered.
	ignoreRollbacks bool

	mu sync.Mutex
	// done holds each command's result, by id: like a real agent, a
	// command runs once and its result is sent again until acked.
	done    map[string]*golivev1.CommandResult
	unacked map[string]bool
}

func (a *simAgent) run(ctx context.Context, conn *grpc.ClientConn) error {
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
	svc := &golivev1.ServiceState{Name: "app", CurrentRelease: "v1", PreviousRelease: "v0", State: "running"}
	if a.svcMetricsPort > 0 {
		svc.MetricsPort, svc.MetricsPath, svc.ActiveSlot = a.svcMetricsPort, "/custom", "blue"
	}
	a.mu.Lock()
	if a.done == nil {
		a.done, a.unacked = map[string]*golivev1.CommandResult{}, map[string]bool{}
	}
	var resend []*golivev1.CommandResult
	for id := range a.unacked {
		resend = append(resend, a.done[id])
	}
	a.mu.Unlock()
	if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-sim", AgentVersion: "sim", Services: []*golivev1.ServiceState{svc},
		MetricsAddress: a.metricsAddr, UnackedResults: resend}}}); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{Services: []*golivev1.ServiceState{svc}}}})
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch p := m.Payload.(type) {
		case *golivev1.ConnectResponse_Welcome:
			a.connected.Store(true)
		case *golivev1.ConnectResponse_ResultAck:
			a.mu.Lock()
			delete(a.unacked, p.ResultAck.CommandId)
			a.mu.Unlock()
		case *golivev1.ConnectResponse_Command:
			c := p.Command
			a.mu.Lock()
			prev := a.done[c.Id]
			a.mu.Unlock()
			if prev != nil {
				// Seen already: send its result again, run nothing.
				if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: prev}}); err != nil {
					return err
				}
				continue
			}
			res := &golivev1.CommandResult{CommandId: c.Id, Service: "app", FinishedAt: timestamppb.Now(),
				Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED}
			switch act := c.Action.(type) {
			case *golivev1.Command_Deploy:
				a.deploys.Add(1)
				res.Outcome, res.Release, res.Error = a.deployOutcome, act.Deploy.Release, "simulated failure"
			case *golivev1.Command_Rollback:
				a.rollbacks.Add(1)
				res.Release = "v1"
				if a.ignoreRollbacks {
					a.mu.Lock()
					a.done[c.Id] = nil
					a.mu.Unlock()
					continue
				}
			case *golivev1.Command_Preflight:
				a.preflights.Add(1)
				res.Checks = []*golivev1.CheckResult{{Name: "disk", Status: "pass"}}
			}
			a.mu.Lock()
			a.done[c.Id], a.unacked[c.Id] = res, true
			a.mu.Unlock()
			if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}}); err != nil {
				return err
			}
		}
	}
}

// TestThreeHundredHostsStayUnderTheTxnOpLimit: with etcd's default limit
// of 128 operations per transaction (the embedded etcd keeps it), a
// 300-host preflight cleans up after itself, a 300-host wave is commanded,
// fails, and every host is rolled back, and an operator rollback of all
// 300 ends succeeded naming the release it put back.
func TestThreeHundredHostsStayUnderTheTxnOpLimit(t *testing.T) {
	const n = 300
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	agents := make([]*simAgent, n)
	var conns []*grpc.ClientConn
	for i := range agents {
		if i%50 == 0 { // the controller allows 64 streams per connection
			conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			conns = append(conns, conn)
		}
		a := &simAgent{host: fmt.Sprintf("sim-%03d", i), deployOutcome: golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED}
		agents[i] = a
		conn := conns[len(conns)-1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a.run(ctx, conn)
				a.connected.Store(false)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	ctl, cctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 60*time.Second, "300 agents connected", func() bool {
		st, err := ctl.Status(cctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == n
	})

	var pf *golivev1.PreflightResponse
	err := retryUnavailable(func() (err error) {
		pf, err = ctl.Preflight(cctx, &golivev1.PreflightRequest{Service: "app", Timeout: durationpb.New(60 * time.Second)})
		return err
	})
	if err != nil {
		t.Fatalf("preflight of %d hosts: %v", n, err)
	}
	if !pf.Ok || len(pf.Hosts) != n {
		t.Fatalf("preflight: ok=%v hosts=%d, want ok and %d", pf.Ok, len(pf.Hosts), n)
	}
	cli := c.Server.Client()
	keys := c.Server.Keys()
	testenv.WaitFor(t, 30*time.Second, "the preflight's commands and results deleted", func() bool {
		return countKeys(t, cli, keys.Commands(), "/pf-") == 0 && countKeys(t, cli, keys.Results(), "/pf-") == 0
	})

	if err := retryUnavailable(func() error {
		_, err := ctl.Authorize(cctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "scale test"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var dep *golivev1.DeployResponse
	err = retryUnavailable(func() (err error) {
		dep, err = ctl.Deploy(cctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "http://127.0.0.1:1/app-v2.tar.gz",
			Sha256: strings.Repeat("ab", 32), MinHealthy: durationpb.New(0), SkipChecks: []string{"backup"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	final := waitTerminal(t, ctl, cctx, dep.Rollout.Id, 240*time.Second)
	if final.State != "rolled_back" {
		t.Fatalf("deploy of %d hosts ended %s (%s), want rolled_back", n, final.State, final.Reason)
	}
	for _, a := range agents {
		if d, r := a.deploys.Load(), a.rollbacks.Load(); d != 1 || r != 1 {
			t.Fatalf("%s got %d deploy and %d rollback commands, want 1 and 1", a.host, d, r)
		}
	}

	var rb *golivev1.RollbackResponse
	err = retryUnavailable(func() (err error) {
		rb, err = ctl.Rollback(cctx, &golivev1.RollbackRequest{Service: "app"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	final = waitTerminal(t, ctl, cctx, rb.Rollout.Id, 240*time.Second)
	if final.State != "succeeded" || final.Kind != "rollback" || final.Release != "v1" || len(final.Hosts) != n {
		t.Fatalf("operator rollback = state %s kind %s release %q hosts %d (%s), want succeeded rollback v1 %d",
			final.State, final.Kind, final.Release, len(final.Hosts), final.Reason, n)
	}
	for _, a := range agents {
		if r := a.rollbacks.Load(); r != 2 {
			t.Fatalf("%s got %d rollback commands, want 2", a.host, r)
		}
	}
	if left := countKeys(t, cli, keys.Commands(), ""); left != 0 {
		t.Fatalf("%d commands left in etcd after every host answered", left)
	}
}

// retryUnavailable runs call again while it fails with Unavailable (the
// connection dropped under a loaded machine: "EOF"), up to 5 times. The
// test judges the transaction sizes, not the transport under overload.
func retryUnavailable(call func() error) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = call(); status.Code(err) != codes.Unavailable {
			return err
		}
		time.Sleep(time.Second)
	}
	return err
}

func countKeys(t *testing.T, cli *clientv3.Client, prefix, contains string) int {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), contains) {
			n++
		}
	}
	return n
}

func waitTerminal(t *testing.T, ctl golivev1.ControlServiceClient, ctx context.Context, id string, d time.Duration) *golivev1.Rollout {
	t.Helper()
	var last *golivev1.Rollout
	testenv.WaitFor(t, d, "rollout "+id+" ended", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err != nil {
			return false
		}
		last = r.Rollout
		switch last.State {
		case "succeeded", "failed", "rolled_back", "aborted":
			return true
		}
		return false
	})
	return last
}
