package controller_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

type tlsFleet struct {
	dir  string
	ca   *pki.CA
	ctl  *testenv.Controller
	addr string
}

func startTLSController(t *testing.T, mutate func(*controller.Config)) *tlsFleet {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.Init(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(pki.Request{Name: "controller", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, dir, "controller")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.ControllerConfig(t)
	cfg.TLS = pki.Files{CA: filepath.Join(dir, pki.CAFile), Cert: cert, Key: key}
	if mutate != nil {
		mutate(&cfg)
	}
	c := testenv.StartController(t, cfg)
	return &tlsFleet{dir: dir, ca: ca, ctl: c, addr: c.GRPCAddr()}
}

// dial connects with a certificate issued for req (nil: no certificate).
func (f *tlsFleet) dial(t *testing.T, req *pki.Request) *grpc.ClientConn {
	t.Helper()
	var files pki.Files
	if req != nil {
		base := req.Name
		if req.Agent {
			base = "agent-" + base
		}
		cert, key, err := f.ca.Issue(*req, f.dir, base)
		if err != nil {
			t.Fatal(err)
		}
		files = pki.Files{CA: filepath.Join(f.dir, pki.CAFile), Cert: cert, Key: key}
	} else {
		// Trusts the controller but presents no certificate.
		files = pki.Files{CA: filepath.Join(f.dir, pki.CAFile), Cert: filepath.Join(f.dir, "controller.pem"), Key: filepath.Join(f.dir, "controller-key.pem")}
	}
	tc, err := files.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if req == nil {
		tc.Certificates = nil
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *tlsFleet) operator(t *testing.T, name string, roles ...pki.Role) golivev1.ControlServiceClient {
	return golivev1.NewControlServiceClient(f.dial(t, &pki.Request{Name: name, Roles: roles}))
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	// A client may claim any actor: with mTLS the certificate decides.
	return metadata.AppendToOutgoingContext(ctx, controller.ActorMetadataKey, "mallory")
}

func TestMutualTLSRoles(t *testing.T) {
	f := startTLSController(t, nil)
	ctx := ctxT(t)
	viewer := f.operator(t, "vera", pki.RoleViewer)
	deployer := f.operator(t, "dave", pki.RoleDeployer)
	approver := f.operator(t, "anna", pki.RoleApprover)

	if _, err := viewer.Status(ctx, &golivev1.StatusRequest{}); err != nil {
		t.Fatalf("viewer status: %v", err)
	}
	_, err := viewer.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour)})
	wantCode(t, "viewer authorize", err, codes.PermissionDenied)
	_, err = viewer.Revoke(ctx, &golivev1.RevokeRequest{})
	wantCode(t, "viewer revoke", err, codes.PermissionDenied)
	_, err = viewer.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v1", ArtifactUrl: "http://127.0.0.1:1/x", Sha256: strings.Repeat("0", 64)})
	wantCode(t, "viewer deploy", err, codes.PermissionDenied)
	_, err = deployer.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour)})
	wantCode(t, "deployer authorize", err, codes.PermissionDenied)

	if _, err := approver.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour), Reason: "test"}); err != nil {
		t.Fatalf("approver authorize: %v", err)
	}
	ap, err := viewer.GetApproval(ctx, &golivev1.GetApprovalRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ap.Approval.GrantedBy != "anna" {
		t.Fatalf("approval granted by %q, want the certificate's name anna (the client claimed mallory)", ap.Approval.GrantedBy)
	}
	// Anyone with deployer may pull the brake.
	if _, err := deployer.Revoke(ctx, &golivev1.RevokeRequest{Reason: "brake"}); err != nil {
		t.Fatalf("deployer revoke: %v", err)
	}
	audit, err := viewer.ListAudit(ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	actors := map[string]bool{}
	for _, e := range audit.Entries {
		actors[e.Actor] = true
	}
	if !actors["anna"] || !actors["dave"] || actors["mallory"] {
		t.Fatalf("audit actors %v: want the certificate identities anna and dave, never the claimed mallory", actors)
	}

	// No client certificate: no service at all.
	anon := golivev1.NewControlServiceClient(f.dial(t, nil))
	_, err = anon.Status(ctx, &golivev1.StatusRequest{})
	if err == nil {
		t.Fatal("a client without a certificate was served")
	}

	// An agent certificate cannot operate.
	agentConn := f.dial(t, &pki.Request{Name: "web-1", Agent: true})
	_, err = golivev1.NewControlServiceClient(agentConn).Status(ctx, &golivev1.StatusRequest{})
	wantCode(t, "agent calls status", err, codes.PermissionDenied)
}

// connect opens an agent stream and returns the first response or error.
func connect(ctx context.Context, conn *grpc.ClientConn, host string) (*golivev1.ConnectResponse, error) {
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream makes Send return io.EOF; Recv has the status.
	_ = stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{HostId: host, InstanceId: "i-1"}}})
	return stream.Recv()
}

func TestAgentIdentityMustMatchHostID(t *testing.T) {
	f := startTLSController(t, nil)
	ctx := ctxT(t)
	conn := f.dial(t, &pki.Request{Name: "web-1", Agent: true})
	_, err := connect(ctx, conn, "web-2")
	wantCode(t, "web-1's certificate claiming web-2", err, codes.PermissionDenied)
	resp, err := connect(ctx, conn, "web-1")
	if err != nil || resp.GetWelcome() == nil {
		t.Fatalf("web-1 as web-1: %v %v", resp, err)
	}
	op := f.dial(t, &pki.Request{Name: "alice", Roles: []pki.Role{pki.RoleApprover, pki.RoleDeployer}})
	_, err = connect(ctx, op, "alice")
	wantCode(t, "operator opening an agent stream", err, codes.PermissionDenied)
}

func TestTwoPersonRule(t *testing.T) {
	f := startTLSController(t, func(c *controller.Config) { c.TwoPersonRule = true })
	ctx := ctxT(t)
	alice := f.operator(t, "alice", pki.RoleApprover, pki.RoleDeployer)
	bob := f.operator(t, "bob", pki.RoleDeployer)
	if _, err := alice.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	req := &golivev1.DeployRequest{Service: "app", Release: "v1", ArtifactUrl: "http://127.0.0.1:1/app.tar.gz", Sha256: strings.Repeat("0", 64)}
	_, err := alice.Deploy(ctx, req)
	wantCode(t, "alice deploys under her own approval", err, codes.PermissionDenied)
	if !strings.Contains(err.Error(), "two-person rule") {
		t.Fatalf("error does not name the rule: %v", err)
	}
	// bob gets past the rule (and fails only because no host runs app).
	_, err = bob.Deploy(ctx, req)
	if status.Code(err) == codes.PermissionDenied {
		t.Fatalf("bob refused: %v", err)
	}
	// The refused attempt is on the record, under alice's certificate.
	audit, err := bob.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Entries {
		found = found || (e.Actor == "alice" && e.Outcome == "refused" && strings.Contains(e.Reason, "two-person rule"))
	}
	if !found {
		t.Fatalf("alice's refused deploy is not audited: %v", audit.Entries)
	}
}

func TestRateLimitSparesTheBrake(t *testing.T) {
	f := startTLSController(t, func(c *controller.Config) { c.RateLimit, c.RateBurst = 2, 3 })
	ctx := ctxT(t)
	dave := f.operator(t, "dave", pki.RoleDeployer)
	other := f.operator(t, "olga", pki.RoleViewer)
	limited := 0
	for i := 0; i < 10; i++ {
		_, err := dave.Status(ctx, &golivev1.StatusRequest{})
		if status.Code(err) == codes.ResourceExhausted {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited == 0 {
		t.Fatal("10 calls at once with a limit of 2/s burst 3: none limited")
	}
	// The limit is per identity, and revoke always gets through.
	if _, err := other.Status(ctx, &golivev1.StatusRequest{}); err != nil {
		t.Fatalf("another identity limited: %v", err)
	}
	for i := 0; i < 5; i++ {
		if _, err := dave.Revoke(ctx, &golivev1.RevokeRequest{Reason: "brake"}); err != nil {
			t.Fatalf("revoke %d limited: %v", i, err)
		}
		// Pause and abort are brakes too: refused for a missing rollout,
		// never for the rate.
		if _, err := dave.PauseRollout(ctx, &golivev1.PauseRolloutRequest{Id: "none"}); status.Code(err) == codes.ResourceExhausted {
			t.Fatalf("pause %d limited: %v", i, err)
		}
		if _, err := dave.AbortRollout(ctx, &golivev1.AbortRolloutRequest{Id: "none"}); status.Code(err) == codes.ResourceExhausted {
			t.Fatalf("abort %d limited: %v", i, err)
		}
	}

}

func TestNoTLSOnlyOnLoopback(t *testing.T) {
	cfg := controller.DefaultConfig()
	cfg.Listen = "0.0.0.0:7400"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "refusing to serve without mutual TLS") {
		t.Fatalf("non-loopback without TLS: %v", err)
	}
	cfg.Listen = "[::1]:7400"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.TLS = pki.Files{CA: "/x/ca.pem"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "missing certificate, key") {
		t.Fatalf("half TLS config: %v", err)
	}
}

// runTLSAgent runs a real agent whose certificate names certHost and which
// claims hostID; it returns the agent once it has started.
func (f *tlsFleet) runTLSAgent(t *testing.T, certHost, hostID string) *agent.Agent {
	t.Helper()
	cert, key, err := f.ca.Issue(pki.Request{Name: certHost, Agent: true}, f.dir, "agent-"+certHost)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.Files{CA: filepath.Join(f.dir, pki.CAFile), Cert: cert, Key: key}.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *agent.Agent, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := agent.Config{Controllers: []string{f.addr}, HostID: hostID, StateDir: t.TempDir(), MaxBackoff: time.Second, TLS: tc,
		Ready: func(a *agent.Agent) { ready <- a }}
	go func() { done <- agent.Run(ctx, cfg, testenv.Logger(t, "agent-"+hostID)) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-ready:
		return a
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
	return nil
}

// TestRealAgentsOverMutualTLS: the agent daemon connects with its
// certificate and receives the approval; one whose certificate names
// another host never gets in.
func TestRealAgentsOverMutualTLS(t *testing.T) {
	f := startTLSController(t, nil)
	ctx := ctxT(t)
	good := f.runTLSAgent(t, "web-1", "web-1")
	impostor := f.runTLSAgent(t, "web-3", "web-2")
	testenv.WaitFor(t, 15*time.Second, "web-1 connected over mTLS", good.Connected)
	anna := f.operator(t, "anna", pki.RoleApprover)
	resp, err := anna.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "web-1 holds the token", func() bool { return good.FencingToken() == resp.Approval.FencingToken })
	list, err := f.operator(t, "vera", pki.RoleViewer).ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list.Agents {
		if a.HostId == "web-2" {
			t.Fatal("an agent whose certificate names web-3 got in as web-2")
		}
	}
	if impostor.Connected() || impostor.FencingToken() != 0 {
		t.Fatal("the impostor agent is connected or holds a token")
	}
}
