package controller_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestRollbackThatCannotFinishEndsByItsDeadline: a fleet rollback that one
// host never answers ends failed at the progress deadline, naming the host,
// what it last served and the command to finish by hand; a new deploy of
// the service that includes the host is refused while its rollback is
// still queued.
func TestRollbackThatCannotFinishEndsByItsDeadline(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, a := range []*simAgent{
		{host: "sim-0", deployOutcome: golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED},
		{host: "sim-1", deployOutcome: golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED, ignoreRollbacks: true},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); a.run(ctx, conn) }()
	}
	ctl, cctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 20*time.Second, "agents connected", func() bool {
		st, err := ctl.Status(cctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 2
	})
	if _, err := ctl.Authorize(cctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "t"}); err != nil {
		t.Fatal(err)
	}
	req := &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "http://127.0.0.1:1/a.tgz", Sha256: strings.Repeat("ab", 32),
		MinHealthy: durationpb.New(0), ProgressDeadline: durationpb.New(3 * time.Second), SkipChecks: []string{"backup"}}
	dep, err := ctl.Deploy(cctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r := waitTerminal(t, ctl, cctx, dep.Rollout.Id, 60*time.Second)
	for _, want := range []string{"rollback did not finish", "sim-1 (no answer, last seen serving app@v1)", "golive-controller rollback --service app --hosts sim-1"} {
		if r.State != "failed" || !strings.Contains(r.Reason, want) {
			t.Fatalf("rollout ended %s: %q; want failed, saying %q", r.State, r.Reason, want)
		}
	}
	_, err = ctl.Deploy(cctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "sim-1 still has a queued rollback") {
		t.Fatalf("a new deploy while sim-1's rollback is queued: %v", err)
	}
}
