package reconnectbench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/agent"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// fleet is the simulated agents: one goroutine each running the real
// agent's connect loop (session, then backoff, forever) over its own
// mutual-TLS connection. Every goroutine ends when ctx is cancelled.
type fleet struct {
	opts   Options
	target string
	certs  []tls.Certificate
	// instances are the agents' instance ids: one per agent process, the
	// same across its sessions, as the real agent's (the controller lets
	// the same instance take over its own stale presence).
	instances []string
	config    func(tls.Certificate) *tls.Config
	dial      []func(context.Context, string) (net.Conn, error)
	base      time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// gate bounds agents in their first session's connect at once (the
	// initial connect only: a fleet is not started in one instant).
	gate chan struct{}

	cur atomic.Pointer[epoch]
	// armed (set by armDialWatch once the old controller has exited) makes
	// the dialers record in firstDial the first connection that succeeds:
	// the new listener accepting.
	armed, firstDial atomic.Int64
}

// armDialWatch starts watching for the first successful dial.
func (f *fleet) armDialWatch() {
	f.firstDial.Store(0)
	f.armed.Store(1)
}

// epoch counts one connect storm: each agent's first Welcome after it
// began, every attempt and every failure.
type epoch struct {
	begun    int64
	welcomed []atomic.Int64 // fleet clock of the agent's first Welcome, 0 = not yet
	count    atomic.Int64
	n        int64
	done     chan struct{}
	attempts atomic.Int64

	mu       sync.Mutex
	failures []failure
	dropped  int // welcomed streams that ended within the epoch
	// dropExample is why the first of them ended.
	dropExample string
}

type failure struct {
	at    int64 // when the attempt began (fleet clock)
	class string
	msg   string
}

func newFleet(opts Options, target string, certs []tls.Certificate, config func(tls.Certificate) *tls.Config) *fleet {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{opts: opts, target: target, certs: certs, config: config,
		base: time.Now(), ctx: ctx, cancel: cancel, gate: make(chan struct{}, opts.ConnectConcurrency)}
	f.dial = dialers(opts.SourceAddrs, func() {
		if f.armed.Load() == 1 {
			f.firstDial.CompareAndSwap(0, f.now())
		}
	})
	f.instances = make([]string, opts.N)
	for i := range f.instances {
		var inst [8]byte
		rand.Read(inst[:])
		f.instances[i] = hex.EncodeToString(inst[:])
	}
	return f
}

// now is the fleet clock: monotonic nanoseconds since the fleet began, never 0.
func (f *fleet) now() int64 { return int64(time.Since(f.base)) + 1 }

// begin installs a new epoch.
func (f *fleet) begin() *epoch {
	e := &epoch{begun: f.now(), welcomed: make([]atomic.Int64, f.opts.N), n: int64(f.opts.N), done: make(chan struct{})}
	f.cur.Store(e)
	return e
}

// start launches every agent's connect loop.
func (f *fleet) start() {
	for i := range f.opts.N {
		f.wg.Go(func() { f.loop(i) })
	}
}

// stop ends every agent and waits for their goroutines.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// loop is the real agent's connectLoop with one controller address.
func (f *fleet) loop(i int) {
	attempt := 0
	first := true
	for f.ctx.Err() == nil {
		began := f.now()
		welcomed, err := f.session(i, first)
		first = false
		if f.ctx.Err() != nil {
			return
		}
		if welcomed {
			attempt = 0
		}
		if e := f.cur.Load(); e != nil && err != nil && !welcomed {
			e.fail(began, err)
		}
		t := time.NewTimer(agent.Backoff(attempt, f.opts.MaxBackoff))
		attempt++
		select {
		case <-f.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errWelcomeTimeout: no Welcome within Options.WelcomeTimeout.
var errWelcomeTimeout = errors.New("no Welcome in time")

// session runs one stream, as the real agent's session does: dial with the
// agent's certificate, Hello, Welcome, ack the approval, then heartbeats
// until the stream ends. It reports whether a Welcome arrived.
func (f *fleet) session(i int, first bool) (bool, error) {
	if first {
		select {
		case f.gate <- struct{}{}:
		case <-f.ctx.Done():
			return false, f.ctx.Err()
		}
	}
	release := func() {
		if first {
			<-f.gate
			first = false
		}
	}
	defer release()
	if e := f.cur.Load(); e != nil {
		e.attempts.Add(1)
	}
	conn, err := grpc.NewClient("passthrough:///"+f.target,
		grpc.WithTransportCredentials(credentials.NewTLS(f.config(f.certs[i]))),
		grpc.WithContextDialer(f.dial[i%len(f.dial)]),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		// Small buffers: this process holds thousands of connections.
		grpc.WithWriteBufferSize(8*1024), grpc.WithReadBufferSize(8*1024), grpc.WithSharedWriteBuffer(true),
	)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	hello := &golivev1.Hello{
		HostId: hostID(i), InstanceId: f.instances[i], AgentVersion: "bench",
		Labels:   map[string]string{"role": "bench", "shard": fmt.Sprint(i % 16)},
		Services: benchServices(),
	}
	if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		_, err = stream.Recv() // the real error is in the status
		return false, err
	}
	t := time.AfterFunc(f.opts.WelcomeTimeout, cancel)
	m, err := stream.Recv()
	if !t.Stop() {
		return false, errWelcomeTimeout
	}
	if err != nil {
		return false, err
	}
	w := m.GetWelcome()
	if w == nil {
		return false, status.Errorf(codes.Internal, "first message from the controller is %T, want Welcome", m.Payload)
	}
	e := f.cur.Load()
	if e != nil {
		e.welcome(i, f.now())
	}
	release()

	var sendMu sync.Mutex
	send := func(m *golivev1.ConnectRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	token := w.GetApproval().GetFencingToken()
	if ap := w.GetApproval(); ap != nil {
		_ = send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_ApprovalAck{
			ApprovalAck: &golivev1.ApprovalAck{FencingToken: ap.FencingToken, Revision: ap.Revision}}})
	}
	every := w.GetHeartbeatInterval().AsDuration()
	if every <= 0 {
		every = 5 * time.Second
	}
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tk.C:
				if send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
					Services: benchServices(), FencingToken: token, SentAt: timestamppb.Now()}}}) != nil {
					return
				}
			}
		}
	}()
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	cancel()
	<-hbDone
	if e != nil && e == f.cur.Load() && f.ctx.Err() == nil {
		e.mu.Lock()
		e.dropped++
		if e.dropExample == "" && err != nil {
			e.dropExample = err.Error()
		}
		e.mu.Unlock()
	}
	return true, err
}

func (e *epoch) welcome(i int, at int64) {
	if !e.welcomed[i].CompareAndSwap(0, at) {
		return
	}
	if e.count.Add(1) == e.n {
		close(e.done)
	}
}

func (e *epoch) fail(at int64, err error) {
	class := classify(err)
	e.mu.Lock()
	e.failures = append(e.failures, failure{at: at, class: class, msg: err.Error()})
	e.mu.Unlock()
}

// wait returns how many agents were welcomed, once all have or timeout
// passed; progress gets a line every 5 s.
func (e *epoch) wait(ctx context.Context, timeout time.Duration, progress func(n int)) int {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tk := time.NewTicker(5 * time.Second)
	defer tk.Stop()
	for {
		select {
		case <-e.done:
			return int(e.count.Load())
		case <-t.C:
			return int(e.count.Load())
		case <-ctx.Done():
			return int(e.count.Load())
		case <-tk.C:
			progress(int(e.count.Load()))
		}
	}
}

// NotReady is the cause of an attempt the controller refused because its
// etcd session (the lease agent presence is written under) did not exist
// yet: its listener and health service are up before that.
const NotReady = "refused: controller has no etcd session yet"

// classify names why an attempt failed.
func classify(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no etcd session"):
		return NotReady
	case errors.Is(err, errWelcomeTimeout):
		return "no Welcome in time"
	case strings.Contains(msg, "connection refused"):
		return "TCP refused"
	case strings.Contains(msg, "handshake"), strings.Contains(msg, "tls:"), strings.Contains(msg, "x509"):
		return "TLS handshake"
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "EOF"), strings.Contains(msg, "broken pipe"):
		return "connection reset"
	case strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "deadline"):
		return "dial timeout"
	}
	if s, ok := status.FromError(err); ok {
		return "stream refused: " + s.Code().String()
	}
	return "other"
}

func benchServices() []*golivev1.ServiceState {
	return []*golivev1.ServiceState{{Name: "web", CurrentRelease: "r1", SwapMode: "symlink", State: "running",
		Health: &golivev1.HealthWindow{Healthy: true, Requests: 10, WindowSeconds: 30}}}
}

// hostIDs are the simulated agents' host ids, bench-00000 on.
func hostIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = hostID(i)
	}
	return out
}

func hostID(i int) string { return fmt.Sprintf("bench-%05d", i) }

// dialers spread connections over loopback source addresses so that the
// ephemeral port range of one address is never the limit.
// connected is called after each successful dial.
func dialers(n int, connected func()) []func(context.Context, string) (net.Conn, error) {
	out := make([]func(context.Context, string) (net.Conn, error), n)
	for i := range out {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}}
		out[i] = func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				connected()
			}
			return c, err
		}
	}
	return out
}
