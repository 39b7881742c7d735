package notify

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery results, the result label of
// golive_controller_webhook_deliveries_total.
const (
	ResultSuccess   = "success"   // the receiver answered 2xx
	ResultRejected  = "rejected"  // the receiver answered a status that is not retried (4xx other than 429, 3xx)
	ResultFailed    = "failed"    // every attempt failed with a network error, timeout, 429 or 5xx
	ResultAbandoned = "abandoned" // Close's drain deadline passed during the delivery
)

// Metrics are the notifier's collectors, labelled by receiver name.
type Metrics struct {
	deliveries *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, e.g. in tests). It fails if a collector is already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "golive_controller_webhook_deliveries_total",
			Help: "Webhook events delivered or given up on, by receiver and result (success, rejected, failed, abandoned).",
		}, []string{"receiver", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "golive_controller_webhook_dropped_total",
			Help: "Webhook events dropped without an attempt: the receiver's queue was full (oldest dropped) or Close's drain deadline passed.",
		}, []string{"receiver"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "golive_controller_webhook_delivery_duration_seconds",
			Help:    "Time from Notify to the final outcome of a webhook delivery (queueing and retries included), by receiver.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"receiver"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.dropped, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register webhook metrics: %w", err)
			}
		}
	}
	return m, nil
}

// initReceiver creates the series of a receiver so that they exist, at 0, before its
// first event: alerts on rate() and increase() need them.
func (m *Metrics) initReceiver(name string) {
	for _, r := range []string{ResultSuccess, ResultRejected, ResultFailed, ResultAbandoned} {
		m.deliveries.WithLabelValues(name, r)
	}
	m.dropped.WithLabelValues(name)
}
