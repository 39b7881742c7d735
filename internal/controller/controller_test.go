package controller_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func startFleet(t *testing.T, n int) (*testenv.Controller, []*testenv.Agent) {
	t.Helper()
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	var agents []*testenv.Agent
	for i := 0; i < n; i++ {
		agents = append(agents, testenv.StartAgent(t, fmt.Sprintf("web-%d", i), "", nil, c.GRPCAddr()))
	}
	testenv.WaitFor(t, 10*time.Second, "agents connected", func() bool {
		for _, a := range agents {
			if !a.Connected() {
				return false
			}
		}
		return true
	})
	return c, agents
}

func allHold(agents []*testenv.Agent, tok int64) func() bool {
	return func() bool {
		for _, a := range agents {
			if a.FencingToken() != tok {
				return false
			}
		}
		return true
	}
}

func TestAuthorizeAndRevokeReachEveryAgent(t *testing.T) {
	c, agents := startFleet(t, 5)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	resp, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	tok := resp.Approval.FencingToken
	testenv.WaitFor(t, 5*time.Second, "every agent holds the token", allHold(agents, tok))
	testenv.WaitFor(t, 5*time.Second, "agents listing shows the token", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(la.Agents) != 5 {
			return false
		}
		for _, a := range la.Agents {
			if a.FencingToken != tok || a.State != "connected" {
				return false
			}
		}
		return true
	})
	rv, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{Reason: "stop"})
	if err != nil || !rv.Revoked || rv.FencingToken != tok {
		t.Fatalf("revoke = %v, %v", rv, err)
	}
	d := testenv.WaitFor(t, 5*time.Second, "every agent dropped the token", allHold(agents, 0))
	t.Logf("revoke reached 5 agents in %s", d)
}

func TestTTLExpiryReachesEveryAgent(t *testing.T) {
	c, agents := startFleet(t, 3)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	resp, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "go live with automation", Ttl: durationpb.New(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "token on agents", allHold(agents, resp.Approval.FencingToken))
	testenv.WaitFor(t, 6*time.Second, "expiry on agents", allHold(agents, 0))
	testenv.WaitFor(t, 5*time.Second, "expiry audited", func() bool {
		a, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "approval_expired"})
		return err == nil && len(a.Entries) == 1
	})
	ap, err := ctl.GetApproval(ctx, &golivev1.GetApprovalRequest{})
	if err != nil || ap.Approval.Active {
		t.Fatalf("approval after expiry = %v, %v", ap, err)
	}
}

func etcdSnapshot(t *testing.T, c *testenv.Controller) (int64, int64) {
	t.Helper()
	resp, err := c.Client().Get(t.Context(), c.Keys().Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision, resp.Count
}

func TestRefusalsWriteNothing(t *testing.T) {
	c, _ := startFleet(t, 1)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "mallory")
	// Let the agent's record settle so only our calls could write.
	c.Client().Get(t.Context(), "x")
	tests := []struct {
		name string
		call func() error
		want codes.Code
		msg  string
	}{
		{"deploy without approval", func() error {
			_, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///x", Sha256: "ab", Hosts: []string{"web-0"}})
			return err
		}, codes.FailedPrecondition, "authorize"},
		{"wrong phrase", func() error {
			_, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "just do it", Ttl: durationpb.New(time.Hour)})
			return err
		}, codes.InvalidArgument, "start automation now"},
		{"near-miss phrase", func() error {
			_, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now.", Ttl: durationpb.New(time.Hour)})
			return err
		}, codes.InvalidArgument, "go live with automation"},
		{"ttl over max", func() error {
			_, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(13 * time.Hour)})
			return err
		}, codes.InvalidArgument, "max-approval-ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev0, n0 := etcdSnapshot(t, c)
			err := tt.call()
			if status.Code(err) != tt.want {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.want)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.msg) {
				t.Fatalf("message %q does not mention %q", msg, tt.msg)
			}
			rev1, n1 := etcdSnapshot(t, c)
			if rev1 != rev0 || n1 != n0 {
				t.Fatalf("etcd changed: revision %d -> %d, keys %d -> %d", rev0, rev1, n0, n1)
			}
		})
	}
}

func TestControllerRestartAgentsReconnectAndResendState(t *testing.T) {
	cfg := testenv.ControllerConfig(t)
	c := testenv.StartController(t, cfg)
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "app", "releases", "v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/v1", filepath.Join(state, "app", "current")); err != nil {
		t.Fatal(err)
	}
	a := testenv.StartAgent(t, "web-1", state, []agent.Service{{Name: "app", SwapMode: "restart"}}, cfg.Listen)
	testenv.WaitFor(t, 10*time.Second, "connected", a.Connected)
	c.Stop()
	testenv.WaitFor(t, 10*time.Second, "agent notices the controller is gone", func() bool { return !a.Connected() })
	// The record of the service survives; wipe it to prove the agent resends.
	c2 := testenv.StartController(t, cfg)
	if _, err := c2.Client().Delete(t.Context(), c2.Keys().Agent("web-1")); err != nil {
		t.Fatal(err)
	}
	ctl, ctx := testenv.Control(t, cfg.Listen, "alice")
	testenv.WaitFor(t, 15*time.Second, "agent reconnected with its services", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(la.Agents) != 1 {
			return false
		}
		ag := la.Agents[0]
		return ag.State == "connected" && len(ag.Services) == 1 && ag.Services[0].CurrentRelease == "v1"
	})
}

func TestSecondAgentWithSameHostIDRefused(t *testing.T) {
	c, _ := startFleet(t, 1)
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{HostId: "web-0", InstanceId: "impostor"}}})
	_, err = stream.Recv()
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(status.Convert(err).Message(), "already connected") {
		t.Fatalf("second stream for web-0: %v, want AlreadyExists", err)
	}
}

func TestFirstMessageMustBeHello(t *testing.T) {
	c, _ := startFleet(t, 0)
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, m := range []*golivev1.ConnectRequest{
		{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{}}},
		{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{HostId: "../etc"}}},
	} {
		stream, err := golivev1.NewAgentServiceClient(conn).Connect(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(m)
		if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
	}
}

func TestWebhooksReceiveApprovalEvents(t *testing.T) {
	type hook struct {
		Kind  string `json:"kind"`
		Actor string `json:"actor"`
	}
	got := make(chan hook, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h hook
		json.NewDecoder(r.Body).Decode(&h)
		got <- h
	}))
	defer recv.Close()
	cfg := testenv.ControllerConfig(t)
	rcv, err := notify.ParseReceiverFlag("json=" + recv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks = []notify.Receiver{rcv}
	c := testenv.StartController(t, cfg)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"approval_granted", "approval_revoked"} {
		select {
		case h := <-got:
			if h.Kind != want || h.Actor != "alice" {
				t.Fatalf("webhook = %+v, want %s by alice", h, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s webhook", want)
		}
	}
}
