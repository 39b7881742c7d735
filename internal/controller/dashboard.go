package controller

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/dashboard"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/state"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// The web dashboard (internal/dashboard) runs inside Run when
// Config.DashboardAddr is set: its HTTP server, refresh loop and feed are
// one errgroup task that ends with the rest. It reads through the same
// functions as the API, acts through the ControlService handlers (so their
// audit entries name the dashboard's caller) and learns of changes from one
// watch of the etcd prefix.

// dashboardErrors validates --dashboard-addr: without TLS it must be loopback.
func (c Config) dashboardErrors() []error {
	if c.DashboardAddr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.DashboardAddr); err != nil {
		return []error{fmt.Errorf("--dashboard-addr %q: want host:port (empty: no dashboard)", c.DashboardAddr)}
	}
	if !c.TLS.Set() && !isLoopback(c.DashboardAddr) {
		return []error{fmt.Errorf("--dashboard-addr %s is not a loopback address: the dashboard serves without TLS only on loopback (set --tls-ca, --tls-cert and --tls-key, or use 127.0.0.1)", c.DashboardAddr)}
	}
	return nil
}

// dashboardRunner is the replica's dashboard: its listener and server.
type dashboardRunner struct {
	srv *dashboard.Server
	lis net.Listener
	tls bool
}

// newDashboard listens on cfg.DashboardAddr (nil when it is empty).
func newDashboard(s *Server, useTLS bool) (*dashboardRunner, error) {
	cfg := s.cfg
	if cfg.DashboardAddr == "" {
		return nil, nil
	}
	var key []byte
	if cfg.DataDir != "" {
		k, err := dashboard.LoadKey(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		key = k
	} else {
		key = make([]byte, 32)
		rand.Read(key)
		s.log.Warn("no --data-dir: the dashboard's signing key lives in memory; links and sessions end with this process")
	}
	var tc *tls.Config
	if useTLS {
		c, err := cfg.TLS.ServerConfig()
		if err != nil {
			return nil, fmt.Errorf("dashboard TLS: %w", err)
		}
		// A browser may present an operator certificate; one without
		// signs in with a link (a session cookie).
		c.ClientAuth = tls.VerifyClientCertIfGiven
		tc = c
	}
	dev, _ := actorAndSource(context.Background())
	srv, err := dashboard.New(dashboard.Config{
		Log: s.log.Named("dashboard"), Backend: &dashboardBackend{s: s}, Key: key, TLS: tc,
		DevIdentity: dev, Replica: cfg.ReplicaID,
	})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.DashboardAddr)
	if errors.Is(err, syscall.EADDRINUSE) {
		// The brake and the API matter more than the page: serve without
		// it (and say so) rather than not at all.
		s.log.Error("dashboard OFF: its address is in use; set --dashboard-addr to a free one", "dashboard_addr", cfg.DashboardAddr, "error", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--dashboard-addr %s: %w", cfg.DashboardAddr, err)
	}
	d := &dashboardRunner{srv: srv, lis: lis, tls: useTLS}
	if useTLS {
		s.log.Info("dashboard serving", "url", d.url(""))
	} else {
		s.log.Warn("dashboard serving WITHOUT TLS on loopback (dev mode): every local user may act with every role", "url", d.url(""))
	}
	return d, nil
}

// serve runs the dashboard until ctx ends.
func (d *dashboardRunner) serve(ctx context.Context) error { return d.srv.Serve(ctx, d.lis) }

// url is the dashboard's address; an unspecified listen host (0.0.0.0) is
// replaced by host, the name the caller reached the controller by.
func (d *dashboardRunner) url(host string) string {
	scheme := "http"
	if d.tls {
		scheme = "https"
	}
	h, port, _ := net.SplitHostPort(d.lis.Addr().String())
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		h = "localhost"
		if host != "" {
			h = host
		}
	}
	return scheme + "://" + net.JoinHostPort(h, port)
}

// DashboardURL is the dashboard's address ("" when it is off).
func (s *Server) DashboardURL() string {
	if s.dash == nil {
		return ""
	}
	return s.dash.url("")
}

// DashboardLink signs a login link for the caller: its certificate's
// identity and roles, or in dev mode its declared name with every role.
func (c *control) DashboardLink(ctx context.Context, req *golivev1.DashboardLinkRequest) (*golivev1.DashboardLinkResponse, error) {
	d := c.s.dash
	if d == nil {
		return nil, status.Error(codes.FailedPrecondition, "the dashboard is off on this replica: run `golive-controller serve` with --dashboard-addr")
	}
	name, roles := "", []pki.Role(nil)
	actor, src := actorAndSource(ctx)
	if id, err := pki.FromContext(ctx); err == nil {
		if id.Agent {
			return nil, status.Errorf(codes.PermissionDenied, "agent %s may not open the dashboard", id.Name)
		}
		name, roles = id.Name, id.Roles
	} else if d.tls {
		return nil, status.Error(codes.Unauthenticated, "present your operator certificate (--tls-cert)")
	} else {
		name, roles = actor, pki.Roles
	}
	tok, exp, err := d.srv.Link(name, roles, req.GetTtl().AsDuration())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	host := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get(":authority"); len(a) > 0 {
			host, _, _ = net.SplitHostPort(a[0])
		}
	}
	rs := make([]string, len(roles))
	for i, r := range roles {
		rs[i] = string(r)
	}
	entry := audit.Entry{Actor: name, Action: "dashboard_link", Outcome: "issued", Source: src,
		Detail: fmt.Sprintf("roles=%s expires_at=%s", strings.Join(rs, ","), exp.UTC().Format(time.RFC3339))}
	if _, _, err := c.s.audit.Append(ctx, entry, nil, nil); err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot audit the link, so none is issued: %v", err)
	}
	return &golivev1.DashboardLinkResponse{Url: d.url(host) + "/login?t=" + tok, Token: tok, ExpiresAt: timestamppb.New(exp),
		Identity: name, Roles: rs, SessionExpiresIn: durationpb.New(d.srv.SessionTTL())}, nil
}

// dashboardBackend is the controller as the dashboard sees it.
type dashboardBackend struct {
	s *Server

	mu        sync.Mutex
	settleEnd time.Time
	agents    agentCache
}

var _ dashboard.Backend = (*dashboardBackend)(nil)

func (b *dashboardBackend) Status(ctx context.Context) (*golivev1.StatusResponse, error) {
	a, _, err := b.s.approvals.Current(ctx)
	if err != nil {
		return nil, err
	}
	leader, err := b.s.store.Leader(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := b.s.rollouts(ctx, "", true, 0)
	if err != nil {
		return nil, err
	}
	dns, err := b.s.dns.statusRecords(ctx)
	if err != nil {
		return nil, err
	}
	scaling, err := b.s.scale.entries(ctx, "")
	if err != nil {
		return nil, err
	}
	return &golivev1.StatusResponse{Approval: approvalProto(a), Leader: leader, Replica: b.s.cfg.ReplicaID, Rollouts: rs, Dns: dns, Scaling: scaling}, nil
}

// Agents is the fleet from the cache the watch keeps (each record is
// decoded once per change, not once per refresh: 5,000 agents stay cheap).
// Right after an approval change it is the hub's own list instead, whose
// tokens for this replica's streams come from the agents' acknowledgements
// at once, not with their next heartbeat; and it is the hub's list until
// the watch has read the fleet.
func (b *dashboardBackend) Agents(ctx context.Context) ([]*golivev1.Agent, error) {
	b.mu.Lock()
	settling := time.Now().Before(b.settleEnd)
	b.mu.Unlock()
	if !settling {
		if out, ok := b.agents.list(); ok {
			return out, nil
		}
	}
	return b.s.hub.Agents(ctx)
}

// agentCache mirrors agents/ and presence/ as the hub's Agents derives
// them: an agent is connected while some replica's presence key names it.
// Its values are never changed once stored: a change stores a new one.
type agentCache struct {
	mu     sync.Mutex
	synced bool
	recs   map[string]*golivev1.Agent // host → record as stored
	pres   map[string]string          // host → replica holding its stream
	view   map[string]*golivev1.Agent // host → record with state, replica, token
}

func (c *agentCache) reset() {
	c.mu.Lock()
	c.synced, c.recs, c.pres, c.view = false, map[string]*golivev1.Agent{}, map[string]string{}, map[string]*golivev1.Agent{}
	c.mu.Unlock()
}

func (c *agentCache) list() ([]*golivev1.Agent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced {
		return nil, false
	}
	out := make([]*golivev1.Agent, 0, len(c.view))
	for _, a := range c.view {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HostId < out[j].HostId })
	return out, true
}

// putRecord, dropRecord, putPresence and dropPresence apply one etcd event.
func (c *agentCache) putRecord(host string, v []byte) {
	a := &golivev1.Agent{}
	if err := protojson.Unmarshal(v, a); err != nil {
		a = &golivev1.Agent{HostId: host}
	}
	c.mu.Lock()
	c.recs[host] = a
	c.derive(host)
	c.mu.Unlock()
}

func (c *agentCache) dropRecord(host string) {
	c.mu.Lock()
	delete(c.recs, host)
	c.derive(host)
	c.mu.Unlock()
}

func (c *agentCache) putPresence(host string, v []byte) {
	var p struct {
		Replica string `json:"replica"`
	}
	json.Unmarshal(v, &p)
	c.mu.Lock()
	c.pres[host] = p.Replica
	c.derive(host)
	c.mu.Unlock()
}

func (c *agentCache) dropPresence(host string) {
	c.mu.Lock()
	delete(c.pres, host)
	c.derive(host)
	c.mu.Unlock()
}

// derive recomputes host's view; c.mu is held.
func (c *agentCache) derive(host string) {
	rec, ok := c.recs[host]
	if !ok {
		delete(c.view, host)
		return
	}
	a := proto.Clone(rec).(*golivev1.Agent)
	if replica, live := c.pres[host]; live {
		a.State, a.Replica = "connected", replica
	} else {
		a.State, a.FencingToken = "lost", 0
	}
	c.view[host] = a
}

func (b *dashboardBackend) History(ctx context.Context, limit int) ([]*golivev1.Rollout, error) {
	return b.s.rollouts(ctx, "", false, limit)
}

func (b *dashboardBackend) Rollout(ctx context.Context, id string) (*golivev1.Rollout, error) {
	r, err := b.s.store.GetRollout(ctx, id)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return r.View(), nil
}

// Audit reads the whole chain at one revision, verifies it as `audit
// verify` does, and returns its tail.
func (b *dashboardBackend) Audit(ctx context.Context, limit int) (*dashboard.AuditTail, error) {
	entries, seq, hash, err := b.s.audit.Snapshot(ctx, audit.Filter{})
	if err != nil {
		return nil, err
	}
	t := &dashboard.AuditTail{HeadSeq: seq, HeadHash: hash}
	t.BrokenAt, t.Why = audit.VerifyChain(entries, seq, hash)
	if len(entries) > limit {
		entries = entries[len(entries)-limit:]
	}
	for _, e := range entries {
		t.Entries = append(t.Entries, auditProto(e))
	}
	return t, nil
}

// dashboardAddr is a dashboard request's origin as a gRPC peer address,
// so that the handlers audit where an action came from.
type dashboardAddr string

func (a dashboardAddr) Network() string { return "dashboard" }
func (a dashboardAddr) String() string  { return string(a) }

// as is the context a handler runs a dashboard action with: the caller
// is its actor, as an mTLS identity is for the API.
func as(ctx context.Context, c dashboard.Caller) context.Context {
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(ActorMetadataKey, c.Name))
	return peer.NewContext(ctx, &peer.Peer{Addr: dashboardAddr(c.Source)})
}

func (b *dashboardBackend) Revoke(ctx context.Context, c dashboard.Caller, reason string) (*golivev1.RevokeResponse, error) {
	return (&control{s: b.s}).Revoke(as(ctx, c), &golivev1.RevokeRequest{Reason: reason})
}

func (b *dashboardBackend) Authorize(ctx context.Context, c dashboard.Caller, phrase string, ttl time.Duration, reason string) (*golivev1.Approval, error) {
	resp, err := (&control{s: b.s}).Authorize(as(ctx, c), &golivev1.AuthorizeRequest{Phrase: phrase, Ttl: durationpb.New(ttl), Reason: reason})
	if err != nil {
		return nil, err
	}
	return resp.Approval, nil
}

func (b *dashboardBackend) Pause(ctx context.Context, c dashboard.Caller, id, reason string) error {
	_, err := (&control{s: b.s}).PauseRollout(as(ctx, c), &golivev1.PauseRolloutRequest{Id: id, Reason: reason})
	return err
}

func (b *dashboardBackend) Abort(ctx context.Context, c dashboard.Caller, id, reason string) error {
	_, err := (&control{s: b.s}).AbortRollout(as(ctx, c), &golivev1.AbortRolloutRequest{Id: id, Reason: reason})
	return err
}

// Refused audits a refused dashboard action, as the API audits a call a
// certificate's roles do not allow.
func (b *dashboardBackend) Refused(ctx context.Context, c dashboard.Caller, action, why string) {
	entry := audit.Entry{Actor: c.Name, Action: action, Outcome: "refused", Reason: why, Source: c.Source}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, _, err := b.s.audit.Append(actx, entry, nil, nil); err != nil {
		b.s.log.Warn("cannot audit a refused dashboard action", "actor", c.Name, "action", action, "error", err)
	}
}

// Watch reports every change under the etcd prefix that the page shows:
// it reads the fleet (agents/ and presence/) at a revision, reports
// everything, then watches from the next revision, so nothing between is
// missed; the fleet's events keep the agent cache. An agent's acknowledgement of a
// new approval reaches etcd only with its next heartbeat, so after every
// approval change the agents are re-read every 100ms for a few heartbeats:
// a STOP shows every agent at token 0 within a second.
func (b *dashboardBackend) Watch(ctx context.Context, changed func(dashboard.Change)) error {
	k := b.s.keys
	b.agents.reset()
	recs, err := b.s.cli.Get(ctx, k.Agents(), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	rev := recs.Header.Revision
	pres, err := b.s.cli.Get(ctx, k.Presences(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return err
	}
	for _, kv := range pres.Kvs {
		b.agents.putPresence(state.HostFromKey(k.Presences(), string(kv.Key)), kv.Value)
	}
	for _, kv := range recs.Kvs {
		b.agents.putRecord(state.HostFromKey(k.Agents(), string(kv.Key)), kv.Value)
	}
	b.agents.mu.Lock()
	b.agents.synced = true
	b.agents.mu.Unlock()
	defer b.agents.reset()
	changed(dashboard.ChangeAll)
	var settle sync.WaitGroup
	defer settle.Wait()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := b.s.cli.Watch(clientv3.WithRequireLeader(wctx), k.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		var c dashboard.Change
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			switch {
			case key == k.Approval() || strings.HasPrefix(key, k.Leader()):
				c |= dashboard.ChangeApproval | dashboard.ChangeAgents
				if key == k.Approval() {
					b.settle(wctx, &settle, changed)
				}
			case strings.HasPrefix(key, k.Agents()):
				if host := state.HostFromKey(k.Agents(), key); ev.Type == clientv3.EventTypePut {
					b.agents.putRecord(host, ev.Kv.Value)
				} else {
					b.agents.dropRecord(host)
				}
				c |= dashboard.ChangeAgents
			case strings.HasPrefix(key, k.Presences()):
				if host := state.HostFromKey(k.Presences(), key); ev.Type == clientv3.EventTypePut {
					b.agents.putPresence(host, ev.Kv.Value)
				} else {
					b.agents.dropPresence(host)
				}
				c |= dashboard.ChangeAgents
			case strings.HasPrefix(key, k.Rollouts()) || strings.HasPrefix(key, k.RolloutRequestsAll()):
				c |= dashboard.ChangeRollouts
			case key == k.AuditHead():
				c |= dashboard.ChangeAudit
			case strings.HasPrefix(key, k.DNSRecords()):
				c |= dashboard.ChangeDNS
			case strings.HasPrefix(key, k.Prefix+"scaling/"):
				c |= dashboard.ChangeScaling
			}
		}
		if c != 0 {
			changed(c)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("etcd watch ended")
}

// settle re-reports the agents every 100ms until a few heartbeats after
// the latest approval change.
func (b *dashboardBackend) settle(ctx context.Context, wg *sync.WaitGroup, changed func(dashboard.Change)) {
	b.mu.Lock()
	running := time.Now().Before(b.settleEnd)
	b.settleEnd = time.Now().Add(3*b.s.cfg.HeartbeatInterval + time.Second)
	b.mu.Unlock()
	if running {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			changed(dashboard.ChangeAgents)
			b.mu.Lock()
			done := time.Now().After(b.settleEnd)
			b.mu.Unlock()
			if done {
				return
			}
		}
	}()
}
