package simrollout

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// stages are the stage names a simulated restart-mode deploy reports, in
// order (the real agent's deploystep names them the same way).
var stages = []string{"fetch", "verify", "unpack", "swap", "health", "cleanup"}

// simAgent speaks the agent protocol on a real stream: Hello with its full
// state, ApprovalAck for every approval update, CommandAck, a
// CommandProgress and a heartbeat at every stage boundary, the result
// resent until acked, a heartbeat every interval the Welcome names. Its
// "executor" sleeps stageDelay per stage and changes nothing but its own
// release fields.
type simAgent struct {
	host       string
	stageDelay time.Duration
	// fails reports whether a deploy of release should fail on this host
	// (at the health stage, put back: ROLLED_BACK, as a restart-mode
	// agent reports it).
	fails func(release string) bool

	token     atomic.Int64
	connected atomic.Bool
	deploys   atomic.Int32
	rollbacks atomic.Int32
	preflight atomic.Int32

	mu                sync.Mutex
	current, previous string
	stage, commandID  string
	done              map[string]*golivev1.CommandResult
	// stepDone is when the last deploy step of each release finished.
	stepDone map[string]time.Time
	unacked  map[string]bool
	send     func(*golivev1.ConnectRequest) error
}

func newSimAgent(host string, stageDelay time.Duration, fails func(string) bool) *simAgent {
	return &simAgent{host: host, stageDelay: stageDelay, fails: fails, current: "v1", previous: "v0",
		done: map[string]*golivev1.CommandResult{}, unacked: map[string]bool{}, stepDone: map[string]time.Time{}}
}

func (a *simAgent) services() []*golivev1.ServiceState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &golivev1.ServiceState{Name: serviceName, CurrentRelease: a.current, PreviousRelease: a.previous, SwapMode: "restart", State: "running",
		Health: &golivev1.HealthWindow{Requests: 50, AvgLatencyMs: 2, P99LatencyMs: 5, Healthy: true, LastProbe: timestamppb.Now(), WindowSeconds: 10}}
	if a.commandID != "" {
		st.State, st.CommandId, st.Stage = "deploying", a.commandID, a.stage
	}
	return []*golivev1.ServiceState{st}
}

// doneAt is when this host's last step of release finished (zero: none).
func (a *simAgent) doneAt(release string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stepDone[release]
}

func (a *simAgent) beat() *golivev1.ConnectRequest {
	return &golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
		Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}}
}

// sendNow sends m on the current stream, if there is one (a message lost
// with a stream is covered by the Hello and the resent results).
func (a *simAgent) sendNow(m *golivev1.ConnectRequest) {
	a.mu.Lock()
	send := a.send
	a.mu.Unlock()
	if send != nil {
		send(m)
	}
}

// loop keeps a stream up until ctx ends, as the agent does (it drops its
// token with the stream; 200 ms between attempts).
func (a *simAgent) loop(ctx context.Context, conn *grpc.ClientConn, sessions *atomic.Int64) {
	for ctx.Err() == nil {
		sessions.Add(1)
		a.session(ctx, conn)
		a.connected.Store(false)
		a.token.Store(0)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (a *simAgent) session(ctx context.Context, conn *grpc.ClientConn) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return err
	}
	var smu sync.Mutex
	send := func(m *golivev1.ConnectRequest) error {
		smu.Lock()
		defer smu.Unlock()
		return stream.Send(m)
	}
	a.mu.Lock()
	var resend []*golivev1.CommandResult
	var known []string
	for id, r := range a.done {
		known = append(known, id)
		if a.unacked[id] {
			resend = append(resend, r)
		}
	}
	a.mu.Unlock()
	if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-sim", AgentVersion: "sim", Labels: map[string]string{"role": "web"},
		Services: a.services(), UnackedResults: resend, KnownCommandIds: known}}}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	w := first.GetWelcome()
	if w == nil {
		return fmt.Errorf("%s: no Welcome", a.host)
	}
	a.approval(w.Approval, send)
	a.connected.Store(true)
	a.mu.Lock()
	a.send = send
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.send = nil
		a.mu.Unlock()
	}()
	interval := w.HeartbeatInterval.AsDuration()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if send(a.beat()) != nil {
					return
				}
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch p := m.Payload.(type) {
		case *golivev1.ConnectResponse_Approval:
			a.approval(p.Approval, send)
		case *golivev1.ConnectResponse_ResultAck:
			a.mu.Lock()
			delete(a.unacked, p.ResultAck.CommandId)
			a.mu.Unlock()
		case *golivev1.ConnectResponse_Command:
			a.command(ctx, p.Command, send)
		}
	}
}

func (a *simAgent) approval(u *golivev1.ApprovalUpdate, send func(*golivev1.ConnectRequest) error) {
	if u == nil {
		u = &golivev1.ApprovalUpdate{}
	}
	a.token.Store(u.FencingToken)
	send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_ApprovalAck{ApprovalAck: &golivev1.ApprovalAck{
		FencingToken: u.FencingToken, Revision: u.Revision}}})
}

func (a *simAgent) command(ctx context.Context, c *golivev1.Command, send func(*golivev1.ConnectRequest) error) {
	a.mu.Lock()
	prev, seen := a.done[c.Id]
	busy := a.commandID == c.Id
	a.mu.Unlock()
	ack := func(ok bool, reason string) {
		send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: &golivev1.CommandAck{CommandId: c.Id, Accepted: ok, Reason: reason}}})
	}
	if seen || busy {
		ack(true, "already running or done (idempotent by id)")
		if prev != nil {
			send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: prev}})
		}
		return
	}
	res := &golivev1.CommandResult{CommandId: c.Id, Service: serviceName, Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED}
	switch act := c.Action.(type) {
	case *golivev1.Command_Preflight:
		a.preflight.Add(1)
		ack(true, "")
		res.Checks = []*golivev1.CheckResult{{Name: "disk", Status: "pass"}, {Name: "health", Status: "pass"}}
		a.finish(res, send)
		return
	case *golivev1.Command_Deploy:
		if held := a.token.Load(); held == 0 || held != c.FencingToken {
			ack(false, fmt.Sprintf("stale fencing token %d: this agent holds %d", c.FencingToken, held))
			return
		}
		a.deploys.Add(1)
		ack(true, "")
		go a.run(ctx, c.Id, func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.fails(act.Deploy.Release) {
				res.Outcome, res.Error, res.Release, res.PreviousRelease = golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK,
					"health: simulated failure; put back "+a.current, a.current, a.previous
				return
			}
			a.previous, a.current = a.current, act.Deploy.Release
			res.Release, res.PreviousRelease = a.current, a.previous
		}, res)
	case *golivev1.Command_Rollback:
		if !act.Rollback.Operator {
			if held := a.token.Load(); held == 0 || held != c.FencingToken {
				ack(false, fmt.Sprintf("stale fencing token %d: this agent holds %d", c.FencingToken, held))
				return
			}
		}
		a.rollbacks.Add(1)
		ack(true, "")
		go a.run(ctx, c.Id, func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			to := act.Rollback.ToRelease
			if to == "" {
				to = a.previous
			}
			if to != a.current {
				a.previous, a.current = a.current, to
			}
			res.Release, res.PreviousRelease = a.current, a.previous
		}, res)
	default:
		ack(false, "this agent executes deploy, rollback and preflight commands only")
	}
}

// run reports each stage after stageDelay, applies the step's effect at
// the swap, then sends the result.
func (a *simAgent) run(ctx context.Context, id string, apply func(), res *golivev1.CommandResult) {
	a.mu.Lock()
	a.commandID = id
	a.mu.Unlock()
	for _, st := range stages {
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.stageDelay):
		}
		if st == "swap" {
			apply()
		}
		a.mu.Lock()
		a.stage = st
		a.mu.Unlock()
		res.Stages = append(res.Stages, &golivev1.StageReport{Stage: st, Ok: true, Seconds: a.stageDelay.Seconds()})
		a.sendNow(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandProgress{CommandProgress: &golivev1.CommandProgress{
			CommandId: id, Service: serviceName, Stage: st, At: timestamppb.Now()}}})
		a.sendNow(a.beat())
	}
	a.mu.Lock()
	a.commandID, a.stage = "", ""
	a.mu.Unlock()
	a.finish(res, nil)
}

func (a *simAgent) finish(res *golivev1.CommandResult, send func(*golivev1.ConnectRequest) error) {
	res.FinishedAt = timestamppb.Now()
	a.mu.Lock()
	if res.Checks == nil && res.Release != "" {
		a.stepDone[res.Release] = res.FinishedAt.AsTime()
	}
	a.done[res.CommandId], a.unacked[res.CommandId] = res, true
	a.mu.Unlock()
	m := &golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}}
	if send != nil {
		send(m)
		return
	}
	a.sendNow(a.beat())
	a.sendNow(m)
}
