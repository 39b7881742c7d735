// Package agent is the golive agent daemon on a production host. It holds
// one stream to a controller replica (moving to another when one dies),
// introduces itself with its full state on every connect, sends heartbeats
// with its services' state and health, and keeps the approval's fencing
// token it was last told of: a command carrying any other token is refused.
//
// The agent never talks to etcd; everything it knows of the fleet comes over
// the stream, and it keeps running while no controller is reachable.
//
// Stream lifecycle:
//
//	dial -> Hello -> Welcome(approval) -> {heartbeats, acks} ... error
//	  ^                                                            |
//	  +---- jittered exponential backoff (reset after Welcome) ----+
//
// On any disconnect the agent drops the approval it held (token 0): it may
// only act on an approval that a live controller stands behind.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/version"
	"github.com/golive/golive/internal/watchdog"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Config is the agent daemon's configuration.
type Config struct {
	Controllers []string
	HostID      string
	StateDir    string
	MetricsAddr string
	GRPCAddr    string
	Labels      map[string]string
	Services    []Service
	// MaxBackoff caps the reconnect delay.
	MaxBackoff time.Duration
	// DisconnectGrace: how long the approval token (and a step in
	// flight) outlives a stream that ended cleanly, waiting for the next
	// (0: DefaultDisconnectGrace; negative: none). See grace.go.
	DisconnectGrace time.Duration
	// TLS, when set, is the agent's mutual TLS configuration (its
	// certificate names its host id); nil: plaintext, loopback dev mode.
	TLS *tls.Config
	// Registry receives the agent's metrics (nil: a new one). Pass the one
	// the services' health metrics were registered on.
	Registry *prometheus.Registry
	// Ready, when set, is called once the daemon serves (tests use it).
	Ready func(*Agent)
}

// Validate names the field that is wrong.
func (c Config) Validate() error {
	var errs []error
	if len(c.Controllers) == 0 {
		errs = append(errs, errors.New("--controller: at least one controller address is required"))
	}
	if c.HostID == "" {
		errs = append(errs, errors.New("--host-id is empty"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is empty"))
	}
	return errors.Join(errs...)
}

// Status is what the agent reports about itself on /status.
type Status struct {
	HostID       string            `json:"host_id"`
	InstanceID   string            `json:"instance_id"`
	Connected    bool              `json:"connected"`
	Controller   string            `json:"controller,omitempty"`
	ReplicaID    string            `json:"replica_id,omitempty"`
	FencingToken int64             `json:"fencing_token"`
	ApprovalTill *time.Time        `json:"approval_expires_at,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Services     []ServiceStatus   `json:"services"`
	Reconnects   uint64            `json:"reconnects"`
}

// ServiceStatus is one service's state on this host.
type ServiceStatus struct {
	Name           string `json:"name"`
	CurrentRelease string `json:"current_release"`
}

type metrics struct {
	connected  prometheus.Gauge
	token      prometheus.Gauge
	reconnects prometheus.Counter
	approvals  *prometheus.CounterVec
	commands   *prometheus.CounterVec
	steps      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_agent_connected", Help: "1 while the agent has a stream to a controller."}),
		token:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_agent_approval_fencing_token", Help: "The approval fencing token the agent holds (0: none)."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_agent_reconnects_total", Help: "Stream (re)connect attempts."}),
		approvals:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_agent_approval_updates_total", Help: "Approval updates received, by reason."}, []string{"reason"}),
		commands:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_agent_commands_total", Help: "Commands received, by outcome of the admission check."}, []string{"outcome"}),
	}
	m.steps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_agent_steps_total", Help: "Deploy/rollback steps finished, by service and outcome."}, []string{"service", "outcome"})
	reg.MustRegister(m.connected, m.token, m.reconnects, m.approvals, m.commands, m.steps)
	return m
}

// Agent is a running agent.
type Agent struct {
	cfg      Config
	log      hclog.Logger
	instance string
	metrics  *metrics

	token      atomic.Int64
	expiresAt  atomic.Pointer[time.Time]
	connected  atomic.Bool
	controller atomic.Pointer[string]
	replica    atomic.Pointer[string]
	reconnects atomic.Uint64
	grace      graceState

	metricsAddr net.Addr
	grpcAddr    net.Addr

	// opCtx is cancelled when the agent stops: it aborts operations
	// (fetch, unpack, health); deploystep still completes or undoes a swap.
	opCtx context.Context
	ops   sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]*inflightCmd // by command id
	unacked  map[string]*golivev1.CommandResult
	// send, while a stream is up, queues a message to the controller.
	send func(*golivev1.ConnectRequest)
}

type inflightCmd struct {
	service  string
	token    int64
	operator bool
	// scale: a ScaleAction (scale_cmd.go), not a deploy step.
	scale  bool
	stage  string
	cancel context.CancelFunc
	// halted: cancelled because the agent no longer holds its approval;
	// haltedBy says why (the approval ended, or the agent lost its
	// controller and dropped the approval with it).
	halted   bool
	haltedBy string
}

// MetricsAddr is the bound HTTP address (/metrics, /status).
func (a *Agent) MetricsAddr() string {
	if a.metricsAddr == nil {
		return ""
	}
	return a.metricsAddr.String()
}

// FencingToken is the approval token the agent holds (0: none).
func (a *Agent) FencingToken() int64 { return a.token.Load() }

// Connected reports whether the agent has a live stream.
func (a *Agent) Connected() bool { return a.connected.Load() }

func newInstanceID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run runs the agent until ctx ends.
func Run(ctx context.Context, cfg Config, log hclog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &Agent{cfg: cfg, log: log, instance: newInstanceID(), metrics: newMetrics(reg),
		inflight: map[string]*inflightCmd{}, unacked: map[string]*golivev1.CommandResult{}}
	opCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	a.opCtx = opCtx
	defer func() {
		// Stop: abort operations, wait for in-flight steps to finish their
		// atomic part, then stop the services the agent supervises.
		stopOps()
		a.ops.Wait()
		closeServices(cfg.Services, log)
	}()
	for _, s := range cfg.Services {
		if s.Recovered != nil {
			res := resultProto(s.Name, *s.Recovered)
			a.unacked[res.CommandId] = res
			log.Warn("recovered a step a crash interrupted", "service", s.Name, "command_id", res.CommandId, "outcome", res.Outcome.String())
		}
	}

	var httpSrv *http.Server
	if cfg.MetricsAddr != "" {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		a.metricsAddr = lis.Addr()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(a.Status())
		})
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go httpSrv.Serve(lis)
		defer httpSrv.Close()
	}
	hs := health.NewServer()
	var gs *grpc.Server
	if cfg.GRPCAddr != "" {
		lis, err := net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("--grpc-addr %s: %w", cfg.GRPCAddr, err)
		}
		a.grpcAddr = lis.Addr()
		gs = grpc.NewServer()
		healthpb.RegisterHealthServer(gs, hs)
		go gs.Serve(lis)
		defer gs.Stop()
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("agent running", "host_id", cfg.HostID, "instance_id", a.instance, "controllers", cfg.Controllers, "metrics", a.MetricsAddr())
	if cfg.Ready != nil {
		cfg.Ready(a)
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
	wdCtx, wdStop := context.WithCancel(ctx)
	wdDone := make(chan struct{})
	go func() { defer close(wdDone); watchdog.Run(wdCtx, nil) }() // systemd restarts a frozen agent
	a.connectLoop(ctx)
	a.stopGrace()
	wdStop()
	<-wdDone
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	hs.Shutdown()
	log.Info("agent stopped")
	return nil
}

// Status reports the agent's own view.
func (a *Agent) Status() Status {
	s := Status{HostID: a.cfg.HostID, InstanceID: a.instance, Connected: a.connected.Load(), FencingToken: a.token.Load(),
		Labels: a.cfg.Labels, Reconnects: a.reconnects.Load(), ApprovalTill: a.expiresAt.Load()}
	if p := a.controller.Load(); p != nil {
		s.Controller = *p
	}
	if p := a.replica.Load(); p != nil {
		s.ReplicaID = *p
	}
	for _, sv := range a.services() {
		s.Services = append(s.Services, ServiceStatus{Name: sv.Name, CurrentRelease: sv.CurrentRelease})
	}
	return s
}

// services reports each configured service's state.
func (a *Agent) services() []*golivev1.ServiceState {
	a.mu.Lock()
	// Copied under the lock: a step's stage changes while it runs.
	busy, scaling := map[string]bool{}, map[string]bool{}
	ids, stages := map[string]string{}, map[string]string{}
	for id, c := range a.inflight {
		if c.scale {
			scaling[c.service] = true
			if busy[c.service] {
				continue // a deploy's or rollback's state wins over a scale's
			}
		}
		busy[c.service], ids[c.service], stages[c.service] = true, id, c.stage
	}
	a.mu.Unlock()
	var out []*golivev1.ServiceState
	for _, sv := range a.cfg.Services {
		st := &golivev1.ServiceState{Name: sv.Name, SwapMode: sv.SwapMode, State: "unknown"}
		if sv.Dir != nil {
			st.CurrentRelease, _ = sv.Dir.Current()
			st.PreviousRelease, _ = sv.Dir.Previous()
		} else {
			if t, err := os.Readlink(filepath.Join(a.cfg.StateDir, sv.Name, "current")); err == nil {
				st.CurrentRelease = filepath.Base(t)
			}
			if t, err := os.Readlink(filepath.Join(a.cfg.StateDir, sv.Name, "previous")); err == nil {
				st.PreviousRelease = filepath.Base(t)
			}
		}
		switch {
		case busy[sv.Name] && stages[sv.Name] == StageScale && scaling[sv.Name]:
			st.State, st.CommandId, st.Stage = "scaling", ids[sv.Name], StageScale
		case busy[sv.Name]:
			st.State, st.CommandId, st.Stage = "deploying", ids[sv.Name], stages[sv.Name]
		case sv.Manager != nil && sv.Manager.Running():
			st.State = "running"
		case sv.Manager != nil:
			st.State = "stopped"
		case st.CurrentRelease != "":
			st.State = "installed"
		default:
			st.State = "not_installed"
		}
		if sv.Prober != nil {
			st.Health = sv.Prober.Snapshot().ToProto()
		}
		if sv.ActiveSlot != nil {
			st.ActiveSlot = sv.ActiveSlot()
		}
		st.Traffic = sv.traffic.proto() // nil without a load balancer to read (traffic.go)
		if sv.instances != nil {
			st.Scale = policyProto(sv.Config.Scale)
			st.Instances, st.DesiredInstances = sv.instances.proto()
		}
		if sv.Config != nil && sv.Config.MetricsPath != "" {
			st.MetricsPath, st.MetricsPort = sv.Config.MetricsPath, uint32(sv.Port)
			if sv.ServingPort != nil {
				st.MetricsPort = uint32(sv.ServingPort())
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// connectLoop keeps one stream up, rotating through the controllers with
// jittered exponential backoff.
func (a *Agent) connectLoop(ctx context.Context) {
	attempt := 0
	idx := mrand.IntN(len(a.cfg.Controllers))
	for ctx.Err() == nil {
		addr := a.cfg.Controllers[idx%len(a.cfg.Controllers)]
		a.reconnects.Add(1)
		a.metrics.reconnects.Inc()
		welcomed, err := a.session(ctx, addr)
		a.connected.Store(false)
		a.metrics.connected.Set(0)
		a.streamEnded(welcomed, err)
		if ctx.Err() != nil {
			return
		}
		if welcomed {
			attempt = 0
		} else {
			idx++ // try the next replica
		}
		d := Backoff(attempt, a.cfg.MaxBackoff)
		attempt++
		a.log.Warn("controller stream ended; reconnecting", "controller", addr, "error", err, "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Backoff is the agent's reconnect delay after n failed attempts in a row
// (n is reset after a welcomed session): full-jitter exponential, uniform in
// [d/2, d] with d = 200ms*2^n capped at max. Exported for the reconnect
// benchmark, which must back off exactly like the agent.
func Backoff(n int, max time.Duration) time.Duration {
	d := time.Duration(float64(200*time.Millisecond) * math.Pow(2, float64(min(n, 16))))
	if d > max {
		d = max
	}
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func (a *Agent) transportCredentials() credentials.TransportCredentials {
	if a.cfg.TLS == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(a.cfg.TLS.Clone())
}

// session runs one stream; it reports whether a Welcome was received.
func (a *Agent) session(ctx context.Context, addr string) (bool, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(a.transportCredentials()),
		// A controller that stops answering (frozen, partitioned) is left
		// within about 8 s, for another replica.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	hello := &golivev1.Hello{
		HostId: a.cfg.HostID, Labels: a.cfg.Labels, AgentVersion: version.Version, InstanceId: a.instance,
		Services: a.services(), FencingToken: 0, UnackedResults: a.unackedResults(), MetricsAddress: a.MetricsAddr(),
	}
	if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	w := first.GetWelcome()
	if w == nil {
		return false, errors.New("controller did not answer Hello with Welcome")
	}
	a.controller.Store(&addr)
	a.replica.Store(&w.ControllerId)
	a.connected.Store(true)
	a.metrics.connected.Set(1)
	a.log.Info("connected to controller", "controller", addr, "replica", w.ControllerId)

	// One goroutine owns Send; this one owns Recv.
	out := make(chan *golivev1.ConnectRequest, 64)
	sendErr := make(chan error, 1)
	interval := w.HeartbeatInterval.AsDuration()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	a.welcomed(interval)
	go func() { sendErr <- a.sender(sctx, stream, out, interval) }()
	enqueue := func(m *golivev1.ConnectRequest) {
		select {
		case out <- m:
		case <-sctx.Done():
		}
	}
	a.applyApproval(w.Approval, enqueue)
	a.mu.Lock()
	a.send = func(m *golivev1.ConnectRequest) {
		select {
		case out <- m:
		default: // the stream is backed up: the next heartbeat carries the state
		}
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.send = nil
		a.mu.Unlock()
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch p := m.Payload.(type) {
			case *golivev1.ConnectResponse_Approval:
				a.applyApproval(p.Approval, enqueue)
			case *golivev1.ConnectResponse_Command:
				if p.Command.GetPreflight() != nil {
					// Checking is always allowed: no approval token needed.
					// runPreflight acknowledges and answers with a result.
					a.runPreflight(p.Command, enqueue)
					continue
				}
				ack := a.admit(p.Command)
				enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: ack}})
				if ack.Accepted && ack.Reason == "" {
					a.start(p.Command)
				}
			case *golivev1.ConnectResponse_ResultAck:
				a.mu.Lock()
				delete(a.unacked, p.ResultAck.CommandId)
				a.mu.Unlock()
			}
		}
	}()
	select {
	case err = <-recvErr:
	case err = <-sendErr:
	case <-ctx.Done():
		err = ctx.Err()
	}
	cancel()
	return true, err
}

func (a *Agent) sender(ctx context.Context, stream golivev1.AgentService_ConnectClient, out <-chan *golivev1.ConnectRequest, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	beat := func() error {
		a.beatSent()
		return stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
			Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now(),
		}}})
	}
	if err := beat(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-t.C:
			if err := beat(); err != nil {
				return err
			}
		}
	}
}

// reasonDisconnected is the reason of the approval update the agent gives
// itself when its stream ends (token 0: no live controller stands behind
// the approval any more).
const reasonDisconnected = "disconnected"

func (a *Agent) setApproval(u *golivev1.ApprovalUpdate) {
	old := a.token.Swap(u.GetFencingToken())
	if u.GetActive() && u.ExpiresAt != nil {
		t := u.ExpiresAt.AsTime()
		a.expiresAt.Store(&t)
	} else {
		a.expiresAt.Store(nil)
	}
	a.metrics.token.Set(float64(u.GetFencingToken()))
	// An approval that ended halts automated steps: their operation context
	// is cancelled (a swap in progress still completes or is undone). So
	// does losing the controller: the agent drops the approval with it,
	// though the approval itself may still be live.
	why := "the approval ended"
	if u.GetReason() == reasonDisconnected {
		why = "the agent lost its controller, and the approval with it"
	}
	a.mu.Lock()
	for id, c := range a.inflight {
		if !c.operator && c.token != u.GetFencingToken() && !c.halted {
			a.log.Warn("halting step: "+why, "command_id", id, "service", c.service)
			c.halted, c.haltedBy = true, why
			c.cancel()
		}
	}
	a.mu.Unlock()
	if old != u.GetFencingToken() {
		a.log.Info("approval changed", "fencing_token", u.GetFencingToken(), "active", u.GetActive(), "reason", u.GetReason())
	}
}

func (a *Agent) applyApproval(u *golivev1.ApprovalUpdate, enqueue func(*golivev1.ConnectRequest)) {
	if u == nil {
		u = &golivev1.ApprovalUpdate{}
	}
	a.setApproval(u)
	a.metrics.approvals.WithLabelValues(u.Reason).Inc()
	enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_ApprovalAck{ApprovalAck: &golivev1.ApprovalAck{
		FencingToken: u.FencingToken, Revision: u.Revision,
	}}})
}

// admit decides whether a command may run: an operator's rollback always
// may; anything else only under the approval token the agent holds. A
// command already running or finished is acknowledged again, not rerun.
func (a *Agent) admit(cmd *golivev1.Command) *golivev1.CommandAck {
	ack := &golivev1.CommandAck{CommandId: cmd.Id}
	held := a.token.Load()
	operatorRollback := cmd.GetRollback().GetOperator() || cmd.GetScale().GetOperator()
	svc := cmd.GetDeploy().GetService()
	if svc == "" {
		svc = cmd.GetRollback().GetService()
	}
	if svc == "" {
		svc = cmd.GetScale().GetService()
	}
	a.mu.Lock()
	_, running := a.inflight[cmd.Id]
	_, finished := a.unacked[cmd.Id]
	a.mu.Unlock()
	switch {
	case cmd.Id == "":
		ack.Reason = "command has no id"
	case running || finished:
		ack.Accepted, ack.Reason = true, "already running or done (idempotent by id)"
	case !operatorRollback && held == 0:
		ack.Reason = "automation is not authorized on this agent (it holds no approval token)"
	case !operatorRollback && cmd.FencingToken != held:
		ack.Reason = fmt.Sprintf("stale fencing token %d: this agent holds %d", cmd.FencingToken, held)
	case cmd.GetDeploy() == nil && cmd.GetRollback() == nil && cmd.GetScale() == nil:
		ack.Reason = "this agent executes deploy, rollback and scale commands only"
	case a.service(svc) == nil:
		ack.Reason = fmt.Sprintf("service %q is not configured on this host", svc)
	case cmd.GetScale() != nil:
		ack.Reason = a.admitScale(cmd.GetScale(), a.service(svc))
		ack.Accepted = ack.Reason == ""
	case a.service(svc).Exec == nil:
		ack.Reason = fmt.Sprintf("service %q has no release engine on this agent", svc)
	default:
		ack.Accepted = true
	}
	outcome := "rejected"
	if ack.Accepted {
		outcome = "accepted"
	}
	a.metrics.commands.WithLabelValues(outcome).Inc()
	if !ack.Accepted {
		a.log.Warn("command refused", "command_id", cmd.Id, "reason", ack.Reason)
	}
	return ack
}

func (a *Agent) service(name string) *Service {
	for i := range a.cfg.Services {
		if a.cfg.Services[i].Name == name {
			return &a.cfg.Services[i]
		}
	}
	return nil
}

// start runs an admitted command in its own goroutine (the deploy step
// serializes commands of one service).
func (a *Agent) start(cmd *golivev1.Command) {
	if cmd.GetScale() != nil {
		a.startScale(cmd) // scale_cmd.go
		return
	}
	dc := deploystep.Command{ID: cmd.Id}
	var svc string
	if d := cmd.GetDeploy(); d != nil {
		svc = d.Service
		dc.Kind, dc.Release, dc.ArtifactURL, dc.SHA256 = deploystep.KindDeploy, d.Release, d.ArtifactUrl, d.Sha256
		dc.Weight, dc.WeightBake = int(d.WeightPercent), d.GetWeightBake().AsDuration()
		if len(d.Signature) > 0 {
			dc.Signature = base64.StdEncoding.EncodeToString(d.Signature)
		}
	} else {
		r := cmd.GetRollback()
		svc = r.Service
		dc.Kind, dc.Release, dc.RestoreBackupID = deploystep.KindRollback, r.ToRelease, r.RestoreDbBackupId
	}
	s := a.service(svc)
	ctx, cancel := context.WithCancel(a.opCtx)
	ic := &inflightCmd{service: svc, token: cmd.FencingToken, operator: cmd.GetRollback().GetOperator(), cancel: cancel}
	a.mu.Lock()
	a.inflight[cmd.Id] = ic
	a.mu.Unlock()
	a.ops.Add(1)
	go func() {
		defer a.ops.Done()
		defer cancel()
		log := a.log.With("command_id", cmd.Id, "service", svc, "release", dc.Release)
		log.Info("step started", "kind", dc.Kind)
		res := s.Exec.Run(ctx, dc, func(stage string) {
			a.mu.Lock()
			ic.stage = stage
			send := a.send
			a.mu.Unlock()
			if send != nil {
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandProgress{CommandProgress: &golivev1.CommandProgress{
					CommandId: cmd.Id, Service: svc, Stage: stage, At: timestamppb.Now()}}})
				// The service's state with it: after a swap the controller
				// shows the release current names now, not the one of the
				// last beat (an agent frozen or cut off mid-step must not be
				// listed with a release the host no longer serves).
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
					Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
			}
		})
		log.Info("step finished", "outcome", res.Outcome, "failed_stage", res.FailedStage, "error", res.Error)
		a.metrics.steps.WithLabelValues(svc, string(res.Outcome)).Inc()
		if s.Prober != nil && !res.Unchanged && (res.Outcome == deploystep.OutcomeSucceeded || res.Outcome == deploystep.OutcomeRolledBack) {
			// Another release is live (an Unchanged no-op rollback keeps
			// the window it had): its health window starts now, and
			// its first figures go out without waiting for the next
			// heartbeat (a rollout's gate is waiting for them).
			s.Prober.Reset()
			a.ops.Add(1)
			go func() {
				defer a.ops.Done()
				a.heartbeatWhenHealthData(s)
			}()
		}
		if res.Outcome == deploystep.OutcomeSucceeded || res.Outcome == deploystep.OutcomeRolledBack {
			slot := ""
			if s.ActiveSlot != nil {
				slot = s.ActiveSlot()
			}
			s.traffic.resetServing(slot) // the serving slot's window is the new release's from now
		}
		rp := resultProto(svc, res)
		a.mu.Lock()
		if ic.halted && res.Outcome != deploystep.OutcomeSucceeded {
			// Stopped because the agent no longer held its approval, and the
			// host is back where it was: a rollout may command it again.
			rp.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED
			rp.Error = "halted: " + ic.haltedBy + " (" + rp.Error + ")"
		}
		delete(a.inflight, cmd.Id)
		a.unacked[cmd.Id] = rp
		send := a.send
		a.mu.Unlock()
		if send != nil {
			// The service's new state first, so that when the controller
			// records the result its view of the host is already true.
			send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
				Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
			send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: rp}})
		}
	}()
}

// heartbeatWhenHealthData reports a service whose release just went live
// closely for a few seconds: a heartbeat as soon as its fresh health window
// has a sample, then every 500 ms for 5 s, so a rollout's gate (which wants
// samples newer than its bake window) need not wait for the regular beat.
func (a *Agent) heartbeatWhenHealthData(s *Service) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(5 * time.Second)
	var last time.Time
	for {
		select {
		case <-a.opCtx.Done():
			return
		case <-deadline:
			return
		case <-t.C:
			if s.Prober.Snapshot().Requests == 0 || time.Since(last) < 500*time.Millisecond {
				continue
			}
			last = time.Now()
			a.mu.Lock()
			send := a.send
			a.mu.Unlock()
			if send != nil {
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
					Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
			}
		}
	}
}

func (a *Agent) unackedResults() []*golivev1.CommandResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*golivev1.CommandResult
	for _, r := range a.unacked {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CommandId < out[j].CommandId })
	return out
}

// resultProto converts a step's result for the wire.
func resultProto(service string, r deploystep.Result) *golivev1.CommandResult {
	out := &golivev1.CommandResult{CommandId: r.CommandID, Service: service, Release: r.Release, PreviousRelease: r.Previous,
		Error: r.Error, FinishedAt: timestamppb.New(r.Finished), Unchanged: r.Unchanged}
	if r.FailedStage != "" && r.Error != "" && !strings.HasPrefix(r.Error, r.FailedStage+":") {
		out.Error = r.FailedStage + ": " + r.Error
	}
	switch r.Outcome {
	case deploystep.OutcomeSucceeded:
		out.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED
	case deploystep.OutcomeRolledBack:
		out.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK
	default:
		out.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED
	}
	if r.Outcome != deploystep.OutcomeSucceeded && len(r.Warnings) > 0 {
		// A failure's warnings (e.g. the schema stays migrated) belong in
		// the one line the operator reads.
		w := "warning: " + strings.Join(r.Warnings, "; warning: ")
		if out.Error == "" {
			out.Error = w
		} else {
			out.Error += "; " + w
		}
	}
	if r.Backup != nil {
		if b, err := json.Marshal(r.Backup); err == nil {
			out.BackupJson = string(b)
		}
	}
	for _, s := range r.Stages {
		// A stage's warning (a success with something to know) is reported
		// as ok with the text "warning: ..." in error.
		e := s.Error
		if e == "" && s.UndoError != "" {
			e = "undo: " + s.UndoError
		}
		if s.Warning != "" {
			if e != "" {
				e += "; "
			}
			e += "warning: " + s.Warning
		}
		// A note (why a stage was skipped, e.g. a release already on the
		// host) goes out as the stage's output.
		o := s.HookOutput
		if s.Note != "" {
			o = strings.TrimSpace(s.Note + "\n" + o)
		}
		out.Stages = append(out.Stages, &golivev1.StageReport{Stage: s.Name, Ok: s.Error == "", Error: e, Seconds: s.Seconds, Output: o})
	}
	return out
}
