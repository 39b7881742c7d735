// Package controller is the golive controller daemon: it keeps all state in
// etcd (embedded or external), serves the operator's ControlService and the
// agents' AgentService on one gRPC port, and pushes the automation approval
// to every agent the moment it changes.
//
// Several replicas may share one etcd. Each serves agents and operators; one
// leads (clientv3/concurrency election) and runs the leader-only loop
// (the rollout executor). A replica's agent streams are registered in etcd
// under its session lease, so a replica that dies takes its presence keys
// with it and its agents show "lost" until they reconnect elsewhere.
//
// This package is the wiring and the ControlService handlers; its parts
// live beside it:
//
//	hub/       the agent streams: admission, approval push, commands out,
//	           results in (calls back through hub.Owner, which Server is)
//	executor/  the leader's loop: every rollout through rollout.Next
//	store/     typed etcd access: the one rollout record and its API view
//	apierr/    the one mapping of errors to gRPC status codes
//	metrics/   the golive_controller_* series
//
// Every goroutine has an owner that stops and waits for it: Run's loops
// group, the hub (Close), the executor (Run returns after its own).
package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/executor"
	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/controller/metrics"
	"github.com/golive/golive/internal/controller/store"
	"github.com/golive/golive/internal/embedetcd"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/promsd"
	"github.com/golive/golive/internal/state"
	"github.com/golive/golive/internal/watchdog"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Config is the controller daemon's configuration.
type Config struct {
	Listen            string
	MetricsAddr       string
	DataDir           string
	EtcdEndpoints     []string
	EtcdPrefix        string
	EmbeddedClient    string
	EmbeddedPeer      string
	MaxApprovalTTL    time.Duration
	ReplicaID         string
	LeaderTTL         time.Duration
	PresenceTTL       time.Duration
	HeartbeatInterval time.Duration
	ArtifactsDir      string
	// Webhooks receive approval and rollout notifications.
	Webhooks []notify.Receiver
	// Prometheus is the user's Prometheus the gates' PromQL analysis asks
	// (URL empty: none; a deploy with an analysis is then refused).
	Prometheus analysis.PrometheusConfig
	// DefaultAnalysis maps a service to the analysis files every deploy of
	// it runs, beside those the deploy names.
	DefaultAnalysis map[string][]string
	// TLS, when set, makes the gRPC port mutual TLS 1.3: agents and
	// operators present certificates signed by TLS.CA (see internal/pki).
	// Without it the controller serves only on loopback.
	TLS pki.Files
	// TwoPersonRule: the identity that granted the approval may not start
	// (or resume) a deploy under it.
	TwoPersonRule bool
	// RateLimit and RateBurst bound control calls per identity per second
	// (0: no limit). Revoke, pause and abort are never limited.
	RateLimit float64
	RateBurst int
	// AcceptRate and AcceptBurst pace new connections (0: no pacing).
	AcceptRate  float64
	AcceptBurst int
	// DashboardAddr is the web dashboard's listen address (empty: none);
	// without TLS it must be loopback. See dashboard.go.
	DashboardAddr string
	// Ready, when set, is called once the daemon serves (tests use it).
	Ready func(*Server)
	// PprofAddr, when set, serves net/http/pprof there (its own listener,
	// never the metrics port: profiles reveal internals).
	PprofAddr string
	// DNSConfig is the HCL file of the DNS zones, pools and failovers
	// golive manages (empty: none). See dns.go and internal/dnsconfig.
	DNSConfig string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Listen: "127.0.0.1:7400", MetricsAddr: "127.0.0.1:7401", DataDir: "golive-data",
		EtcdPrefix: "/golive/", EmbeddedClient: "127.0.0.1:2379", EmbeddedPeer: "127.0.0.1:2380",
		MaxApprovalTTL: 12 * time.Hour, ReplicaID: host, LeaderTTL: 10 * time.Second, PresenceTTL: 10 * time.Second,
		HeartbeatInterval: 5 * time.Second,
		RateLimit:         50, RateBurst: 100, AcceptRate: 1000, AcceptBurst: 200,
	}
}

// Validate names the field that is wrong.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port", c.Listen))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-addr %q: want host:port", c.MetricsAddr))
		}
	}
	if len(c.EtcdEndpoints) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required for the embedded etcd"))
	}
	if c.MaxApprovalTTL < time.Second {
		errs = append(errs, fmt.Errorf("--max-approval-ttl %s: must be at least 1s", c.MaxApprovalTTL))
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") {
		errs = append(errs, fmt.Errorf("--etcd-prefix %q: must start with /", c.EtcdPrefix))
	}
	if c.ReplicaID == "" {
		errs = append(errs, errors.New("--replica-id is empty"))
	}
	if c.LeaderTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("leader ttl %s: must be at least 2s", c.LeaderTTL))
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	} else if !c.TLS.Set() && !isLoopback(c.Listen) {
		errs = append(errs, tlsRequiredError(c.Listen))
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("heartbeat interval must be positive"))
	}
	errs = append(errs, c.dashboardErrors()...)
	return errors.Join(errs...)
}

// Server is a running controller replica.
type Server struct {
	cfg       Config
	log       hclog.Logger
	cli       *clientv3.Client
	keys      state.Keys
	store     *store.Store
	approvals *approval.Manager
	audit     *audit.Log
	hub       *hub.Hub
	exec      *executor.Executor
	metrics   *metrics.Metrics
	health    *health.Server
	notifier  *notify.Notifier
	isLeader  atomic.Bool
	// answers are the last answers of read RPCs (served, marked stale,
	// while etcd has no quorum); lastToken the last live approval's token.
	answers   lastAnswers
	lastToken atomic.Int64
	// defaultAnalysis is each service's default PromQL analysis.
	defaultAnalysis map[string][]analysis.Metric
	// bg holds work the RPC handlers start that outlives a call (the sweep
	// of late preflight answers); Run waits for it.
	bg    sync.WaitGroup
	bgCtx context.Context

	grpcAddr    net.Addr
	metricsAddr net.Addr
	dash        *dashboardRunner // nil when the dashboard is off
	dns         *dnsService      // nil without --dns-config
	scale       *scaler          // scaling by demand (scaling.go)
}

// GRPCAddr is the address the gRPC listener is bound to.
func (s *Server) GRPCAddr() string { return s.grpcAddr.String() }

// MetricsAddr is the address of the HTTP listener.
func (s *Server) MetricsAddr() string {
	if s.metricsAddr == nil {
		return ""
	}
	return s.metricsAddr.String()
}

// IsLeader reports whether this replica leads.
func (s *Server) IsLeader() bool { return s.isLeader.Load() }

// Client is the replica's etcd client.
func (s *Server) Client() *clientv3.Client { return s.cli }

// Keys is the etcd key layout.
func (s *Server) Keys() state.Keys { return s.keys }

// Run runs the controller until ctx ends.
func Run(ctx context.Context, cfg Config, log hclog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	dnsCfg, err := loadDNSConfig(cfg.DNSConfig)
	if err != nil {
		return err
	}
	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		etcd, err := embedetcd.Start(ctx, embedetcd.Config{
			Name: "golive", Dir: filepath.Join(cfg.DataDir, "etcd"), ClientAddr: cfg.EmbeddedClient, PeerAddr: cfg.EmbeddedPeer,
		})
		if err != nil {
			return err
		}
		defer etcd.Close()
		endpoints = []string{etcd.Endpoint()}
		log.Info("embedded etcd serving", "endpoint", etcd.Endpoint(), "dir", filepath.Join(cfg.DataDir, "etcd"))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		Logger: zap.NewNop(), // etcd client retries are reported through our metrics and errors
	})
	if err != nil {
		return fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	defer cli.Close()

	var creds credentials.TransportCredentials
	if cfg.TLS.Set() {
		tc, err := cfg.TLS.ServerConfig()
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		creds = credentials.NewTLS(tc)
	} else {
		log.Warn("NO TLS: the controller serves without authentication on loopback only; anyone on this host can authorize and deploy. Use --tls-ca/--tls-cert/--tls-key in production", "listen", cfg.Listen)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	lis = pace(lis, cfg.AcceptRate, cfg.AcceptBurst)
	var httpLis net.Listener
	if cfg.MetricsAddr != "" {
		httpLis, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("--metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var quota int64
	if len(cfg.EtcdEndpoints) == 0 {
		quota = embedetcd.DefaultQuotaBytes
	}
	reg.MustRegister(metrics.NewEtcdCollector(cli, quota))
	keys := state.NewKeys(cfg.EtcdPrefix)
	alog := audit.New(cli, keys)
	s := &Server{
		cfg: cfg, log: log, cli: cli, keys: keys, audit: alog, store: store.New(cli, keys),
		approvals: approval.NewManager(cli, keys, alog, cfg.MaxApprovalTTL),
		metrics:   metrics.New(reg),
		health:    health.NewServer(),
		grpcAddr:  lis.Addr(),
	}
	if httpLis != nil {
		s.metricsAddr = httpLis.Addr()
	}
	nm, err := notify.NewMetrics(reg)
	if err != nil {
		return err
	}
	if s.notifier, err = notify.New(notify.Config{Receivers: cfg.Webhooks}, log.Named("webhooks"), nm); err != nil {
		return fmt.Errorf("--webhook: %w", err)
	}
	s.notifier.Start()
	defer s.notifier.Close()
	s.hub = hub.New(hub.Config{Log: log.Named("agents"), Client: cli, Keys: keys, Replica: cfg.ReplicaID,
		Metrics: s.metrics, Heartbeat: cfg.HeartbeatInterval, Owner: s})
	ecfg := executor.Config{Log: log, Store: s.store, Approvals: s.approvals, Agents: s.hub, Notifier: s.notifier, Metrics: s.metrics}
	if cfg.Prometheus.URL != "" {
		prom, err := analysis.NewPrometheus(cfg.Prometheus)
		if err != nil {
			return fmt.Errorf("--prometheus-url: %w", err)
		}
		defer prom.Close()
		ecfg.Prometheus = prom
	}
	if s.defaultAnalysis, err = loadDefaultAnalysis(cfg.DefaultAnalysis); err != nil {
		return err
	}
	if s.dns, err = newDNS(s, dnsCfg, reg); err != nil {
		return err
	}
	if s.dns != nil {
		ecfg.PreflightChecks = s.dns
		ecfg.DNS = s.dns
	}
	if s.scale, err = newScaler(s, reg, ecfg.Prometheus); err != nil {
		return err
	}
	s.exec = executor.New(ecfg)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	brake, err := approval.OpenBrake(filepath.Join(cfg.DataDir, "brake.json"))
	if err != nil {
		return err
	}
	s.approvals.SetBrake(brake)

	if s.dash, err = newDashboard(s, creds != nil); err != nil {
		lis.Close()
		return err
	}
	az := &authz{tls: creds != nil, twoPerson: cfg.TwoPersonRule, s: s, limits: newLimiter(cfg.RateLimit, cfg.RateBurst)}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(hub.NewSharedCodec()),
		// Small, shared buffers: thousands of mostly idle agent streams.
		grpc.WriteBufferSize(4 * 1024), grpc.ReadBufferSize(4 * 1024), grpc.SharedWriteBuffer(true),
		grpc.InitialWindowSize(64 * 1024), grpc.InitialConnWindowSize(64 * 1024),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 4 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(64),
		// A handshake that has not finished in 15s belongs to a client that
		// is about to give up (gRPC clients wait 20s): drop it rather than
		// spend CPU on it during a reconnect storm (default 120s).
		grpc.ConnectionTimeout(15 * time.Second),
		grpc.ChainUnaryInterceptor(s.unaryMetrics, az.unary, s.outage),
		grpc.ChainStreamInterceptor(az.stream),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	golivev1.RegisterAgentServiceServer(gs, s.hub)
	golivev1.RegisterControlServiceServer(gs, &control{s: s})
	healthpb.RegisterHealthServer(gs, s.health)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle(promsd.Path, promsd.NewHandler(s, log.Named("promsd")))
	if cfg.ArtifactsDir != "" {
		mux.Handle("/artifacts/", http.StripPrefix("/artifacts/", http.FileServer(http.Dir(cfg.ArtifactsDir))))
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.PprofAddr != "" {
		stop, err := servePprof(g, cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	if httpLis != nil {
		g.Go(func() error {
			if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics serve: %w", err)
			}
			return nil
		})
	}
	if s.dash != nil {
		g.Go(func() error { return s.dash.serve(gctx) })
	}
	var loops sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(gctx)
	s.bgCtx = loopCtx
	start := func(f func(context.Context)) {
		loops.Add(1)
		go func() { defer loops.Done(); f(loopCtx) }()
	}
	start(s.runPresenceSession)
	start(s.hub.RunFlusher)
	start(s.hub.WatchPresence)
	start(s.watchApproval)
	start(s.flushBrake)
	start(s.runElection)
	start(s.dispatchCommands)

	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("golive.v1.ControlService", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("golive.v1.AgentService", healthpb.HealthCheckResponse_SERVING)
	log.Info("controller serving", "grpc", lis.Addr().String(), "metrics", s.MetricsAddr(), "replica", cfg.ReplicaID, "etcd", strings.Join(endpoints, ","))
	if cfg.Ready != nil {
		cfg.Ready(s)
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
	start(func(ctx context.Context) { watchdog.Run(ctx, nil) }) // systemd restarts a frozen controller

	<-gctx.Done()
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	log.Info("controller stopping")
	s.health.Shutdown()
	s.hub.CloseAll(status.Error(codes.Unavailable, "controller is shutting down; reconnect to another replica"))
	stopLoops()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	httpSrv.Shutdown(shutCtx)
	cancel()
	loops.Wait()
	s.bg.Wait()
	s.hub.Close(status.Error(codes.Unavailable, "controller is shutting down; reconnect to another replica"))
	if err := g.Wait(); err != nil {
		return err
	}
	return nil
}

func (s *Server) unaryMetrics(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	s.metrics.RpcTotal.WithLabelValues(method, status.Code(err).String()).Inc()
	s.metrics.RpcDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	return resp, err
}

// runPresenceSession keeps the etcd session whose lease holds this
// replica's presence keys. If the session is lost (a starved controller
// sent its keep-alives too late, or etcd was away) while the streams are
// healthy, it takes a new session and claims every stream's presence again
// under it (hub.Reclaim): agents keep their streams, their tokens and
// their steps in flight. Only if no new session comes within PresenceTTL
// (etcd really is away from this replica) are the streams closed, so that
// agents go to a replica that can record them.
func (s *Server) runPresenceSession(ctx context.Context) {
	ttl := int(s.cfg.PresenceTTL / time.Second)
	var lostAt time.Time
	for ctx.Err() == nil {
		// The grant is bounded so that a replica cut off from etcd gets to
		// close its streams below.
		gctx, gcancel := context.WithTimeout(ctx, max(s.cfg.PresenceTTL/2, time.Second))
		lease, err := s.cli.Grant(gctx, int64(ttl))
		gcancel()
		var sess *concurrency.Session
		if err == nil {
			sess, err = concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
		}
		if err != nil {
			s.metrics.EtcdErrors.WithLabelValues("session").Inc()
			s.log.Warn("etcd session", "error", err)
			if !lostAt.IsZero() && time.Since(lostAt) > s.cfg.PresenceTTL {
				s.log.Warn("no new etcd session since the last was lost; closing agent streams so they reconnect", "lost_for", time.Since(lostAt).Round(time.Millisecond))
				s.hub.CloseAll(status.Error(codes.Unavailable, "controller lost its etcd session; reconnect"))
				lostAt = time.Time{}
			}
			sleepCtx(ctx, time.Second)
			continue
		}
		s.hub.SetSession(sess)
		if !lostAt.IsZero() {
			kept, closed := s.hub.Reclaim(ctx)
			s.log.Info("etcd session renewed; agent streams claimed again", "kept", kept, "closed", closed,
				"gap", time.Since(lostAt).Round(time.Millisecond))
			lostAt = time.Time{}
		}
		select {
		case <-ctx.Done():
			sess.Close()
			return
		case <-sess.Done():
			s.log.Warn("etcd session lost; renewing it and claiming this replica's agent streams again")
			s.metrics.EtcdErrors.WithLabelValues("session_lost").Inc()
			lostAt = time.Now()
		}
	}
}

// runElection campaigns for leadership; while leading it runs the
// leader-only loops until the session ends.
func (s *Server) runElection(ctx context.Context) {
	ttl := int(s.cfg.LeaderTTL / time.Second)
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			s.metrics.EtcdErrors.WithLabelValues("session").Inc()
			sleepCtx(ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(sess, s.keys.Leader())
		if err := e.Campaign(ctx, s.cfg.ReplicaID); err != nil {
			sess.Close()
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		// A Campaign that was waiting while etcd had no quorum may return
		// on a session that has since ended: lead only while the session
		// lives and the election's first key is ours.
		if !s.holdsLeadership(ctx, sess, e) {
			s.log.Info("campaign returned without leadership (stale session); campaigning again", "replica", s.cfg.ReplicaID)
			sess.Close()
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		s.log.Info("leading", "replica", s.cfg.ReplicaID)
		s.isLeader.Store(true)
		s.metrics.IsLeader.Set(1)
		// Leader-only loops (the rollout executor) run under sess.
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); s.exec.Run(lctx, e.Key(), e.Rev()) }()
		dnsDone := s.dns.startFailover(lctx, e.Key(), e.Rev())
		scaleDone := s.scale.start(lctx, e.Key(), e.Rev())
		select {
		case <-ctx.Done():
		case <-sess.Done():
			s.log.Warn("lost leadership: etcd session ended")
		}
		cancel()
		<-done
		<-dnsDone
		<-scaleDone
		s.isLeader.Store(false)
		s.metrics.IsLeader.Set(0)
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		e.Resign(rctx)
		rcancel()
		sess.Close()
	}
}

// watchApproval pushes every approval change to this replica's agents.
func (s *Server) watchApproval(ctx context.Context) {
	s.approvals.Watch(ctx, func(ev approval.Event) {
		switch {
		case ev.Approval.Token != 0:
			s.lastToken.Store(ev.Approval.Token)
		case ev.Reason == "revoked" || ev.Reason == "expired":
			s.lastToken.Store(0)
		}
		if ev.Reason == "lost" {
			s.log.Warn("etcd unreachable or without leader: treating automation as revoked until it is back")
		}
		if ev.Reason == "expired" && s.IsLeader() {
			s.notifier.Notify(notify.Event{Kind: notify.KindApprovalExpired, Actor: "system", Reason: "ttl ran out"})
		}
		s.hub.Broadcast(hub.ApprovalUpdate(ev.Approval, ev.Revision, ev.Reason))
	})
}

// holdsLeadership reports whether e's key leads, under a live session.
func (s *Server) holdsLeadership(ctx context.Context, sess *concurrency.Session, e *concurrency.Election) bool {
	select {
	case <-sess.Done():
		return false
	default:
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	leader, err := e.Leader(cctx)
	if err != nil || len(leader.Kvs) == 0 || string(leader.Kvs[0].Key) != e.Key() {
		return false
	}
	ttl, err := s.cli.TimeToLive(cctx, sess.Lease())
	return err == nil && ttl.TTL > 0
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// servePprof serves net/http/pprof on addr until stop is called.
func servePprof(g *errgroup.Group, addr string, log hclog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Warn("pprof serving: profiles reveal internals, keep this address private", "pprof", lis.Addr().String())
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("pprof serve: %w", err)
		}
		return nil
	})
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
