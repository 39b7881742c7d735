package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the health collectors, labelled by service. Build one per
// agent with NewMetrics and share it between Probers.
type Metrics struct {
	probes     *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	errorRatio *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, e.g. in tests). It fails if a collector is already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "golive_agent_health_probe_total",
			Help: "Health probes run by the agent, by service and result (success or failure).",
		}, []string{"service", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "golive_agent_health_probe_duration_seconds",
			Help:    "Duration of the agent's health probes.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"service"}),
		errorRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "golive_agent_health_window_error_ratio",
			Help: "Errors over requests in the health sliding window (probes and observed samples).",
		}, []string{"service"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.probes, m.duration, m.errorRatio} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register health metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) probe(service string, seconds float64, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.probes.WithLabelValues(service, result).Inc()
	m.duration.WithLabelValues(service).Observe(seconds)
}

func (m *Metrics) window(service string, st Stats) {
	m.errorRatio.WithLabelValues(service).Set(st.ErrorRatio())
}

// Forget deletes the series of a service that is no longer managed.
func (m *Metrics) Forget(service string) {
	m.probes.DeletePartialMatch(prometheus.Labels{"service": service})
	m.duration.DeleteLabelValues(service)
	m.errorRatio.DeleteLabelValues(service)
}
