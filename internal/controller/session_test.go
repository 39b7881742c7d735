package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestPresenceLeaseLostKeepsStreams: the lease that holds a replica's
// presence keys ends (revoked here; a starved controller's lease expires
// the same way). The replica takes a new session and claims every stream
// again under it: no agent stream ends, every presence key is back under
// the new lease, and the agents still hold their approval token.
func TestPresenceLeaseLostKeepsStreams(t *testing.T) {
	const n = 20
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var sessions atomic.Int32
	for i := range n {
		a := &simAgent{host: fmt.Sprintf("lease-%02d", i), deployOutcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				sessions.Add(1)
				a.run(ctx, conn)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	ctl, cctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 60*time.Second, "agents connected", func() bool {
		st, err := ctl.Status(cctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == n
	})
	cli, keys := c.Server.Client(), c.Server.Keys()
	presence := func() (map[clientv3.LeaseID]int, int) {
		r, err := cli.Get(cctx, keys.Presences(), clientv3.WithPrefix())
		if err != nil {
			return nil, 0
		}
		by := map[clientv3.LeaseID]int{}
		for _, kv := range r.Kvs {
			by[clientv3.LeaseID(kv.Lease)]++
		}
		return by, len(r.Kvs)
	}
	by, _ := presence()
	if len(by) != 1 {
		t.Fatalf("presence keys under %d leases, want 1", len(by))
	}
	var old clientv3.LeaseID
	for l := range by {
		old = l
	}
	before := sessions.Load()
	if _, err := cli.Revoke(cctx, old); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "every presence key back under a new lease", func() bool {
		by, total := presence()
		return total == n && len(by) == 1 && by[old] == 0
	})
	if got := sessions.Load(); got != before {
		t.Fatalf("%d agent streams were opened again after the lease ended, want none", got-before)
	}
	la, err := ctl.ListAgents(cctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range la.Agents {
		if a.State != "connected" {
			t.Errorf("%s is %s after the lease was renewed, want connected", a.HostId, a.State)
		}
	}
}
