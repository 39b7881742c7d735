package fanout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// connectAttempts bounds how often one agent tries to connect (the
// controller refuses streams until its etcd session exists).
const connectAttempts = 8

// fleet is the simulated agents. Every goroutine it starts is tracked by wg
// and ends when ctx is cancelled (stop).
type fleet struct {
	opts   Options
	target string
	base   time.Time
	dial   []func(context.Context, string) (net.Conn, error)
	// creds are agent i's transport credentials (nil: insecure).
	creds func(i int) credentials.TransportCredentials

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	agents []*agent

	cur     atomic.Pointer[phase]
	ended   atomic.Int64
	beats   atomic.Int64
	lastErr firstErr
}

type agent struct {
	f      *fleet
	idx    int
	host   string
	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[golivev1.ConnectRequest, golivev1.ConnectResponse]
	sendMu sync.Mutex
	token  atomic.Int64
}

func newFleet(opts Options, target string) *fleet {
	ctx, cancel := context.WithCancel(context.Background())
	return &fleet{opts: opts, target: target, base: time.Now(), dial: dialers(opts.SourceAddrs), ctx: ctx, cancel: cancel}
}

// now is the fleet clock: monotonic nanoseconds since the fleet began, never 0.
func (f *fleet) now() int64 { return int64(time.Since(f.base)) + 1 }

func (f *fleet) streamErrors() int { return int(f.ended.Load()) }

// begin installs a new phase: from now on, agents acking an update whose
// active flag is active are counted in it.
func (f *fleet) begin(active bool) *phase {
	p := &phase{active: active, ack: make([]atomic.Int64, f.opts.N), n: int64(f.opts.N), done: make(chan struct{})}
	f.cur.Store(p)
	return p
}

// connect connects every agent, ConnectConcurrency at a time, and returns
// once each has its Welcome (or the first failure).
func (f *fleet) connect(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnFleet := context.AfterFunc(f.ctx, cancel)
	defer stopOnFleet()

	idx := make(chan int)
	var (
		workers  sync.WaitGroup
		errOnce  firstErr
		welcomed atomic.Int64
	)
	for range min(f.opts.ConnectConcurrency, f.opts.N) {
		workers.Go(func() {
			for i := range idx {
				a, err := f.connectOne(ctx, i)
				if err != nil {
					errOnce.set(err)
					cancel()
					continue
				}
				f.mu.Lock()
				f.agents = append(f.agents, a)
				f.mu.Unlock()
				if n := welcomed.Add(1); n%1000 == 0 && int(n) < f.opts.N {
					fmt.Fprintf(f.opts.Log, "fanout N=%d: %d agents welcomed\n", f.opts.N, n)
				}
			}
		})
	}
feed:
	for i := range f.opts.N {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	workers.Wait()
	if err := errOnce.get(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connecting agents: %w", err)
	}
	return nil
}

// connectOne dials, says Hello and waits for Welcome, retrying a refused
// or failed attempt a bounded number of times; then it starts the agent's
// receiver and heartbeat goroutines.
func (f *fleet) connectOne(ctx context.Context, i int) (*agent, error) {
	backoff := 50 * time.Millisecond
	var err error
	for attempt := 1; attempt <= connectAttempts; attempt++ {
		var a *agent
		var hb time.Duration
		a, hb, err = f.tryConnect(ctx, i)
		if err == nil {
			f.wg.Add(2)
			go a.receive()
			go a.heartbeat(hb)
			return a, nil
		}
		if ctx.Err() != nil || !retryable(err) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("agent %d: %w (last error: %v)", i, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil, fmt.Errorf("agent %d: connect: %w", i, err)
}

func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

func (f *fleet) tryConnect(ctx context.Context, i int) (*agent, time.Duration, error) {
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if f.creds != nil {
		creds = f.creds(i)
	}
	conn, err := grpc.NewClient("passthrough:///"+f.target,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(f.dial[i%len(f.dial)]),
		// Small buffers: this process holds thousands of connections.
		grpc.WithWriteBufferSize(8*1024), grpc.WithReadBufferSize(8*1024), grpc.WithSharedWriteBuffer(true),
	)
	if err != nil {
		return nil, 0, err
	}
	a := &agent{f: f, idx: i, host: hostID(i), conn: conn}
	// The stream lives as long as the fleet, not the connect call.
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(f.ctx)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	a.stream = stream
	var inst [8]byte
	rand.Read(inst[:])
	hello := &golivev1.Hello{
		HostId: a.host, InstanceId: hex.EncodeToString(inst[:]), AgentVersion: "bench",
		Labels:   map[string]string{"role": "bench", "shard": fmt.Sprint(i % 16)},
		Services: benchServices(),
	}
	welcome, err := a.hello(ctx, hello)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	ap := welcome.GetApproval()
	a.token.Store(ap.GetFencingToken())
	hb := welcome.GetHeartbeatInterval().AsDuration()
	if hb <= 0 {
		hb = 5 * time.Second
	}
	return a, hb, nil
}

func benchServices() []*golivev1.ServiceState {
	return []*golivev1.ServiceState{{Name: "web", CurrentRelease: "r1", SwapMode: "symlink", State: "running",
		Health: &golivev1.HealthWindow{Healthy: true, Requests: 10, WindowSeconds: 30}}}
}

// movingServices are benchServices as a real agent reports them: every
// probe shifts the health window (requests, latency, last probe) and the
// load balancer's traffic window, though nothing an operator acts on
// changed.
func movingServices(beat int64) []*golivev1.ServiceState {
	now := timestamppb.Now()
	return []*golivev1.ServiceState{{Name: "web", CurrentRelease: "r1", SwapMode: "symlink", State: "running",
		Health: &golivev1.HealthWindow{Healthy: true, Requests: 10 + uint64(beat%3), AvgLatencyMs: 1 + float64(beat%17)/10, WindowSeconds: 30, LastProbe: now},
		Traffic: &golivev1.TrafficWindow{Source: "nginx", ObservedAt: now,
			Slots: []*golivev1.SlotTraffic{{Slot: "", Requests: 1000 + uint64(beat*37%101), AvgLatencyMs: 3 + float64(beat%7)/10, ObservedAt: now}}}}}
}

// hello sends Hello and waits for Welcome, bounded by the phase timeout.
func (a *agent) hello(ctx context.Context, h *golivev1.Hello) (*golivev1.Welcome, error) {
	if err := a.stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: h}}); err != nil {
		_, err = a.stream.Recv() // the real error is in the status
		return nil, err
	}
	// Recv has no deadline of its own: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { a.conn.Close() })
	defer stop()
	t := time.AfterFunc(a.f.opts.PhaseTimeout, func() { a.conn.Close() })
	defer t.Stop()
	m, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	w := m.GetWelcome()
	if w == nil {
		return nil, status.Errorf(codes.Internal, "first message from the controller is %T, want Welcome", m.Payload)
	}
	return w, nil
}

func (a *agent) send(m *golivev1.ConnectRequest) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.stream.Send(m)
}

// receive acks every approval update and reports it to the current phase.
func (a *agent) receive() {
	defer a.f.wg.Done()
	for {
		m, err := a.stream.Recv()
		if err != nil {
			a.ended(err)
			return
		}
		u := m.GetApproval()
		if u == nil {
			continue
		}
		a.token.Store(u.FencingToken)
		err = a.send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_ApprovalAck{
			ApprovalAck: &golivev1.ApprovalAck{FencingToken: u.FencingToken, Revision: u.Revision}}})
		at := a.f.now()
		if err != nil {
			continue // Recv reports why the stream ended
		}
		if p := a.f.cur.Load(); p != nil {
			p.observe(a.idx, u.Active, at)
		}
	}
}

// heartbeat sends a Heartbeat every interval until the fleet stops.
func (a *agent) heartbeat(every time.Duration) {
	defer a.f.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var beats int64
	for {
		select {
		case <-a.f.ctx.Done():
			return
		case <-t.C:
			svc := benchServices()
			if a.f.opts.MovingFigures {
				beats++
				svc = movingServices(beats)
			}
			err := a.send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
				Services: svc, FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
			if err != nil {
				return // receive records the stream's end
			}
			a.f.beats.Add(1)
		}
	}
}

func (a *agent) ended(err error) {
	if a.f.ctx.Err() != nil {
		return // we are stopping
	}
	a.f.ended.Add(1)
	a.f.lastErr.set(fmt.Errorf("agent %s: stream ended: %w", a.host, err))
}

// stop ends every stream, closes every connection and waits for all the
// fleet's goroutines.
func (f *fleet) stop() {
	f.cancel()
	f.mu.Lock()
	agents := f.agents
	f.agents = nil
	f.mu.Unlock()
	for _, a := range agents {
		a.conn.Close()
	}
	f.wg.Wait()
}
