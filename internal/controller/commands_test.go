package controller_test

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const sha = "0000000000000000000000000000000000000000000000000000000000000000"

// TestCommandsFlowThroughEtcdToTheAgentAndBack: a deploy under a live
// approval becomes a fenced command in etcd, reaches the agent over its
// stream, and the agent's answer is stored as the host's result. A deploy
// after revoke writes nothing; an operator rollback needs no approval.
func TestCommandsFlowThroughEtcdToTheAgentAndBack(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	a := testenv.StartAgent(t, "web-1", "", []agent.Service{{Name: "app", SwapMode: "restart"}}, c.GRPCAddr())
	testenv.WaitFor(t, 10*time.Second, "agent connected", a.Connected)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")

	if _, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-9"}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deploy without approval: %v", err)
	}
	ap, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "token on agent", func() bool { return a.FencingToken() == ap.Approval.FencingToken })

	bad := []struct {
		name string
		req  *golivev1.DeployRequest
		want codes.Code
	}{
		{"unknown host", &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-9"}}, codes.InvalidArgument},
		{"service not on host", &golivev1.DeployRequest{Service: "db", Release: "v2", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}}, codes.InvalidArgument},
		{"release with ..", &golivev1.DeployRequest{Service: "app", Release: "..", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}}, codes.InvalidArgument},
		{"release with /", &golivev1.DeployRequest{Service: "app", Release: "a/b", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}}, codes.InvalidArgument},
		{"short sha", &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///x", Sha256: "ab", Hosts: []string{"web-1"}}, codes.InvalidArgument},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			rev0, n0 := etcdSnapshot(t, c)
			if _, err := ctl.Deploy(ctx, tt.req); status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if rev1, n1 := etcdSnapshot(t, c); rev1 != rev0 || n1 != n0 {
				t.Fatalf("etcd changed: %d/%d -> %d/%d", rev0, n0, rev1, n1)
			}
		})
	}

	dep, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Rollout.FencingToken != ap.Approval.FencingToken || len(dep.Rollout.Hosts) != 1 {
		t.Fatalf("rollout = %v", dep.Rollout)
	}
	// A second deploy of the service while one runs is refused, naming it.
	if _, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v3", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), dep.Rollout.Id) {
		t.Fatalf("second deploy: %v", err)
	}
	// This in-process agent has no release engine: it refuses the command,
	// and its answer ends the rollout.
	var final *golivev1.Rollout
	testenv.WaitFor(t, 15*time.Second, "the agent's answer ends the rollout", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: dep.Rollout.Id})
		if err != nil {
			return false
		}
		final = r.Rollout
		return final.State == "failed" || final.State == "rolled_back" || final.State == "succeeded"
	})
	if final.State == "succeeded" {
		t.Fatalf("rollout succeeded on an agent that cannot deploy: %v", final)
	}
	res, err := c.Client().Get(t.Context(), c.Keys().HostResults("web-1"), clientv3.WithPrefix())
	if err != nil || len(res.Kvs) == 0 {
		t.Fatalf("no result stored for web-1: %v", err)
	}
	if pending, _ := c.Client().Get(t.Context(), c.Keys().HostCommands("web-1"), clientv3.WithPrefix(), clientv3.WithCountOnly()); pending.Count != 0 {
		t.Fatalf("%d commands still pending", pending.Count)
	}

	// After revoke nothing more is written under the old token.
	if _, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	rev0, n0 := etcdSnapshot(t, c)
	if _, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v3", ArtifactUrl: "file:///x", Sha256: sha, Hosts: []string{"web-1"}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deploy after revoke: %v", err)
	}
	if rev1, n1 := etcdSnapshot(t, c); rev1 != rev0 || n1 != n0 {
		t.Fatalf("etcd changed after refused deploy")
	}

	// The operator's rollback needs no approval, and is audited.
	rb, err := ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", Hosts: []string{"web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Rollout.FencingToken != 0 || rb.Rollout.Kind != "rollback" {
		t.Fatalf("rollback rollout = %v", rb.Rollout)
	}
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "rollback"})
	if err != nil || len(au.Entries) != 1 || au.Entries[0].Actor != "alice" {
		t.Fatalf("rollback audit = %v, %v", au, err)
	}
}
