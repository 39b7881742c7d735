package controller_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/analysis/promtest"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// scaleAgent speaks the agent protocol on a real stream for one scaled
// service "web" (scale { min = 1 max = 8 target_rps = 50 }, interval
// 200ms, no cooldown, a 2s window): every heartbeat reports its instances
// (all serving) and the load balancer's figures of rps requests per
// second; a ScaleAction sets the count at once and succeeds.
type scaleAgent struct {
	host string

	mu        sync.Mutex
	instances int
	rps       float64
	// trafficAge makes the figures that old; trafficErr fails their read.
	trafficAge time.Duration
	trafficErr string
	scales     []*golivev1.Command
	// policy, when set, replaces the rps policy.
	policy *golivev1.ScalePolicy
}

func (a *scaleAgent) set(f func(a *scaleAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *scaleAgent) commands() []*golivev1.Command {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*golivev1.Command(nil), a.scales...)
}

func (a *scaleAgent) service() *golivev1.ServiceState {
	a.mu.Lock()
	defer a.mu.Unlock()
	sv := &golivev1.ServiceState{Name: "web", CurrentRelease: "v1", State: "running", SwapMode: "restart",
		Health: &golivev1.HealthWindow{Requests: 10, Healthy: true, LastProbe: timestamppb.Now(), WindowSeconds: 60},
		Scale: &golivev1.ScalePolicy{Min: 1, Max: 8, TargetRps: 50, Tolerance: 0.1, Interval: durationpb.New(200 * time.Millisecond),
			ScaleUpCooldown: durationpb.New(0), ScaleDownWindow: durationpb.New(2 * time.Second)},
		DesiredInstances: uint32(a.instances),
		Traffic: &golivev1.TrafficWindow{Source: "nginx", ObservedAt: timestamppb.New(time.Now().Add(-a.trafficAge)), Error: a.trafficErr,
			Slots: []*golivev1.SlotTraffic{{Slot: "", Requests: uint64(a.rps * 60), WindowSeconds: 60}}}}
	if a.policy != nil {
		sv.Scale = a.policy
	}
	for i := range a.instances {
		sv.Instances = append(sv.Instances, &golivev1.InstanceState{Index: uint32(i), Port: uint32(8080 + i), State: "serving", Healthy: true, InRouter: true})
	}
	return sv
}

func (a *scaleAgent) run(ctx context.Context, conn *grpc.ClientConn) error {
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
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{Services: []*golivev1.ServiceState{a.service()}}}})
			}
		}
	}()
	seen := map[string]bool{}
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		c := m.GetCommand()
		if c == nil || c.GetScale() == nil {
			continue
		}
		if !seen[c.Id] {
			seen[c.Id] = true
			a.set(func(a *scaleAgent) { a.scales = append(a.scales, c); a.instances = int(c.GetScale().Instances) })
		}
		res := &golivev1.CommandResult{CommandId: c.Id, Service: "web", Release: "v1", FinishedAt: timestamppb.Now(),
			Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED}
		if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}}); err != nil {
			return err
		}
	}
}

type scaleFleet struct {
	c     *testenv.Controller
	ctl   golivev1.ControlServiceClient
	ctx   context.Context
	agent *scaleAgent
}

func startScaleFleet(t *testing.T, instances int, rps float64) *scaleFleet {
	t.Helper()
	return startScaleFleetWith(t, testenv.ControllerConfig(t), nil, instances, rps)
}

func startScaleFleetWith(t *testing.T, cfg controller.Config, policy *golivev1.ScalePolicy, instances int, rps float64) *scaleFleet {
	t.Helper()
	c := testenv.StartController(t, cfg)
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	a := &scaleAgent{host: "web-1", instances: instances, rps: rps, policy: policy}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			a.run(ctx, conn)
			sleepOrDone(ctx, 100*time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait(); conn.Close() })
	ctl, cctx := testenv.Control(t, c.GRPCAddr(), "alice")
	return &scaleFleet{c: c, ctl: ctl, ctx: cctx, agent: a}
}

func sleepOrDone(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (f *scaleFleet) authorize(t *testing.T) int64 {
	t.Helper()
	r, err := f.ctl.Authorize(f.ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "scaling test"})
	if err != nil {
		t.Fatal(err)
	}
	return r.Approval.FencingToken
}

// waitEntry waits until web-1's status entry satisfies cond.
func (f *scaleFleet) waitEntry(t *testing.T, what string, cond func(e *golivev1.ScaleEntry) bool) *golivev1.ScaleEntry {
	t.Helper()
	var last *golivev1.ScaleEntry
	testenv.WaitFor(t, 30*time.Second, what, func() bool {
		st, err := f.ctl.ScaleStatus(f.ctx, &golivev1.ScaleStatusRequest{Service: "web"})
		if err != nil || len(st.Entries) != 1 {
			return false
		}
		last = st.Entries[0]
		return cond(last)
	})
	return last
}

func (f *scaleFleet) storedCommands(t *testing.T) int {
	t.Helper()
	return countKeys(t, f.c.Server.Client(), f.c.Server.Keys().HostCommands("web-1"), "scale-") +
		countKeys(t, f.c.Server.Client(), f.c.Server.Keys().HostResults("web-1"), "scale-")
}

// TestScalingUnderApprovalScalesUp: 240 rps on 2 instances sized for 50
// each, under an approval: one ScaleAction to ceil(240/50) = 5, fenced on
// the approval's token, audited with the figures, shown in status.
func TestScalingUnderApprovalScalesUp(t *testing.T) {
	f := startScaleFleet(t, 2, 240)
	token := f.authorize(t)
	testenv.WaitFor(t, 30*time.Second, "a scale action", func() bool { return len(f.agent.commands()) > 0 })
	c := f.agent.commands()[0]
	if c.GetScale().Instances != 5 || c.FencingToken != token || c.GetScale().Operator || c.GetScale().Service != "web" {
		t.Fatalf("scale command %v, want 5 instances of web under token %d, not operator", c, token)
	}
	if !strings.Contains(c.GetScale().Reason, "240 rps") {
		t.Errorf("the command's reason %q lacks the figures", c.GetScale().Reason)
	}
	e := f.waitEntry(t, "status shows the action's success", func(e *golivev1.ScaleEntry) bool {
		return e.LastAction != nil && e.LastAction.Outcome == "succeeded" && e.DesiredInstances == 5 && e.Action == "none"
	})
	if e.LastAction.To != 5 || e.LastAction.From != 2 || e.LastAction.Actor != "controller" || e.LastAction.FencingToken != token {
		t.Fatalf("last action %v", e.LastAction)
	}
	if e.Demand == nil || *e.Demand != 240 || e.Target != 50 || e.Metric != "rps" || e.Instances != 5 {
		t.Fatalf("entry figures: %v", e)
	}
	au, err := f.ctl.ListAudit(f.ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, en := range au.Entries {
		if en.Action == "scale" && en.Actor == "controller" {
			found = true
			for _, want := range []string{"host=web-1", "from=2", "to=5", "demand=240", "target=50", fmt.Sprintf("token=%d", token)} {
				if !strings.Contains(en.Detail, want) {
					t.Errorf("audit detail %q lacks %q", en.Detail, want)
				}
			}
		}
	}
	if !found {
		t.Fatal("no audit entry of the scale action")
	}
	if n := len(f.agent.commands()); n != 1 {
		t.Fatalf("%d scale commands for one step of demand, want 1", n)
	}
}

// TestScalingWithoutApprovalOnlyRecommends: the recommendation is shown,
// with the command to apply it, and nothing is written.
func TestScalingWithoutApprovalOnlyRecommends(t *testing.T) {
	f := startScaleFleet(t, 2, 240)
	e := f.waitEntry(t, "a recommendation", func(e *golivev1.ScaleEntry) bool { return e.Recommendation == 5 })
	if !strings.Contains(e.Reason, "no live approval") || !strings.Contains(e.Command, "scale set --service web --instances 5 --hosts web-1") || e.Action != "scale_up" {
		t.Fatalf("entry %v: want the recommendation, why it is not applied, and the command", e)
	}
	if n := f.storedCommands(t); n != 0 || len(f.agent.commands()) != 0 {
		t.Fatalf("%d scale commands stored, %d received without an approval", n, len(f.agent.commands()))
	}
}

// TestScalingRevokeStopsAtOnce: after a revoke, more demand is
// recommended, never written.
func TestScalingRevokeStopsAtOnce(t *testing.T) {
	f := startScaleFleet(t, 2, 240)
	f.authorize(t)
	testenv.WaitFor(t, 30*time.Second, "the first scale action", func() bool { return len(f.agent.commands()) == 1 })
	if _, err := f.ctl.Revoke(f.ctx, &golivev1.RevokeRequest{Reason: "stop"}); err != nil {
		t.Fatal(err)
	}
	f.agent.set(func(a *scaleAgent) { a.rps = 1000 })
	f.waitEntry(t, "the higher demand recommended after the revoke", func(e *golivev1.ScaleEntry) bool {
		return e.Recommendation == 8 && strings.Contains(e.Reason, "no live approval")
	})
	if n := len(f.agent.commands()); n != 1 {
		t.Fatalf("%d scale commands, want only the one before the revoke", n)
	}
	if n := f.storedCommands(t); n != 1 {
		t.Fatalf("%d scale commands or results stored, want 1", n)
	}
}

// TestScalingStaleOrFailedMetricNeverScalesDown: no traffic at all, but
// figures that are stale, then failed: 4 instances stay.
func TestScalingStaleOrFailedMetricNeverScalesDown(t *testing.T) {
	f := startScaleFleet(t, 4, 0)
	f.agent.set(func(a *scaleAgent) { a.trafficAge = time.Hour })
	f.authorize(t)
	e := f.waitEntry(t, "the stale metric held", func(e *golivev1.ScaleEntry) bool { return strings.Contains(e.Reason, "stale") })
	if e.Recommendation != 4 || e.Action != "hold" || e.Demand != nil {
		t.Fatalf("stale: %v", e)
	}
	f.agent.set(func(a *scaleAgent) { a.trafficAge, a.trafficErr = 0, "access log missing" })
	e = f.waitEntry(t, "the failed metric held", func(e *golivev1.ScaleEntry) bool { return strings.Contains(e.Reason, "failed") })
	if e.Recommendation != 4 || e.Action != "hold" {
		t.Fatalf("failed: %v", e)
	}
	if n := len(f.agent.commands()); n != 0 {
		t.Fatalf("%d scale commands on a missing metric", n)
	}
}

// TestScalingFrozenWhileARolloutRuns: a rollout holds the service: the
// recommendation is shown frozen, nothing is written, and scale set is
// refused too.
func TestScalingFrozenWhileARolloutRuns(t *testing.T) {
	f := startScaleFleet(t, 2, 240)
	cli, keys := f.c.Server.Client(), f.c.Server.Keys()
	if _, err := cli.Put(context.Background(), keys.ServiceLock("web"), "r-running"); err != nil {
		t.Fatal(err)
	}
	f.authorize(t)
	e := f.waitEntry(t, "frozen", func(e *golivev1.ScaleEntry) bool {
		return e.Recommendation == 5 && strings.Contains(e.Reason, "frozen: rollout r-running")
	})
	if !e.Frozen || e.Action != "hold" {
		t.Fatalf("entry %v: want frozen, hold", e)
	}
	_, err := f.ctl.ScaleSet(f.ctx, &golivev1.ScaleSetRequest{Service: "web", Instances: 3})
	wantCode(t, "scale set during a rollout", err, codes.FailedPrecondition)
	if n := len(f.agent.commands()); n != 0 {
		t.Fatalf("%d scale commands while a rollout runs", n)
	}
	// The rollout ends: scaling resumes.
	if _, err := cli.Delete(context.Background(), keys.ServiceLock("web")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "a scale action after the rollout", func() bool { return len(f.agent.commands()) == 1 })
}

// TestScaleSetWithoutApproval: the operator's path needs no approval,
// carries token 0 and operator, is audited, and stays within [min, max].
func TestScaleSetWithoutApproval(t *testing.T) {
	f := startScaleFleet(t, 1, 50)
	f.waitEntry(t, "the agent's scale block", func(e *golivev1.ScaleEntry) bool { return e.AgentState == "connected" })
	for _, n := range []uint32{0, 9} {
		_, err := f.ctl.ScaleSet(f.ctx, &golivev1.ScaleSetRequest{Service: "web", Instances: n})
		wantCode(t, fmt.Sprintf("scale set %d", n), err, codes.InvalidArgument)
	}
	_, err := f.ctl.ScaleSet(f.ctx, &golivev1.ScaleSetRequest{Service: "nope", Instances: 2})
	wantCode(t, "scale set of an unknown service", err, codes.NotFound)
	r, err := f.ctl.ScaleSet(f.ctx, &golivev1.ScaleSetRequest{Service: "web", Instances: 3, Reason: "launch"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Actions) != 1 || r.Hosts[0] != "web-1" || r.Actions[0].To != 3 || !r.Actions[0].Operator {
		t.Fatalf("scale set answered %v", r)
	}
	testenv.WaitFor(t, 30*time.Second, "the operator's command", func() bool { return len(f.agent.commands()) == 1 })
	c := f.agent.commands()[0]
	if c.FencingToken != 0 || !c.GetScale().Operator || c.GetScale().Instances != 3 || !strings.Contains(c.GetScale().Reason, "alice") {
		t.Fatalf("command %v: want token 0, operator, 3, the actor", c)
	}
	e := f.waitEntry(t, "the operator's action in status", func(e *golivev1.ScaleEntry) bool {
		return e.LastAction != nil && e.LastAction.Outcome == "succeeded" && e.DesiredInstances == 3
	})
	if e.LastAction.Actor != "alice" || !e.LastAction.Operator {
		t.Fatalf("last action %v", e.LastAction)
	}
	au, err := f.ctl.ListAudit(f.ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range au.Entries {
		if en.Action == "scale" && en.Actor == "alice" && strings.Contains(en.Detail, "to=3") && strings.Contains(en.Detail, "token=0") {
			return
		}
	}
	t.Fatalf("no audit entry of alice's scale set in %v", au.Entries)
}

// TestScaleSetNeedsTheDeployerRole: with mutual TLS a viewer may look, not
// set.
func TestScaleSetNeedsTheDeployerRole(t *testing.T) {
	f := startTLSController(t, nil)
	ctx := ctxT(t)
	viewer := f.operator(t, "vera", pki.RoleViewer)
	_, err := viewer.ScaleSet(ctx, &golivev1.ScaleSetRequest{Service: "web", Instances: 2})
	wantCode(t, "viewer scale set", err, codes.PermissionDenied)
	if _, err := viewer.ScaleStatus(ctx, &golivev1.ScaleStatusRequest{}); err != nil {
		t.Fatalf("viewer scale status: %v", err)
	}
	deployer := f.operator(t, "dave", pki.RoleDeployer)
	_, err = deployer.ScaleSet(ctx, &golivev1.ScaleSetRequest{Service: "web", Instances: 2})
	wantCode(t, "deployer scale set of a service no host runs", err, codes.NotFound)
}

// TestScalingDownOnlyAfterTheWindow: the load goes away right after a
// scale-up; the scale-down comes only once the window (2s) passed since
// the last high recommendation, and to min; the series show it.
func TestScalingDownOnlyAfterTheWindow(t *testing.T) {
	f := startScaleFleet(t, 2, 240)
	f.authorize(t)
	testenv.WaitFor(t, 30*time.Second, "the scale-up", func() bool { return len(f.agent.commands()) == 1 })
	f.agent.set(func(a *scaleAgent) { a.rps = 0 })
	testenv.WaitFor(t, 30*time.Second, "the scale-down", func() bool { return len(f.agent.commands()) == 2 })
	up, down := f.agent.commands()[0], f.agent.commands()[1]
	if down.GetScale().Instances != 1 {
		t.Fatalf("scaled down to %d, want min 1", down.GetScale().Instances)
	}
	if gap := down.IssuedAt.AsTime().Sub(up.IssuedAt.AsTime()); gap < 2*time.Second {
		t.Fatalf("scaled down %s after the scale-up, inside the 2s window", gap)
	}
	testenv.WaitFor(t, 30*time.Second, "the series", func() bool {
		body := scrape(t, f.c)
		return strings.Contains(body, `golive_controller_instances{host="web-1",service="web"} 1`) &&
			strings.Contains(body, `golive_controller_scale_recommendation{host="web-1",service="web"} 1`) &&
			strings.Contains(body, `golive_controller_scale_actions_total{result="sent",service="web"} 2`)
	})
}

// TestScalingByPromQLQuery: the demand is a PromQL query on a real
// Prometheus (its placeholders name the host): 240 for instances sized for
// 50 scales 2 -> 5; with Prometheus gone, the failed query scales nothing,
// and the 5 instances stay.
func TestScalingByPromQLQuery(t *testing.T) {
	srv := promtest.Start(t, promtest.Options{})
	cfg := testenv.ControllerConfig(t)
	cfg.Prometheus.URL = srv.URL
	cfg.Prometheus.Timeout = 2 * time.Second
	policy := &golivev1.ScalePolicy{Min: 1, Max: 8, Query: `sum(label_replace(vector(240), "h", "{{hosts}}", "", ""))`, TargetValue: 50,
		Interval: durationpb.New(200 * time.Millisecond), ScaleUpCooldown: durationpb.New(0), ScaleDownWindow: durationpb.New(time.Second)}
	f := startScaleFleetWith(t, cfg, policy, 2, 0)
	f.authorize(t)
	testenv.WaitFor(t, 30*time.Second, "a scale action", func() bool { return len(f.agent.commands()) == 1 })
	if n := f.agent.commands()[0].GetScale().Instances; n != 5 {
		t.Fatalf("scaled to %d, want ceil(240/50) = 5", n)
	}
	e := f.waitEntry(t, "settled at 5", func(e *golivev1.ScaleEntry) bool { return e.DesiredInstances == 5 && e.Action == "none" })
	if e.Metric != "query" || e.Demand == nil || *e.Demand != 240 {
		t.Fatalf("entry %v", e)
	}
	srv.Stop()
	e = f.waitEntry(t, "the failed query held", func(e *golivev1.ScaleEntry) bool { return strings.Contains(e.Reason, "the query failed") })
	if e.Action != "hold" || e.Recommendation != 5 {
		t.Fatalf("entry %v", e)
	}
	if n := len(f.agent.commands()); n != 1 {
		t.Fatalf("%d scale commands, want the one", n)
	}
}
