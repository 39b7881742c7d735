package agent

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/traffic"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// trafficMetrics are the real-traffic counts on the agent's /metrics, by
// service and slot ("" for a restart-mode service).
type trafficMetrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newTrafficMetrics(reg prometheus.Registerer) (*trafficMetrics, error) {
	labels := []string{"service", "slot"}
	m := &trafficMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_agent_traffic_requests_total",
			Help: "Requests the load balancer sent to a service's slot (HAProxy counters or nginx access log)."}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_agent_traffic_errors_total",
			Help: "Of those, answered 5xx or failed to connect or to get a response."}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "golive_agent_traffic_latency_seconds",
			Help:    "Upstream response time of those requests (HAProxy: its mean over the server's last 1024 requests).",
			Buckets: []float64{.005, .01, .025, .05, .1, .2, .3, .5, 1, 2.5, 5, 10}}, labels),
	}
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// slotRecorder feeds one slot's requests to the metrics.
type slotRecorder struct {
	requests, errors prometheus.Counter
	latency          prometheus.Observer
}

func (m *trafficMetrics) recorder(service, slot string) traffic.Recorder {
	return slotRecorder{requests: m.requests.WithLabelValues(service, slot), errors: m.errors.WithLabelValues(service, slot),
		latency: m.latency.WithLabelValues(service, slot)}
}

func (r slotRecorder) Requests(n, errors uint64) {
	r.requests.Add(float64(n))
	if errors > 0 {
		r.errors.Add(float64(errors))
	}
}

func (r slotRecorder) Latency(d time.Duration, n uint64) {
	s := d.Seconds()
	for range min(n, 100_000) {
		r.latency.Observe(s)
	}
}

// serviceTraffic measures one service's real traffic from its load
// balancer: a window per slot, filled by an HAProxy counter reader or an
// nginx access log follower that it owns (start, stop).
type serviceTraffic struct {
	source string // "haproxy" or "nginx"
	slots  []trafficSlot
	run    func(context.Context) error
	// observed reports when the figures were last read and why the last
	// read failed ("" if it did not).
	observed func() (time.Time, string)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type trafficSlot struct {
	name   string
	window *traffic.Window
}

// newServiceTraffic builds the reader for sc's load balancer: a blue-green
// service's router (haproxy, or nginx with access_log), or a restart-mode
// service's traffic block. nil when there is none.
func newServiceTraffic(sc *agentconfig.Service, m *trafficMetrics, log hclog.Logger) (*serviceTraffic, error) {
	log = log.With("service", sc.Name)
	t := &serviceTraffic{}
	slot := func(name string) *traffic.Window {
		var rec traffic.Recorder
		if m != nil {
			rec = m.recorder(sc.Name, name)
		}
		w := traffic.NewWindow(traffic.WindowOptions{Recorder: rec})
		t.slots = append(t.slots, trafficSlot{name: name, window: w})
		return w
	}
	haproxy := func(socket string, servers []traffic.Server) error {
		r, err := traffic.NewHAProxyReader(traffic.HAProxyConfig{Socket: socket, Servers: servers, Logger: log})
		if err != nil {
			return err
		}
		t.source, t.run = "haproxy", r.Run
		t.observed = func() (time.Time, string) {
			at, err := r.LastRead()
			if err != nil {
				return at, err.Error()
			}
			return at, ""
		}
		return nil
	}
	nginx := func(path string, routes map[int]*traffic.Window) error {
		f, err := traffic.NewFollower(traffic.FollowerConfig{Path: path, Routes: routes, Logger: log})
		if err != nil {
			return err
		}
		t.source, t.run = "nginx", f.Run
		t.observed = func() (time.Time, string) {
			st := f.Stats()
			return st.Polled, st.LastError
		}
		return nil
	}
	var err error
	switch {
	case sc.SwapMode == agentconfig.SwapBlueGreen && sc.BlueGreen != nil:
		bg := sc.BlueGreen
		switch r := bg.Router; {
		case r.Kind == agentconfig.RouterHAProxy:
			err = haproxy(r.AdminSocket, []traffic.Server{
				{Backend: r.Backend, Server: agentconfig.SlotBlue, Window: slot(agentconfig.SlotBlue)},
				{Backend: r.Backend, Server: agentconfig.SlotGreen, Window: slot(agentconfig.SlotGreen)},
			})
		case r.Kind == agentconfig.RouterNginx && r.AccessLog != "":
			err = nginx(r.AccessLog, map[int]*traffic.Window{
				bg.BluePort:  slot(agentconfig.SlotBlue),
				bg.GreenPort: slot(agentconfig.SlotGreen),
			})
		default:
			return nil, nil
		}
	case sc.Traffic != nil:
		switch tr := sc.Traffic; tr.Source {
		// A scaled service's instances sum into the one window: instance
		// i >= 1 is server "<server>-i" (HAProxy) or port InstancePort(i).
		case agentconfig.TrafficHAProxy:
			w := slot("")
			servers := []traffic.Server{{Backend: tr.Backend, Server: tr.Server, Window: w}}
			for i := 1; i < sc.MaxInstances(); i++ {
				servers = append(servers, traffic.Server{Backend: tr.Backend, Server: tr.Server + agentconfig.InstanceName(i), Window: w, Optional: true})
			}
			err = haproxy(tr.AdminSocket, servers)
		case agentconfig.TrafficNginx:
			w := slot("")
			routes := map[int]*traffic.Window{}
			for i := 0; i < sc.MaxInstances(); i++ {
				routes[sc.InstancePort(sc.Port, i)] = w
			}
			err = nginx(tr.AccessLog, routes)
		default:
			return nil, nil
		}
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// start runs the reader until stop.
func (t *serviceTraffic) start() {
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.run(ctx)
	}()
}

// stop ends the reader and waits for it.
func (t *serviceTraffic) stop() {
	if t.cancel != nil {
		t.cancel()
	}
	t.wg.Wait()
}

// resetServing starts the window of the slot that serves now (slot; ""
// for a restart-mode service) again, once a step put a release live there:
// a gate judges that release's requests only. A blue-green slot is reused
// — a later deploy starts its release in the slot an earlier one left —
// so its window must not carry the previous release's requests (nor the
// 502s a router logged before any release was live).
func (t *serviceTraffic) resetServing(slot string) {
	if t == nil {
		return
	}
	for _, s := range t.slots {
		if s.name == "" || s.name == slot {
			s.window.Reset()
		}
	}
}

// proto is the heartbeat's view of the windows (nil for a nil t).
func (t *serviceTraffic) proto() *golivev1.TrafficWindow {
	if t == nil {
		return nil
	}
	at, errText := t.observed()
	out := &golivev1.TrafficWindow{Source: t.source, Error: errText}
	if !at.IsZero() {
		out.ObservedAt = timestamppb.New(at)
	}
	for _, s := range t.slots {
		st := s.window.Snapshot()
		e := &golivev1.SlotTraffic{Slot: s.name, Requests: st.Requests, Errors: st.Errors, Source: t.source,
			AvgLatencyMs: ms(st.AvgLatency), WindowSeconds: st.Covered.Seconds(), ObservedAt: out.ObservedAt}
		if at.IsZero() {
			// Never read: the window covers nothing, however old it is.
			e.WindowSeconds = 0
		}
		if st.HasP99 {
			e.P99LatencyMs = proto.Float64(ms(st.P99Latency))
		}
		out.Slots = append(out.Slots, e)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
