// Package hub owns a controller replica's agent streams: admission (one live stream per host across replicas), approval and command pushes, and agent records in etcd.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/controller/metrics"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/state"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

var hostIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidHostID reports whether id may name a host: letters, digits, '.',
// '_' or '-', at most 64, starting with a letter or digit.
func ValidHostID(id string) bool { return hostIDPattern.MatchString(id) }

// presence is the value of presence/<host>.
type presence struct {
	Replica  string    `json:"replica"`
	ConnID   string    `json:"conn_id"`
	Instance string    `json:"instance"`
	Since    time.Time `json:"since"`
	Address  string    `json:"address"`
}

// Owner is what the hub calls back into: the controller stores results and
// sends pending commands. Calls run on goroutines the hub owns, with a
// context that ends when the hub closes.
type Owner interface {
	// AgentHello: host's stream was admitted (send its pending commands).
	AgentHello(ctx context.Context, host string)
	// AgentResult: host reported a command's final result; the hub acks it
	// to the agent only once it returns nil (stored): the agent keeps an
	// unacked result and sends it again on its next connect.
	AgentResult(ctx context.Context, host string, r *golivev1.CommandResult) error
	// AgentAck: host accepted or refused a command.
	AgentAck(ctx context.Context, host string, a *golivev1.CommandAck)
}

// Config is what a Hub needs.
type Config struct {
	Log       hclog.Logger
	Client    *clientv3.Client
	Keys      state.Keys
	Replica   string
	Metrics   *metrics.Metrics
	Heartbeat time.Duration
	Owner     Owner
	// FiguresEvery is how often, at most, an idle agent's record is
	// rewritten in etcd only because its figures (health and traffic
	// windows, last heartbeat) moved (default DefaultFiguresEvery).
	FiguresEvery time.Duration
	// HotFor is how long after a command was sent to a host, or the host
	// reported on one, its figures are written with every heartbeat
	// (default DefaultHotFor).
	HotFor time.Duration
}

// Hub owns this replica's agent streams: it admits them (one live stream per
// host id across all replicas, enforced by presence/<host> in etcd), pushes
// approval updates and commands to them, and records their state in etcd.
//
// Every stream has two goroutines: the gRPC handler, which receives, and a
// sender, which drains a bounded queue. A stream whose queue is full is
// closed: the agent reconnects and resyncs, and no broadcast ever waits for
// a slow agent.
type Hub struct {
	golivev1.UnimplementedAgentServiceServer

	log     hclog.Logger
	cli     *clientv3.Client
	keys    state.Keys
	replica string
	metrics *metrics.Metrics
	owner   Owner
	// ctx ends when the hub closes; wg holds every goroutine it started.
	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	heartbeat    time.Duration
	timeout      time.Duration
	flushEvery   time.Duration
	figuresEvery time.Duration
	hotFor       time.Duration

	sessMu  sync.RWMutex
	session *concurrency.Session
	// sessSet is closed when a session is set (then replaced when it is
	// cleared), so that streams arriving before it can wait for it.
	sessSet chan struct{}

	mu    sync.RWMutex
	conns map[string]*agentConn

	apMu     sync.Mutex
	apMsg    *encoded
	apUpdate *golivev1.ApprovalUpdate

	flushReq chan struct{}
	// pending holds the streams whose record has changes etcd lacks.
	pendMu  sync.Mutex
	pending map[*agentConn]struct{}

	claimOnce sync.Once
	claimq    chan *claimReq
}

type agentConn struct {
	host     string
	connID   string
	instance string
	address  string
	since    time.Time
	sendq    chan any
	done     chan struct{}
	closeErr atomic.Pointer[error]
	once     sync.Once

	tokenHeld atomic.Int64

	mu     sync.Mutex
	record *golivev1.Agent
	// gen counts changes of record; snap is a deep copy of record as of
	// snapGen, shared read-only by Agents' answers (see snapshot).
	gen, snapGen uint64
	snap         *golivev1.Agent
	// dirty: a field readers act on changed (release, state, slot,
	// healthy, stage, results): written at the next flush.
	dirty bool
	// figures: only figures moved (health and traffic windows, last
	// heartbeat): written once nextFigures is due, or at the next flush
	// while the host is hot (hotUntil).
	figures     bool
	moved       bool // the health or traffic figures themselves moved
	nextFigures time.Time
	hotUntil    time.Time
	lastBeat    time.Time
}

func (c *agentConn) close(err error) {
	c.once.Do(func() {
		c.closeErr.Store(&err)
		close(c.done)
	})
}

// send queues a message without blocking; false means the queue is full
// and the stream was closed.
func (c *agentConn) send(m any) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.sendq <- m:
		return true
	default:
		c.close(status.Error(codes.ResourceExhausted, "agent too slow: send queue full; reconnect to resync"))
		return false
	}
}

// New returns a Hub; Close stops what it started.
func New(cfg Config) *Hub {
	heartbeat := cfg.Heartbeat
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		log: cfg.Log, cli: cfg.Client, keys: cfg.Keys, replica: cfg.Replica, metrics: cfg.Metrics, owner: cfg.Owner,
		ctx: ctx, cancel: cancel,
		// Lost after 3 missed heartbeats, but never sooner than 15 s: a
		// loaded controller must not drop agents that are merely slow.
		heartbeat: heartbeat, timeout: max(3*heartbeat, 15*time.Second), flushEvery: flushTick,
		figuresEvery: cfg.FiguresEvery, hotFor: cfg.HotFor,
		conns:    map[string]*agentConn{},
		flushReq: make(chan struct{}, 1),
		pending:  map[*agentConn]struct{}{},
		claimq:   make(chan *claimReq, claimBatch*claimWorkers),
	}
	if h.figuresEvery <= 0 {
		h.figuresEvery = DefaultFiguresEvery
	}
	if h.hotFor <= 0 {
		h.hotFor = DefaultHotFor
	}
	h.setApprovalLocked(&golivev1.ApprovalUpdate{Reason: "sync"})
	return h
}

// Close ends every stream with err and waits for the goroutines the hub
// started (result handling, receivers).
func (h *Hub) Close(err error) {
	h.CloseAll(err)
	h.cancel()
	h.wg.Wait()
}

// goAttach runs f on a goroutine the hub owns (etcd's GoAttach): none is
// started once the hub closed.
func (h *Hub) goAttach(f func()) {
	select {
	case <-h.ctx.Done():
		return
	default:
	}
	h.wg.Add(1)
	go func() { defer h.wg.Done(); f() }()
}

// SetSession sets (nil: clears) the etcd session whose lease holds this
// replica's presence keys.
func (h *Hub) SetSession(s *concurrency.Session) {
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	h.session = s
	if h.sessSet == nil {
		h.sessSet = make(chan struct{})
	}
	if s != nil {
		select {
		case <-h.sessSet:
		default:
			close(h.sessSet)
		}
	} else {
		select {
		case <-h.sessSet:
			h.sessSet = make(chan struct{})
		default:
		}
	}
}

// waitLease returns the session's lease, waiting up to d for a session: a
// replica that just started (or is renewing its session) accepts streams a
// moment before its etcd session exists, and a reconnecting fleet should
// not be refused for that.
func (h *Hub) waitLease(ctx context.Context, d time.Duration) (clientv3.LeaseID, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if l, ok := h.lease(); ok {
			return l, true
		}
		h.sessMu.Lock()
		if h.sessSet == nil {
			h.sessSet = make(chan struct{})
		}
		ch := h.sessSet
		h.sessMu.Unlock()
		select {
		case <-ch:
			// A session was set; it may already be done: check again,
			// but not in a tight loop.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return 0, false
			}
		case <-deadline.C:
			return h.lease()
		case <-ctx.Done():
			return 0, false
		}
	}
}

func (h *Hub) lease() (clientv3.LeaseID, bool) {
	h.sessMu.RLock()
	defer h.sessMu.RUnlock()
	if h.session == nil {
		return 0, false
	}
	select {
	case <-h.session.Done():
		return 0, false
	default:
	}
	return h.session.Lease(), true
}

func (h *Hub) setApprovalLocked(u *golivev1.ApprovalUpdate) {
	msg, _ := encodeOnce(&golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_Approval{Approval: u}})
	h.apMsg, h.apUpdate = msg, u
}

// ApprovalUpdate converts an approval to the wire update.
func ApprovalUpdate(a approval.Approval, rev int64, reason string) *golivev1.ApprovalUpdate {
	u := &golivev1.ApprovalUpdate{Revision: rev, Reason: reason}
	if a.Token != 0 && a.Active(time.Now()) {
		u.FencingToken = a.Token
		u.Active = true
		u.ExpiresAt = timestamppb.New(a.ExpiresAt)
	}
	return u
}

// Broadcast pushes an approval update to every connected agent, encoded
// once. Updates older than the last one sent are dropped (the revoke RPC and
// the etcd watch both deliver the same change); "lost" always applies.
func (h *Hub) Broadcast(u *golivev1.ApprovalUpdate) {
	h.apMu.Lock()
	cur := h.apUpdate
	same := cur.FencingToken == u.FencingToken && cur.Active == u.Active
	switch {
	case u.Reason == "lost":
		if same {
			h.apMu.Unlock()
			return
		}
		u.Revision = cur.Revision
	case u.Revision < cur.Revision, u.Revision == cur.Revision && same, same && u.Reason == "sync":
		h.apMu.Unlock()
		return
	}
	h.setApprovalLocked(u)
	msg := h.apMsg
	h.apMu.Unlock()

	h.metrics.ApprovalActive.Set(b2f(u.Active))
	if u.Active && u.ExpiresAt != nil {
		h.metrics.ApprovalExpiry.SetDeadline(u.ExpiresAt.AsTime())
	} else {
		h.metrics.ApprovalExpiry.SetDeadline(time.Time{})
	}
	h.metrics.ApprovalToken.Set(float64(u.FencingToken))
	h.metrics.Broadcasts.WithLabelValues(u.Reason).Inc()
	h.mu.RLock()
	conns := make([]*agentConn, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.RUnlock()
	slow := 0
	for _, c := range conns {
		if !c.send(msg) {
			slow++
		}
	}
	if slow > 0 {
		h.metrics.SlowDisconnects.Add(float64(slow))
	}
	h.log.Info("approval pushed to agents", "reason", u.Reason, "fencing_token", u.FencingToken, "active", u.Active, "agents", len(conns), "slow", slow)
}

// CurrentApproval is the last approval update pushed to agents.
func (h *Hub) CurrentApproval() *golivev1.ApprovalUpdate {
	h.apMu.Lock()
	defer h.apMu.Unlock()
	return h.apUpdate
}

// SendCommand queues a command for host if this replica holds its stream.
func (h *Hub) SendCommand(host string, cmd *golivev1.Command) bool {
	h.mu.RLock()
	c := h.conns[host]
	h.mu.RUnlock()
	if c == nil {
		return false
	}
	h.heat(c)
	return c.send(&golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_Command{Command: cmd}})
}

// Holds reports whether this replica holds host's stream.
func (h *Hub) Holds(host string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.conns[host] != nil
}

// NewID is a random hex id.
func NewID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Connect implements AgentService.
func (h *Hub) Connect(stream grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse]) error {
	ctx := stream.Context()
	first, err := recvWithTimeout(stream, 10*time.Second)
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		h.metrics.RefusedConnects.WithLabelValues("no_hello").Inc()
		return status.Error(codes.InvalidArgument, "the first message on the stream must be Hello")
	}
	if !hostIDPattern.MatchString(hello.HostId) {
		h.metrics.RefusedConnects.WithLabelValues("bad_host_id").Inc()
		return status.Errorf(codes.InvalidArgument, "host id %q is not valid: use letters, digits, '.', '_' or '-' (at most 64)", hello.HostId)
	}
	if err := agentIdentityMatches(ctx, hello.HostId); err != nil {
		h.metrics.RefusedConnects.WithLabelValues("identity").Inc()
		return err
	}
	addr := ""
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr.String()
	}
	c := &agentConn{
		host: hello.HostId, connID: NewID(), instance: hello.InstanceId, address: addr, since: time.Now(),
		sendq: make(chan any, 16), done: make(chan struct{}),
	}
	c.tokenHeld.Store(hello.FencingToken)
	c.record = agentRecord(hello, h.replica, addr, c.since)
	c.lastBeat = c.since
	// The claim writes the whole record; the first figures-only rewrite
	// falls anywhere in the next interval, so that a fleet that
	// reconnected at once does not rewrite itself at once.
	c.nextFigures = c.since.Add(randDuration(h.figuresEvery))
	if err := h.claim(ctx, c); err != nil {
		return err
	}
	log := h.log.With("host_id", c.host, "conn_id", c.connID)
	h.register(c)
	defer h.release(c)
	log.Info("agent connected", "address", addr, "agent_version", hello.AgentVersion, "services", len(hello.Services))

	// Welcome carries the approval; anything broadcast after register is
	// queued behind it, so the agent never sees an older state last.
	h.apMu.Lock()
	welcome := &golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_Welcome{Welcome: &golivev1.Welcome{
		ControllerId:      h.replica,
		HeartbeatInterval: durationpb.New(h.heartbeat),
		Approval:          h.apUpdate,
	}}}
	c.send(welcome)
	h.apMu.Unlock()
	for _, r := range hello.UnackedResults {
		h.handleResult(c, r)
	}
	h.goAttach(func() { h.owner.AgentHello(h.ctx, c.host) })

	// The handler goroutine sends; one goroutine receives. When the handler
	// returns, gRPC cancels the stream and the receiver's Recv returns; the
	// hub owns the receiver and waits for it on Close.
	h.wg.Add(1)
	go func() { defer h.wg.Done(); c.close(h.receiver(stream, c)) }()
	c.close(h.sender(stream, c))
	var result error
	if p := c.closeErr.Load(); p != nil {
		result = *p
	}
	log.Info("agent disconnected", "reason", errString(result))
	if result == nil || errors.Is(result, context.Canceled) {
		return nil
	}
	return apierr.ToStatus(result)
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

func recvWithTimeout(stream grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse], d time.Duration) (*golivev1.ConnectRequest, error) {
	type res struct {
		m   *golivev1.ConnectRequest
		err error
	}
	ch := make(chan res, 1)
	// Ends when Recv does: at the latest when the handler returns and gRPC
	// cancels the stream.
	go func() {
		m, err := stream.Recv()
		ch <- res{m, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no Hello within %s", d)
	}
}

func (h *Hub) sender(stream grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse], c *agentConn) error {
	for {
		select {
		case <-c.done:
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		case m := <-c.sendq:
			if err := stream.SendMsg(m); err != nil {
				return err
			}
		}
	}
}

func (h *Hub) receiver(stream grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse], c *agentConn) error {
	// A watchdog ends the stream when heartbeats stop (a silent network);
	// gRPC keepalive catches dead TCP underneath.
	watchdog := time.AfterFunc(h.timeout, func() {
		c.close(status.Errorf(codes.DeadlineExceeded, "no heartbeat from %s for %s", c.host, h.timeout))
	})
	defer watchdog.Stop()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		watchdog.Reset(h.timeout)
		h.handle(c, m)
	}
}

func (h *Hub) handle(c *agentConn, m *golivev1.ConnectRequest) {
	switch p := m.Payload.(type) {
	case *golivev1.ConnectRequest_Heartbeat:
		// Heartbeats update memory; etcd is written only when something an
		// operator or another replica cares about changed.
		// Heartbeats update memory (Agents reads local streams from
		// here). etcd gets the record at once only when a field readers
		// act on changed; figures alone (health and traffic windows, the
		// heartbeat's time) are written every FiguresEvery, or with every
		// heartbeat while the host is hot (a rollout's gate reads them).
		c.mu.Lock()
		changed := servicesChanged(c.record.Services, p.Heartbeat.Services)
		// A new release's first health figures: a gate waits for them.
		firstData := healthFirstData(c.record.Services, p.Heartbeat.Services)
		// The token an agent holds is shown, never acted on (every
		// command is fenced in etcd and checked by the agent): a figure,
		// or an approval change to 10,000 agents would be 10,000 writes.
		moved := figuresMoved(c.record.Services, p.Heartbeat.Services) || c.record.FencingToken != p.Heartbeat.FencingToken
		c.record.Services = p.Heartbeat.Services
		c.record.FencingToken = p.Heartbeat.FencingToken
		c.gen++
		c.lastBeat = time.Now()
		c.record.LastHeartbeat = timestamppb.New(c.lastBeat)
		c.dirty = c.dirty || changed || firstData
		c.figures = true
		c.moved = c.moved || moved
		urgent := c.dirty || c.moved && c.lastBeat.Before(c.hotUntil)
		c.mu.Unlock()
		c.tokenHeld.Store(p.Heartbeat.FencingToken)
		h.enqueue(c, urgent)
	case *golivev1.ConnectRequest_ApprovalAck:
		// Kept in memory (ListAgents reads it from here); the next heartbeat
		// carries it to etcd. No etcd write per ack: a broadcast to 5,000
		// agents must not turn into 5,000 writes.
		c.tokenHeld.Store(p.ApprovalAck.FencingToken)
	case *golivev1.ConnectRequest_CommandAck:
		h.heat(c)
		if !p.CommandAck.Accepted {
			// A refusal is the command's final result: stored off the
			// receive path, like results.
			ack := p.CommandAck
			h.goAttach(func() { h.owner.AgentAck(h.ctx, c.host, ack) })
		}
	case *golivev1.ConnectRequest_CommandProgress:
		c.mu.Lock()
		c.gen++
		for _, s := range c.record.Services {
			if s.Name == p.CommandProgress.Service {
				s.CommandId, s.Stage = p.CommandProgress.CommandId, p.CommandProgress.Stage
			}
		}
		c.dirty = true
		c.hotUntil = time.Now().Add(h.hotFor)
		c.mu.Unlock()
		h.enqueue(c, true)
	case *golivev1.ConnectRequest_CommandResult:
		h.handleResult(c, p.CommandResult)
	case *golivev1.ConnectRequest_Hello:
		h.log.Warn("ignoring a second Hello on one stream", "host_id", c.host)
	}
}

func (h *Hub) handleResult(c *agentConn, r *golivev1.CommandResult) {
	c.mu.Lock()
	c.gen++
	c.record.RecentResults = append([]*golivev1.CommandResult{r}, c.record.RecentResults...)
	if len(c.record.RecentResults) > 5 {
		c.record.RecentResults = c.record.RecentResults[:5]
	}
	c.dirty = true
	c.hotUntil = time.Now().Add(h.hotFor)
	c.mu.Unlock()
	h.enqueue(c, true)
	// Storing the result takes etcd round trips: not on the receive path,
	// where it would hold up heartbeats. The agent resends until acked.
	h.goAttach(func() {
		if err := h.owner.AgentResult(h.ctx, c.host, r); err != nil {
			return // not stored: no ack, the agent sends it again
		}
		c.send(&golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_ResultAck{ResultAck: &golivev1.ResultAck{CommandId: r.CommandId}}})
	})
}

// healthFirstData reports whether a service went from no health samples
// to some (a fresh window after a release went live).
func healthFirstData(a, b []*golivev1.ServiceState) bool {
	for i := range b {
		if i < len(a) && a[i].GetHealth().GetRequests() == 0 && b[i].GetHealth().GetRequests() > 0 {
			return true
		}
	}
	return false
}

// figuresMoved reports whether any service's health or traffic window
// differs between a and b.
func figuresMoved(a, b []*golivev1.ServiceState) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		if !proto.Equal(a[i].GetHealth(), b[i].GetHealth()) || !proto.Equal(a[i].GetTraffic(), b[i].GetTraffic()) {
			return true
		}
	}
	return false
}

func servicesChanged(a, b []*golivev1.ServiceState) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].CurrentRelease != b[i].CurrentRelease || a[i].State != b[i].State ||
			a[i].ActiveSlot != b[i].ActiveSlot || a[i].Health.GetHealthy() != b[i].Health.GetHealthy() {
			return true
		}
	}
	return false
}

func agentRecord(hello *golivev1.Hello, replica, addr string, since time.Time) *golivev1.Agent {
	return &golivev1.Agent{
		HostId: hello.HostId, Labels: hello.Labels, AgentVersion: hello.AgentVersion, Replica: replica,
		ConnectedAt: timestamppb.New(since), LastHeartbeat: timestamppb.New(since), Services: hello.Services,
		FencingToken: hello.FencingToken, Address: addr, MetricsAddress: hello.MetricsAddress,
	}
}

// claimOne is claim in transactions of its own: the path for a claim that
// a batch could not settle (a conflict, or the only claim waiting).
func (h *Hub) claimOne(ctx context.Context, r *claimReq) error {
	c, lease, pv, rec := r.c, r.lease, r.pv, r.rec
	pkey := h.keys.Presence(c.host)
	for attempt := 0; attempt < 3; attempt++ {
		resp, err := h.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(pkey), "=", 0)).
			Then(clientv3.OpPut(pkey, string(pv), clientv3.WithLease(lease)), clientv3.OpPut(h.keys.Agent(c.host), string(rec))).
			Else(clientv3.OpGet(pkey)).Commit()
		if err != nil {
			h.metrics.EtcdErrors.WithLabelValues("claim").Inc()
			return status.Errorf(codes.Unavailable, "record agent in etcd: %v", err)
		}
		h.metrics.ClaimTxns.WithLabelValues("single").Inc()
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		if err := h.sameInstance(c, kvs[0].Value); err != nil {
			return err
		}
		// Same agent process reconnecting: take over its stale stream.
		resp, err = h.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(pkey), "=", kvs[0].ModRevision)).
			Then(clientv3.OpPut(pkey, string(pv), clientv3.WithLease(lease)), clientv3.OpPut(h.keys.Agent(c.host), string(rec))).
			Commit()
		if err != nil {
			h.metrics.EtcdErrors.WithLabelValues("claim").Inc()
			return status.Errorf(codes.Unavailable, "record agent in etcd: %v", err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return status.Errorf(codes.Aborted, "host id %q: presence changed while connecting; retry", c.host)
}

func (h *Hub) register(c *agentConn) {
	h.mu.Lock()
	old := h.conns[c.host]
	h.conns[c.host] = c
	n := len(h.conns)
	h.mu.Unlock()
	if old != nil {
		old.close(status.Error(codes.Aborted, "replaced by a newer stream of the same agent"))
	}
	h.metrics.AgentsConnected.Set(float64(n))
}

// release drops c and, if its presence is still ours, deletes it and stores
// the last known record.
func (h *Hub) release(c *agentConn) {
	h.mu.Lock()
	if h.conns[c.host] == c {
		delete(h.conns, c.host)
	}
	n := len(h.conns)
	h.mu.Unlock()
	h.metrics.AgentsConnected.Set(float64(n))
	// The hub's context: a shutdown ends the streams (and so runs this)
	// before it closes the hub, and a closed hub does not wait on etcd.
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	c.mu.Lock()
	rec, _ := protojson.Marshal(c.record)
	c.dirty, c.figures, c.moved = false, false, false
	c.mu.Unlock()
	pkey := h.keys.Presence(c.host)
	get, err := h.cli.Get(ctx, pkey)
	if err != nil || len(get.Kvs) == 0 {
		return
	}
	var p presence
	json.Unmarshal(get.Kvs[0].Value, &p)
	if p.ConnID != c.connID {
		return
	}
	_, err = h.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(pkey), "=", get.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(pkey), clientv3.OpPut(h.keys.Agent(c.host), string(rec))).Commit()
	if err != nil {
		h.metrics.EtcdErrors.WithLabelValues("release").Inc()
	}
}

// CloseAll ends every stream (shutdown, or the etcd session was lost so our
// presence keys are gone: agents reconnect and claim again).
func (h *Hub) CloseAll(err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.conns {
		c.close(err)
	}
}

// WatchPresence closes local streams whose presence another stream took
// over (or that vanished from etcd): it reads presence/ at R, checks every
// local stream against it, then watches from R+1, so no change between the
// read and the watch is missed.
func (h *Hub) WatchPresence(ctx context.Context) {
	for ctx.Err() == nil {
		if err := h.watchPresenceOnce(ctx); err != nil && ctx.Err() == nil {
			h.metrics.EtcdErrors.WithLabelValues("watch_presence").Inc()
			h.log.Warn("presence watch", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (h *Hub) watchPresenceOnce(ctx context.Context) error {
	resp, err := h.cli.Get(ctx, h.keys.Presences(), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		h.checkPresence(state.HostFromKey(h.keys.Presences(), string(kv.Key)), kv.Value)
	}
	wch := h.cli.Watch(clientv3.WithRequireLeader(ctx), h.keys.Presences(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				h.checkPresence(state.HostFromKey(h.keys.Presences(), string(ev.Kv.Key)), ev.Kv.Value)
			}
		}
	}
	return ctx.Err()
}

// checkPresence closes host's local stream if presence value v names
// another connection.
func (h *Hub) checkPresence(host string, v []byte) {
	h.mu.RLock()
	c := h.conns[host]
	h.mu.RUnlock()
	if c == nil {
		return
	}
	var p presence
	json.Unmarshal(v, &p)
	if p.ConnID != c.connID && p.ConnID != "" {
		c.close(status.Error(codes.Aborted, "this host's stream moved to another connection"))
	}
}

// Agents lists every known agent: etcd records merged with presence and,
// for streams on this replica, the freshest in-memory state.
func (h *Hub) Agents(ctx context.Context) ([]*golivev1.Agent, error) {
	recs, err := h.cli.Get(ctx, h.keys.Agents(), clientv3.WithPrefix())
	if err != nil {
		h.metrics.EtcdErrors.WithLabelValues("list_agents").Inc()
		return nil, fmt.Errorf("read agents from etcd: %w", err)
	}
	pres, err := h.cli.Get(ctx, h.keys.Presences(), clientv3.WithPrefix(), clientv3.WithRev(recs.Header.Revision))
	if err != nil {
		return nil, fmt.Errorf("read presence from etcd: %w", err)
	}
	live := map[string]presence{}
	for _, kv := range pres.Kvs {
		var p presence
		json.Unmarshal(kv.Value, &p)
		live[state.HostFromKey(h.keys.Presences(), string(kv.Key))] = p
	}
	var out []*golivev1.Agent
	for _, kv := range recs.Kvs {
		host := state.HostFromKey(h.keys.Agents(), string(kv.Key))
		a := &golivev1.Agent{}
		h.mu.RLock()
		c := h.conns[host]
		h.mu.RUnlock()
		if c != nil {
			a = c.snapshot()
			a.FencingToken = c.tokenHeld.Load()
		} else if err := protojson.Unmarshal(kv.Value, a); err != nil {
			return nil, fmt.Errorf("agent record %s is corrupt: %w", host, err)
		}
		if p, ok := live[host]; ok {
			a.State = "connected"
			a.Replica = p.Replica
		} else {
			a.State = "lost"
			a.FencingToken = 0
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HostId < out[j].HostId })
	return out, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// agentIdentityMatches checks, with TLS, that an agent's Hello claims the
// host its certificate names.
func agentIdentityMatches(ctx context.Context, hostID string) error {
	id, err := pki.FromContext(ctx)
	if errors.Is(err, pki.ErrNoIdentity) {
		return nil // dev mode: no TLS
	}
	if err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	if !id.Agent || id.Name != hostID {
		return status.Errorf(codes.PermissionDenied, "certificate %s may not speak for host %q", id, hostID)
	}
	return nil
}
