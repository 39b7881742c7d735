package controller

// What status, watch, the dashboard and /metrics show of the DNS failover:
// each failover record as stored (the pool it publishes, the last check's
// verdicts and streaks, pinned or blocked, the last switch: when, by whom,
// why). Status reads etcd only: the zone's primary is not asked (that is
// `dns show`), so status stays fast while DNS is in trouble.

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsfailover"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// DNS alert kinds of golive_controller_dns_failover_alert.
const (
	dnsAlertRecommend  = "recommend"   // the leader would switch but may not (any reason)
	dnsAlertNoApproval = "no_approval" // ... because no approval is live
	dnsAlertHold       = "hold"        // the primary fails and the secondary is not healthy
)

// statusRecords lists the failover records as stored, in config order
// (nil without DNS).
func (d *dnsService) statusRecords(ctx context.Context) ([]*golivev1.DnsRecord, error) {
	if d == nil {
		return nil, nil
	}
	var out []*golivev1.DnsRecord
	for _, f := range d.cfg.Failovers {
		typ := string(f.Type)
		r, err := d.load(ctx, f.Name, typ)
		if err != nil {
			return nil, err
		}
		rec := &golivev1.DnsRecord{Name: f.Name, Type: typ}
		if z := d.cfg.ZoneFor(f.Name); z != nil {
			rec.Zone, rec.Server = z.Name, z.Server
		}
		if r != nil {
			rec.StoredValues, rec.StoredTtl = r.Values, durationpb.New(r.TTL)
			rec.Last, rec.Pending = entryProto(r.Last), entryProto(r.Pending)
		}
		rec.Failover = failoverProto(f, r)
		d.fillLastSwitch(ctx, r, rec.Failover)
		out = append(out, rec)
	}
	return out, nil
}

// dnsSwitchLookBack bounds how many history entries status reads to find
// the last switch when the record's last change is not it.
const dnsSwitchLookBack = 200

// fillLastSwitch sets who made the record's last switch and why, from the
// history entry that made it (the record's last change, else its history).
func (d *dnsService) fillLastSwitch(ctx context.Context, r *dnsRecord, out *golivev1.DnsFailoverState) {
	if r == nil || r.Failover == nil || r.Failover.LastSwitch.IsZero() || out == nil {
		return
	}
	at := r.Failover.LastSwitch
	e := r.Last
	if e == nil || !e.At.Equal(at) {
		e = nil
		// Newest first, a bounded look back (entries are keyed by sequence).
		resp, err := d.s.cli.Get(ctx, d.s.keys.DNSHistory(r.Name, r.Type), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(dnsSwitchLookBack))
		if err != nil {
			return
		}
		for _, kv := range resp.Kvs {
			var h dnsEntry
			if json.Unmarshal(kv.Value, &h) == nil && h.At.Equal(at) {
				e = &h
				break
			}
		}
	}
	if e == nil {
		return
	}
	switch e.Kind {
	case dnsKindAutomatic:
		out.LastSwitchBy = "automatic"
	case dnsKindAdopt:
		out.LastSwitchBy = "adopted"
	default:
		out.LastSwitchBy = e.Actor
	}
	out.LastSwitchReason = e.Reason
}

// dnsStateCollector computes the failover state series at scrape time from
// the last state this replica observed of each record, while fresh.
type dnsStateCollector struct {
	state, since, bad, pinned, alert *prometheus.Desc

	mu   sync.Mutex
	cfg  *dnsconfig.Config
	seen map[string]dnsObservation
	now  func() time.Time
}

// dnsObservation is one record's state as last observed.
type dnsObservation struct {
	at     time.Time
	st     dnsfailover.State
	alerts map[string]bool
}

func newDNSStateCollector(cfg *dnsconfig.Config) *dnsStateCollector {
	return &dnsStateCollector{
		state: prometheus.NewDesc("golive_controller_dns_failover_state",
			"1 for the pool a failover record publishes, 0 for its other pool, by name and pool (as last observed by this replica; absent once that is stale).",
			[]string{"name", "pool"}, nil),
		since: prometheus.NewDesc("golive_controller_dns_failover_since_switch_seconds",
			"Seconds since the failover record last switched pools, computed at scrape time (absent before its first switch).",
			[]string{"name"}, nil),
		bad: prometheus.NewDesc("golive_controller_dns_failover_bad_checks",
			"Consecutive checks the failover record's primary pool was not healthy (the threshold switches).",
			[]string{"name"}, nil),
		pinned: prometheus.NewDesc("golive_controller_dns_failover_pinned",
			"1 while an operator pinned the failover record off its primary (automation only recommends).",
			[]string{"name"}, nil),
		alert: prometheus.NewDesc("golive_controller_dns_failover_alert",
			"1 while the leader would switch the record but may not (kind recommend: no approval, manual failback, pinned, blocked; kind no_approval: because no approval is live) or cannot (kind hold: the secondary is not healthy either).",
			[]string{"name", "kind"}, nil),
		cfg: cfg, seen: map[string]dnsObservation{}, now: time.Now,
	}
}

// observe records st (and dec, the check's decision, when there was one).
func (c *dnsStateCollector) observe(f *dnsconfig.Failover, st dnsfailover.State, dec *dnsfailover.Decision, live bool) {
	alerts := map[string]bool{}
	if dec != nil {
		p := dnsfailover.PolicyFrom(f)
		alerts[dnsAlertRecommend] = dec.Action == dnsfailover.Recommend
		alerts[dnsAlertHold] = dec.Action == dnsfailover.Hold
		// Step's order: pinned, manual failback, blocked, then approval.
		alerts[dnsAlertNoApproval] = dec.Action == dnsfailover.Recommend && !live && !st.Pinned && st.Blocked == "" &&
			!(dec.Kind == dnsfailover.Failback && !p.AutoFailback)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[f.Name] = dnsObservation{at: c.now(), st: st, alerts: alerts}
}

// fresh is how long an observation stands: three checks, at least 30 s.
func fresh(f *dnsconfig.Failover) time.Duration { return max(3*f.Check.Interval, 30*time.Second) }

func (c *dnsStateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.since, c.bad, c.pinned, c.alert} {
		ch <- d
	}
}

func (c *dnsStateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for _, f := range c.cfg.Failovers {
		o, ok := c.seen[f.Name]
		if !ok || now.Sub(o.at) > fresh(f) {
			continue
		}
		active := dnsfailover.Active(dnsfailover.PolicyFrom(f), o.st)
		for _, pool := range []string{f.Primary, f.Secondary} {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, b2f(pool == active), f.Name, pool)
		}
		if !o.st.LastSwitch.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.since, prometheus.GaugeValue, now.Sub(o.st.LastSwitch).Seconds(), f.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.bad, prometheus.GaugeValue, float64(o.st.Bad), f.Name)
		ch <- prometheus.MustNewConstMetric(c.pinned, prometheus.GaugeValue, b2f(o.st.Pinned), f.Name)
		for _, k := range []string{dnsAlertRecommend, dnsAlertNoApproval, dnsAlertHold} {
			ch <- prometheus.MustNewConstMetric(c.alert, prometheus.GaugeValue, b2f(o.alerts[k]), f.Name, k)
		}
	}
}
