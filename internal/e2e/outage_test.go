package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestRevokeDuringQuorumLossHolds: with a 3-member etcd cluster and two
// replicas, losing 2 members drops every agent's token; a revoke sent to
// either replica during the outage answers within 2 s; reads answer from
// the last known state, marked stale; writes fail fast; and when the
// members come back within the approval's TTL the approval stays revoked
// (written to etcd with its audit entry), no agent ever holds it again.
func TestRevokeDuringQuorumLossHolds(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	var ctls []*testenv.Controller
	for _, id := range []string{"ctl-a", "ctl-b"} {
		cfg := testenv.ControllerConfig(t)
		cfg.EtcdEndpoints, cfg.ReplicaID = cluster.Endpoints(), id
		ctls = append(ctls, testenv.StartController(t, cfg))
	}
	var agents []*testenv.Agent
	for i := range 4 {
		agents = append(agents, testenv.StartAgent(t, fmt.Sprintf("web-%d", i), "", nil, ctls[i%2].GRPCAddr()))
	}
	a, actx := testenv.Control(t, ctls[0].GRPCAddr(), "alice")
	b, bctx := testenv.Control(t, ctls[1].GRPCAddr(), "bob")
	testenv.WaitFor(t, 30*time.Second, "agents connected", func() bool {
		st, err := a.Status(actx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 4
	})
	g, err := a.Authorize(actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(5 * time.Minute), Reason: "outage test"})
	if err != nil {
		t.Fatal(err)
	}
	tok := g.Approval.FencingToken
	testenv.WaitFor(t, 10*time.Second, "every agent holds the token", holdAll(agents, tok))
	if _, err := a.Status(actx, &golivev1.StatusRequest{}); err != nil { // a read to answer from later
		t.Fatal(err)
	}

	cluster.Members[1].Stop()
	cluster.Members[2].Stop()
	lost := time.Now()
	took := testenv.WaitFor(t, 30*time.Second, "every agent dropped the token", holdAll(agents, 0))
	t.Logf("quorum lost: every agent dropped the token %s after the members stopped", took)

	start := time.Now()
	rv, err := b.Revoke(bctx, &golivev1.RevokeRequest{Reason: "stop during the outage"})
	if err != nil {
		t.Fatalf("revoke during the outage: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second || !rv.Deferred || !strings.Contains(rv.Note, "no quorum") {
		t.Fatalf("revoke answered in %s: %+v; want deferred within 2s", d, rv)
	}
	t.Logf("revoke during the outage answered in %s: %s", time.Since(start).Round(time.Millisecond), rv.Note)

	var hdr metadata.MD
	testenv.WaitFor(t, 10*time.Second, "a stale status from ctl-a", func() bool {
		hdr = metadata.MD{}
		_, err := a.Status(actx, &golivev1.StatusRequest{}, grpc.Header(&hdr))
		return err == nil && len(hdr.Get(controller.StaleMetadataKey)) == 1
	})
	t.Logf("status during the outage: stale %ss, etcd %v", hdr.Get(controller.StaleMetadataKey)[0], hdr.Get(controller.EtcdMetadataKey))
	start = time.Now()
	_, err = a.Authorize(actx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Minute), Reason: "x"})
	if grpcstatus.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no quorum") || time.Since(start) > 2*time.Second {
		t.Fatalf("a write during the outage: %v after %s; want Unavailable 'no quorum' within 2s", err, time.Since(start))
	}

	cluster.Members[1].Restart(t)
	cluster.Members[2].Restart(t)
	cli := cluster.Client(t)
	keys := ctls[0].Server.Keys()
	testenv.WaitFor(t, 60*time.Second, "the revoke written to etcd", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, keys.ApprovalEnded(tok))
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "revoked"
	})
	t.Logf("quorum back and the revoke written %s after the outage began", time.Since(lost).Round(time.Millisecond))
	// The approval never comes back: hold that for longer than the
	// replicas' settle time after the outage.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		for _, ag := range agents {
			if got := ag.FencingToken(); got == tok {
				t.Fatalf("%s holds the revoked token %d again", ag.Config.HostID, tok)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	ap, err := a.GetApproval(actx, &golivev1.GetApprovalRequest{})
	if err != nil || ap.Approval.Active {
		t.Fatalf("approval after the outage: %v %v", ap, err)
	}
	au, err := a.ListAudit(actx, &golivev1.ListAuditRequest{Action: "revoke"})
	if err != nil || len(au.Entries) != 1 || au.Entries[0].Actor != "bob" || !strings.Contains(au.Entries[0].Detail, "deferred_from") {
		t.Fatalf("audit of the deferred revoke: %v %v", au, err)
	}
	if _, err := cli.Get(context.Background(), keys.Approval(), clientv3.WithCountOnly()); err != nil {
		t.Fatal(err)
	}
}

func holdAll(agents []*testenv.Agent, tok int64) func() bool {
	return func() bool {
		for _, a := range agents {
			if a.FencingToken() != tok {
				return false
			}
		}
		return true
	}
}
