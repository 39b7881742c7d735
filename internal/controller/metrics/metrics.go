// Package metrics holds the controller's golive_controller_* series, built
// once per replica from a passed Registerer and shared by its parts (hub,
// executor, control API).
package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's golive_controller_* series.
type Metrics struct {
	AgentsConnected prometheus.Gauge
	ApprovalActive  prometheus.Gauge
	ApprovalExpiry  *Countdown
	ApprovalToken   prometheus.Gauge
	IsLeader        prometheus.Gauge
	RpcTotal        *prometheus.CounterVec
	RpcDuration     *prometheus.HistogramVec
	EtcdErrors      *prometheus.CounterVec
	Broadcasts      *prometheus.CounterVec
	SlowDisconnects prometheus.Counter
	RefusedConnects *prometheus.CounterVec
	RateLimited     prometheus.Counter
	DeploysRefused  *prometheus.CounterVec
	Rollouts        *prometheus.CounterVec
	RolloutDuration prometheus.Histogram
	GateFailures    prometheus.Counter
	WaveDuration    prometheus.Histogram
	HostsPerStage   *prometheus.GaugeVec
	BackupRecords   *prometheus.CounterVec
	// AgentRecordWrites counts agents/<host> puts the hub's flusher made
	// (claims and releases not included): the etcd write budget.
	AgentRecordWrites prometheus.Counter
	// ClaimTxns counts presence-claim transactions by kind (batch,
	// batch_retry, single).
	ClaimTxns *prometheus.CounterVec
}

// New builds the series and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		AgentsConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_agents_connected", Help: "Agents with a live stream to this replica."}),
		ApprovalActive:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_approval_active", Help: "1 while automation is authorized."}),
		ApprovalExpiry:  &Countdown{},
		ApprovalToken:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_approval_fencing_token", Help: "Fencing token of the live approval (0 when none)."}),
		IsLeader:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_is_leader", Help: "1 on the replica that leads."}),
		RpcTotal:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_rpc_total", Help: "Control RPCs by method and status code."}, []string{"method", "code"}),
		RpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "golive_controller_rpc_duration_seconds", Help: "Control RPC latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"method"}),
		EtcdErrors:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_etcd_errors_total", Help: "Failed etcd operations by operation."}, []string{"op"}),
		Broadcasts:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_approval_broadcasts_total", Help: "Approval updates pushed to agents, by reason."}, []string{"reason"}),
		SlowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_agent_slow_disconnects_total", Help: "Agent streams closed because their send queue was full."}),
		RefusedConnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_agent_refused_total", Help: "Agent connections refused, by reason."}, []string{"reason"}),
		DeploysRefused:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_deploys_refused_total", Help: "Deploys refused, by reason."}, []string{"reason"}),
	}
	m.Rollouts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_rollouts_total", Help: "Rollouts ended, by outcome."}, []string{"outcome"})
	m.RolloutDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "golive_controller_rollout_duration_seconds", Help: "Rollout duration from start to end.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
	m.GateFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_gate_failures_total", Help: "Wave health gates that failed."})
	m.WaveDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "golive_controller_wave_duration_seconds", Help: "Wave duration from start to gate passed.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)})
	m.HostsPerStage = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "golive_controller_rollout_hosts", Help: "Hosts of running Rollouts (led by this replica) by state."}, []string{"state"})
	m.BackupRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_backup_records_total", Help: "Backup records agents sent, by outcome (stored|rejected)."}, []string{"outcome"})
	reg.MustRegister(m.BackupRecords)
	m.RateLimited = prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_rate_limited_total", Help: "Control calls refused by the per-identity rate limit."})
	reg.MustRegister(m.RateLimited)
	m.AgentRecordWrites = prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_agent_record_writes_total",
		Help: "Agent records (agents/<host>) the hub rewrote in etcd outside connects and disconnects."})
	m.ClaimTxns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_presence_claim_txns_total",
		Help: "etcd transactions that claimed agent presence, by kind (batch, batch_retry, single)."}, []string{"kind"})
	reg.MustRegister(m.AgentRecordWrites, m.ClaimTxns)
	reg.MustRegister(m.Rollouts, m.RolloutDuration, m.GateFailures, m.WaveDuration, m.HostsPerStage)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "golive_controller_approval_expiry_seconds",
		Help: "Seconds until the live approval expires (0 when none)."}, m.ApprovalExpiry.seconds))
	reg.MustRegister(m.AgentsConnected, m.ApprovalActive, m.ApprovalToken, m.IsLeader, m.RpcTotal, m.RpcDuration,
		m.EtcdErrors, m.Broadcasts, m.SlowDisconnects, m.RefusedConnects, m.DeploysRefused)
	return m
}

// Countdown is a gauge of the seconds left until a deadline, computed when
// it is scraped: no goroutine ticks it down between scrapes.
type Countdown struct{ at atomic.Int64 }

// SetDeadline sets the deadline; the zero time means none (the gauge is 0).
func (c *Countdown) SetDeadline(t time.Time) {
	if t.IsZero() {
		c.at.Store(0)
		return
	}
	c.at.Store(t.UnixNano())
}

func (c *Countdown) seconds() float64 {
	at := c.at.Load()
	if at == 0 {
		return 0
	}
	return max(0, time.Until(time.Unix(0, at)).Seconds())
}
