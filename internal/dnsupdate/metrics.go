package dnsupdate

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Update results, the result label of golive_controller_dns_updates_total.
const (
	ResultConfirmed    = "confirmed"     // applied and answered by the server
	ResultRefused      = "refused"       // REFUSED / NOTAUTH: key or policy
	ResultConflict     = "conflict"      // YXRRSET / NXRRSET: someone else changed the record
	ResultUnreachable  = "unreachable"   // no answer
	ResultServerError  = "server_error"  // SERVFAIL and the like
	ResultNotConfirmed = "not_confirmed" // accepted but not answered in time, or unverified
	ResultInvalid      = "invalid"       // not sent: a malformed change
)

var results = []string{ResultConfirmed, ResultRefused, ResultConflict, ResultUnreachable, ResultServerError, ResultNotConfirmed, ResultInvalid}

// Metrics are the DNS updater's collectors, labelled by zone. Pass them in
// Options.Metrics; nil records nothing.
type Metrics struct {
	updates *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "golive_controller_dns_updates_total",
			Help: "RFC 2136 updates sent, by zone and result (confirmed, refused, conflict, unreachable, server_error, not_confirmed, invalid).",
		}, []string{"zone", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "golive_controller_dns_update_duration_seconds",
			Help:    "Time from sending a DNS update to the zone's primary answering the new data, for confirmed updates, by zone.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"zone"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.updates, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register dns update metrics: %w", err)
			}
		}
	}
	return m, nil
}

// initZone creates a zone's series at 0, so rate() alerts see them.
func (m *Metrics) initZone(zone string) {
	if m == nil {
		return
	}
	for _, r := range results {
		m.updates.WithLabelValues(zone, r)
	}
	m.latency.WithLabelValues(zone)
}

func (m *Metrics) observe(zone string, res *Result, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.updates.WithLabelValues(zone, ResultConfirmed).Inc()
		m.latency.WithLabelValues(zone).Observe(res.Latency.Seconds())
		return
	}
	m.updates.WithLabelValues(zone, ResultOf(err)).Inc()
}

// ResultOf names the result of a failed Apply (the result label).
func ResultOf(err error) string {
	switch {
	case err == nil:
		return ResultConfirmed
	case errors.Is(err, ErrRefused):
		return ResultRefused
	case errors.Is(err, ErrConflict):
		return ResultConflict
	case errors.Is(err, ErrUnreachable):
		return ResultUnreachable
	case errors.Is(err, ErrNotConfirmed):
		return ResultNotConfirmed
	case errors.Is(err, ErrInvalid):
		return ResultInvalid
	}
	return ResultServerError
}
