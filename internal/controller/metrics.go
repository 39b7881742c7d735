package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's golive_controller_* series.
type metrics struct {
	agentsConnected prometheus.Gauge
	approvalActive  prometheus.Gauge
	approvalExpiry  prometheus.Gauge
	approvalToken   prometheus.Gauge
	isLeader        prometheus.Gauge
	rpcTotal        *prometheus.CounterVec
	rpcDuration     *prometheus.HistogramVec
	etcdErrors      *prometheus.CounterVec
	broadcasts      *prometheus.CounterVec
	slowDisconnects prometheus.Counter
	refusedConnects *prometheus.CounterVec
	rateLimited     prometheus.Counter
	deploysRefused  *prometheus.CounterVec
	rollouts        *prometheus.CounterVec
	rolloutDuration prometheus.Histogram
	gateFailures    prometheus.Counter
	waveDuration    prometheus.Histogram
	hostsPerStage   *prometheus.GaugeVec
	backupRecords   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		agentsConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_agents_connected", Help: "Agents with a live stream to this replica."}),
		approvalActive:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_approval_active", Help: "1 while automation is authorized."}),
		approvalExpiry:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_approval_expiry_seconds", Help: "Seconds until the live approval expires (0 when none)."}),
		approvalToken:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_approval_fencing_token", Help: "Fencing token of the live approval (0 when none)."}),
		isLeader:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "golive_controller_is_leader", Help: "1 on the replica that leads."}),
		rpcTotal:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_rpc_total", Help: "Control RPCs by method and status code."}, []string{"method", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "golive_controller_rpc_duration_seconds", Help: "Control RPC latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"method"}),
		etcdErrors:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_etcd_errors_total", Help: "Failed etcd operations by operation."}, []string{"op"}),
		broadcasts:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_approval_broadcasts_total", Help: "Approval updates pushed to agents, by reason."}, []string{"reason"}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_agent_slow_disconnects_total", Help: "Agent streams closed because their send queue was full."}),
		refusedConnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_agent_refused_total", Help: "Agent connections refused, by reason."}, []string{"reason"}),
		deploysRefused:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_deploys_refused_total", Help: "Deploys refused, by reason."}, []string{"reason"}),
	}
	m.rollouts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_rollouts_total", Help: "Rollouts ended, by outcome."}, []string{"outcome"})
	m.rolloutDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "golive_controller_rollout_duration_seconds", Help: "Rollout duration from start to end.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
	m.gateFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_gate_failures_total", Help: "Wave health gates that failed."})
	m.waveDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "golive_controller_wave_duration_seconds", Help: "Wave duration from start to gate passed.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)})
	m.hostsPerStage = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "golive_controller_rollout_hosts", Help: "Hosts of running rollouts (led by this replica) by state."}, []string{"state"})
	m.backupRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_backup_records_total", Help: "Backup records agents sent, by outcome (stored|rejected)."}, []string{"outcome"})
	reg.MustRegister(m.backupRecords)
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{Name: "golive_controller_rate_limited_total", Help: "Control calls refused by the per-identity rate limit."})
	reg.MustRegister(m.rateLimited)
	reg.MustRegister(m.rollouts, m.rolloutDuration, m.gateFailures, m.waveDuration, m.hostsPerStage)
	reg.MustRegister(m.agentsConnected, m.approvalActive, m.approvalExpiry, m.approvalToken, m.isLeader, m.rpcTotal, m.rpcDuration,
		m.etcdErrors, m.broadcasts, m.slowDisconnects, m.refusedConnects, m.deploysRefused)
	return m
}
