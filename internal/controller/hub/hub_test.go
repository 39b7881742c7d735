package hub_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/controller/metrics"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).abortPendingRead"),
	)
}

type nopOwner struct{}

func (nopOwner) AgentHello(context.Context, string)                                 {}
func (nopOwner) AgentResult(context.Context, string, *golivev1.CommandResult) error { return nil }
func (nopOwner) AgentAck(context.Context, string, *golivev1.CommandAck)             {}

type rig struct {
	h    *hub.Hub
	cli  *clientv3.Client
	keys state.Keys
	addr string
}

// startHub runs a hub on a real gRPC listener against a one-member etcd,
// with heartbeats every hb; everything stops at test end.
func startHub(t *testing.T, hb time.Duration) *rig {
	t.Helper()
	cli := etcdtest.Start(t, 1).Client(t)
	keys := state.NewKeys("/hubtest/")
	h := hub.New(hub.Config{Log: testenv.Logger(t, "hub"), Client: cli, Keys: keys, Replica: "r1",
		Metrics: metrics.New(prometheus.NewRegistry()), Heartbeat: hb, Owner: nopOwner{}})
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	h.SetSession(sess)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(hub.NewSharedCodec()))
	golivev1.RegisterAgentServiceServer(gs, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { gs.Serve(lis) })
	wg.Go(func() { h.RunFlusher(ctx) })
	wg.Go(func() { h.WatchPresence(ctx) })
	t.Cleanup(func() {
		h.CloseAll(nil)
		cancel()
		gs.Stop()
		wg.Wait()
		h.Close(nil)
		sess.Close()
	})
	return &rig{h: h, cli: cli, keys: keys, addr: lis.Addr().String()}
}

// sim is an agent whose health window moves with every heartbeat, as a
// real agent's does (each probe shifts it).
type sim struct {
	host   string
	beats  atomic.Int64
	silent atomic.Bool
}

func (a *sim) services(n int64) []*golivev1.ServiceState {
	return []*golivev1.ServiceState{{Name: "web", CurrentRelease: "r1", State: "running",
		Health: &golivev1.HealthWindow{Healthy: true, Requests: 100 + uint64(n%7), AvgLatencyMs: float64(n%13) + 1, WindowSeconds: 30, LastProbe: timestamppb.Now()}}}
}

// run connects and heartbeats every hb until ctx ends (or, silent, stops
// heartbeating while keeping the stream open).
func (a *sim) run(t *testing.T, ctx context.Context, addr string, hb time.Duration, welcomed chan<- struct{}) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-1", AgentVersion: "test", Services: a.services(0)}}}); err != nil {
		t.Error(err)
		return
	}
	if _, err := stream.Recv(); err != nil {
		if ctx.Err() == nil {
			t.Errorf("%s: no welcome: %v", a.host, err)
		}
		return
	}
	welcomed <- struct{}{}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(hb)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.silent.Load() {
			continue
		}
		n := a.beats.Add(1)
		if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
			Services: a.services(n), SentAt: timestamppb.Now()}}}); err != nil {
			return
		}
	}
}

func startFleet(t *testing.T, r *rig, n int, hb time.Duration) []*sim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	welcomed := make(chan struct{}, n)
	var fleet []*sim
	for i := range n {
		a := &sim{host: fmt.Sprintf("idle-%02d", i)}
		fleet = append(fleet, a)
		wg.Go(func() { a.run(t, ctx, r.addr, hb, welcomed) })
	}
	for range n {
		select {
		case <-welcomed:
		case <-time.After(30 * time.Second):
			t.Fatal("agents did not connect within 30s")
		}
	}
	return fleet
}

// countWrites counts puts under prefix during d.
func countWrites(t *testing.T, cli *clientv3.Client, prefix string, d time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	n := 0
	for wr := range cli.Watch(ctx, prefix, clientv3.WithPrefix()) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				n++
			}
		}
	}
	return n
}

// An idle fleet, whose health figures move with every heartbeat, rewrites
// its records far less often than it heartbeats; a host sent a command is
// hot and its figures go to etcd with its heartbeats.
func TestIdleFleetWritesAlmostNothing(t *testing.T) {
	const n, hb = 20, 100 * time.Millisecond
	r := startHub(t, hb)
	fleet := startFleet(t, r, n, hb)
	time.Sleep(time.Second) // the claims' writes settle

	rev0, err := r.cli.Get(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	beats0 := int64(0)
	for _, a := range fleet {
		beats0 += a.beats.Load()
	}
	writes := countWrites(t, r.cli, r.keys.Prefix, 3*time.Second)
	rev1, err := r.cli.Get(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	beats := -beats0
	for _, a := range fleet {
		beats += a.beats.Load()
	}
	revs := rev1.Header.Revision - rev0.Header.Revision
	t.Logf("%d heartbeats in the window: %d puts, %d etcd revisions", beats, writes, revs)
	if beats < n {
		t.Fatalf("only %d heartbeats in 3s from %d agents: the fleet is not running", beats, n)
	}
	// Each agent's figures are due once per FiguresEvery (5 min): in 3 s
	// the fleet should write ~0 times. Bound well below one write per
	// heartbeat, and below one per agent, to hold on a loaded machine.
	if limit := int64(n / 2); int64(writes) > limit || revs > limit {
		t.Errorf("idle fleet: %d puts, %d revisions in 3s for %d heartbeats: want at most %d", writes, revs, beats, limit)
	}

	// A command makes its host hot: its figures follow its heartbeats.
	if !r.h.SendCommand(fleet[0].host, &golivev1.Command{Id: "c1"}) {
		t.Fatal("SendCommand: stream not held")
	}
	hot := countWrites(t, r.cli, r.keys.Agent(fleet[0].host), 2*time.Second)
	if hot < 2 {
		t.Errorf("hot host: %d record writes in 2s of heartbeats every %s: want its figures written as they move", hot, hb)
	}
}

// A host that stops heartbeating (its stream still open) is shown lost
// within the liveness deadline (3 heartbeats, at least 15 s), although
// its heartbeats never reached etcd.
func TestSilentAgentShownLostWithinDeadline(t *testing.T) {
	const hb = 200 * time.Millisecond
	r := startHub(t, hb)
	fleet := startFleet(t, r, 2, hb)
	state := func(host string) string {
		as, err := r.h.Agents(t.Context())
		if err != nil {
			return "error: " + err.Error()
		}
		for _, a := range as {
			if a.HostId == host {
				return a.State
			}
		}
		return "absent"
	}
	testenv.WaitFor(t, 10*time.Second, "both connected", func() bool {
		return state(fleet[0].host) == "connected" && state(fleet[1].host) == "connected"
	})
	fleet[0].silent.Store(true)
	start := time.Now()
	const deadline = 15 * time.Second // max(3*hb, 15s)
	d := testenv.WaitFor(t, deadline+10*time.Second, "silent agent lost", func() bool { return state(fleet[0].host) == "lost" })
	t.Logf("silent agent shown lost after %s (deadline %s)", time.Since(start).Round(time.Millisecond), deadline)
	if d < deadline-time.Second {
		t.Errorf("lost after %s, before the %s deadline", d, deadline)
	}
	if s := state(fleet[1].host); s != "connected" {
		t.Errorf("the heartbeating agent is %s", s)
	}
	// Its record in etcd says when it was last heard from.
	as, _ := r.h.Agents(t.Context())
	for _, a := range as {
		if a.HostId == fleet[0].host && (a.LastHeartbeat == nil || time.Since(a.LastHeartbeat.AsTime()) > deadline+15*time.Second) {
			t.Errorf("lost agent's last heartbeat %v: want the last one it sent", a.LastHeartbeat)
		}
	}
}
