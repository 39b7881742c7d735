package controller

// The leader's health-checked DNS failover: one loop per failover block of
// --dns-config, started with the rollout executor when the replica leads
// and stopped when its session ends.
//
// It lives here, beside the DNS write path (dns.go), rather than in
// executor/: a failover's switch is a change of a DNS record, and every
// change of a record — an operator's dns set or dns failover, the leader's
// switch — goes through the one path in dns.go (intent, update, result),
// so that a record has one engine whatever started the change. The rollout
// executor stays the rollouts' engine.
//
// Each check (every check.interval):
//
//	agents (hub) --judgePool--> Check{primary, secondary} --dnsfailover.Step(state, approval live?)
//	  None / Hold / Recommend --> txn If(leader) Then(record: state, decision [, history, audit])
//	                              Hold and a new Recommend alert (webhook, metric) with the command
//	  Switch --> dns.go change: intent fenced on the leader's election key AND the
//	             approval's token, audited with the figures; Apply; result,
//	             dnsfailover.Applied; webhook, metrics
//
// Checks start 3 heartbeat intervals after the replica took the lead, so
// that agents reconnecting after a restart are not judged as lost.
//
// A host of a pool is healthy when its agent is connected, its heartbeat
// fresh, and every service on it passes its probe (fresh) with its real
// traffic, when the load balancer is read, under dnsMaxErrorRate. A host
// without data is not healthy (unknown is bad). A pool is healthy when at
// least half of its hosts are, and at least one.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsfailover"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/notify"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Webhook kinds of the DNS failover.
const (
	kindDNSSwitched      = notify.KindDNSSwitched
	kindDNSRecommend     = notify.KindDNSFailoverRecommended
	kindDNSHold          = notify.KindDNSFailoverHeld
	kindDNSSwitchFailure = notify.KindDNSSwitchFailed
)

// dnsMaxErrorRate is the real-traffic error rate above which a host is
// not healthy, over at least dnsMinRequests requests.
const (
	dnsMaxErrorRate = 0.05
	dnsMinRequests  = 10
)

// dnsMetrics are the failover's series. The counters count on the replica
// that did the work; the state series (dnsStateCollector) are computed at
// scrape time from the last state this replica observed, and only while
// that observation is fresh, so a replica that lost the lead stops
// reporting a state it no longer watches.
type dnsMetrics struct {
	checks   *prometheus.CounterVec
	switches *prometheus.CounterVec
	states   *dnsStateCollector
}

func newDNSMetrics(reg prometheus.Registerer, cfg *dnsconfig.Config) (*dnsMetrics, error) {
	m := &dnsMetrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_dns_failover_checks_total",
			Help: "Health checks of failover records' primary pools, by name and verdict."}, []string{"name", "verdict"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_dns_failover_switches_total",
			Help: "Confirmed switches of failover records, by name and source (automatic, operator)."}, []string{"name", "source"}),
		states: newDNSStateCollector(cfg),
	}
	for _, c := range []prometheus.Collector{m.checks, m.switches, m.states} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register dns failover metrics: %w", err)
		}
	}
	for _, f := range cfg.Failovers {
		for _, v := range []dnsfailover.Verdict{dnsfailover.Healthy, dnsfailover.Unhealthy, dnsfailover.Unknown} {
			m.checks.WithLabelValues(f.Name, string(v))
		}
		for _, s := range []dnsfailover.Source{dnsfailover.Automatic, dnsfailover.Operator} {
			m.switches.WithLabelValues(f.Name, string(s))
		}
	}
	return m, nil
}

// observe records a record's stored state (after a switch).
func (m *dnsMetrics) observe(f *dnsconfig.Failover, r *dnsRecord) {
	if m == nil || r == nil || r.Failover == nil {
		return
	}
	m.states.observe(f, *r.Failover, nil, false)
}

// observeCheck records the state and decision of one of the leader's
// checks; live says whether an approval was live.
func (m *dnsMetrics) observeCheck(f *dnsconfig.Failover, st dnsfailover.State, dec dnsfailover.Decision, live bool) {
	if m == nil {
		return
	}
	m.states.observe(f, st, &dec, live)
}

func (m *dnsMetrics) switched(f *dnsconfig.Failover, r *dnsRecord, src dnsfailover.Source) {
	if m == nil {
		return
	}
	m.switches.WithLabelValues(f.Name, string(src)).Inc()
	m.observe(f, r)
}

// dnsNotifyEvent is the webhook of a DNS change or alert: the record, the
// pools, the figures, the command; never a secret.
func dnsNotifyEvent(kind notify.Kind, actor string, e *dnsEntry, command string) notify.Event {
	ev := notify.Event{Kind: kind, Actor: actor, Reason: e.Reason, FencingToken: e.Token, Details: map[string]string{
		"name": e.Name, "type": e.Type, "old": strings.Join(e.Old, " "), "new": strings.Join(e.New, " "), "outcome": e.Outcome}}
	if e.From != "" || e.To != "" {
		ev.Details["from"], ev.Details["to"] = e.From, e.To
	}
	if command != "" {
		ev.Details["command"] = command
	}
	if e.Error != "" {
		ev.Details["error"] = e.Error
	}
	return ev
}

// startFailover runs the failover loops under the leader's election key
// until ctx ends; the returned channel closes once they all stopped. A
// controller without DNS returns a closed channel.
func (d *dnsService) startFailover(ctx context.Context, leaderKey string, leaderRev int64) <-chan struct{} {
	done := make(chan struct{})
	if d == nil || len(d.cfg.Failovers) == 0 {
		close(done)
		return done
	}
	fence := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", leaderRev)
	var wg sync.WaitGroup
	for _, f := range d.cfg.Failovers {
		wg.Add(1)
		go func() { defer wg.Done(); d.runFailover(ctx, fence, f) }()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

func (d *dnsService) runFailover(ctx context.Context, fence clientv3.Cmp, f *dnsconfig.Failover) {
	log := d.log.Named("failover").With("name", f.Name)
	log.Info("dns failover watching", "primary", f.Primary, "secondary", f.Secondary, "interval", f.Check.Interval, "threshold", f.Check.Threshold, "failback", f.Failback)
	// A new leader first lets the fleet reconnect (after a restart of
	// every replica, agents come back over a few heartbeats): judged
	// earlier, pools whose agents are still reconnecting would look bad.
	warm := time.NewTimer(3 * d.s.cfg.HeartbeatInterval)
	select {
	case <-ctx.Done():
		warm.Stop()
		return
	case <-warm.C:
	}
	t := time.NewTicker(f.Check.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.check(ctx, fence, f); err != nil && ctx.Err() == nil {
			log.Warn("dns failover check", "error", err)
		}
	}
}

// check judges both pools once and acts on the decision.
func (d *dnsService) check(ctx context.Context, fence clientv3.Cmp, f *dnsconfig.Failover) error {
	typ := string(f.Type)
	r, err := d.adopt(ctx, f.Name, typ)
	if err != nil {
		return err
	}
	if r.Pending != nil {
		if r, err = d.resolvePending(ctx, r, false); err != nil || r.Pending != nil {
			return err // a change is in flight: the next check decides again
		}
	}
	agents, err := d.s.hub.Agents(ctx)
	if err != nil {
		return err
	}
	ap, _, err := d.s.approvals.Current(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	live := ap.Active(now)
	maxAge := 3*d.s.cfg.HeartbeatInterval + f.Check.Interval
	chk := dnsfailover.Check{At: now, Primary: judgePool(d.cfg.Pool(f.Primary), agents, now, maxAge),
		Secondary: judgePool(d.cfg.Pool(f.Secondary), agents, now, maxAge)}
	d.metrics.checks.WithLabelValues(f.Name, string(chk.Primary.Verdict)).Inc()
	p := dnsfailover.PolicyFrom(f)
	st := dnsfailover.State{}
	if r.Failover != nil {
		st = *r.Failover
	}
	next, dec := dnsfailover.Step(p, st, chk, live)
	if dec.Ignored {
		return nil
	}
	prev := r.Decision
	decision := &dnsDecision{At: now, Action: string(dec.Action), Reason: dec.Reason, To: dec.To, Command: dec.Command,
		Primary: describeHealth(chk.Primary), Secondary: describeHealth(chk.Secondary)}
	d.metrics.observeCheck(f, next, dec, live)

	if dec.Action == dnsfailover.Switch {
		return d.switchPool(ctx, fence, f, p, r, next, dec, decision, ap.Token)
	}
	// Store the streaks and the decision; a new recommendation or hold is
	// also an alert, with its history and audit entries.
	upd := *r
	upd.Failover, upd.Decision = &next, decision
	var alert *dnsEntry
	var kind notify.Kind
	switch {
	case dec.Action == dnsfailover.Recommend && !dec.Repeat:
		alert, kind = &dnsEntry{Kind: dnsKindRecommend, Outcome: dnsRecommended}, kindDNSRecommend
	case dec.Action == dnsfailover.Hold && (prev == nil || prev.Action != string(dnsfailover.Hold)):
		alert, kind = &dnsEntry{Kind: dnsKindHold, Outcome: dnsHeld}, kindDNSHold
	}
	cmps := []clientv3.Cmp{fence, clientv3.Compare(clientv3.ModRevision(d.key(f.Name, typ)), "=", r.modRev)}
	if alert == nil {
		_, _, err := d.commit(ctx, cmps, []clientv3.Op{d.opPut(&upd)})
		return err
	}
	upd.Seq++
	*alert = dnsEntry{Seq: upd.Seq, At: now, Name: f.Name, Type: typ, Kind: alert.Kind, Actor: "controller", Replica: d.s.cfg.ReplicaID,
		Outcome: alert.Outcome, Old: r.Values, New: d.cfg.Pool(orPool(dec.To, f.Secondary)).Values(f.Type), TTL: f.TTL, Reason: dec.Reason,
		From: dec.From, To: dec.To, Command: dec.Command}
	if _, _, err := d.s.audit.Append(ctx, d.auditEntry(alert, alert.Outcome, "controller"), cmps, []clientv3.Op{d.opPut(&upd), d.opHistory(alert)}); err != nil {
		return err // deposed or raced: nothing alerted; the next check decides again
	}
	d.log.Warn("dns failover "+alert.Outcome, "name", f.Name, "to", dec.To, "reason", dec.Reason, "command", dec.Command)
	d.s.notifier.Notify(dnsNotifyEvent(kind, "controller", alert, dec.Command))
	return nil
}

// switchPool applies a Switch decision: the change is fenced on the
// leader's election key and the approval's token, and audited with the
// figures that caused it.
func (d *dnsService) switchPool(ctx context.Context, fence clientv3.Cmp, f *dnsconfig.Failover, p dnsfailover.Policy, r *dnsRecord,
	next dnsfailover.State, dec dnsfailover.Decision, decision *dnsDecision, token int64) error {
	ch := dnsChange{name: f.Name, typ: string(f.Type), kind: dnsKindAutomatic, actor: "controller", source: "controller", reason: dec.Reason,
		values: d.cfg.Pool(dec.To).Values(f.Type), ttl: f.TTL, from: dec.From, to: dec.To,
		fences: []clientv3.Cmp{fence, d.s.approvals.Fence(token)}, token: token, failover: &next,
		confirmed: func(st dnsfailover.State, at time.Time) dnsfailover.State {
			return dnsfailover.Applied(p, st, dec.To, at, dnsfailover.Automatic)
		},
		failed: func(st dnsfailover.State, err error) dnsfailover.State {
			if isConflict(err) {
				// Someone else changed the record: do not retry against
				// records golive does not know.
				return dnsfailover.Block(st, "the automatic switch was refused: "+err.Error())
			}
			return st // decided again at the next check
		}}
	e, fin, err := d.change(ctx, ch)
	if errors.Is(err, errFenced) {
		d.log.Info("dns failover switch not written: the approval ended or leadership was lost", "name", f.Name)
		return nil
	}
	if e == nil {
		return err
	}
	if fin != nil {
		// Keep the decision that caused the switch on the record.
		d.storeDecision(ctx, f, fin, decision)
	}
	if e.Outcome == dnsConfirmed {
		d.metrics.switched(f, fin, dnsfailover.Automatic)
		d.s.notifier.Notify(dnsNotifyEvent(kindDNSSwitched, "controller", e, ""))
		d.log.Warn("dns failover switched", "name", f.Name, "from", dec.From, "to", dec.To, "reason", dec.Reason, "latency", e.Latency)
		return nil
	}
	d.s.notifier.Notify(dnsNotifyEvent(kindDNSSwitchFailure, "controller", e, dec.Command))
	return err
}

// storeDecision records the check that caused a switch on the record
// (best effort: the next check stores its own).
func (d *dnsService) storeDecision(ctx context.Context, f *dnsconfig.Failover, r *dnsRecord, dec *dnsDecision) {
	if r.modRev == 0 {
		return
	}
	upd := *r
	upd.Decision = dec
	d.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(d.key(f.Name, string(f.Type))), "=", r.modRev)}, []clientv3.Op{d.opPut(&upd)})
}

func isConflict(err error) bool { return errors.Is(err, dnsupdate.ErrConflict) }

func orPool(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func describeHealth(h dnsfailover.Health) string {
	if h.Reason == "" {
		return string(h.Verdict)
	}
	return string(h.Verdict) + ": " + h.Reason
}

// poolHosts are the host ids of pool: its list, or the agents whose
// labels match its selector.
func poolHosts(pool *dnsconfig.Pool, agents map[string]*golivev1.Agent) []string {
	if len(pool.Hosts) > 0 {
		return pool.Hosts
	}
	var out []string
	for id, a := range agents {
		match := true
		for k, v := range pool.Selector {
			match = match && a.Labels[k] == v
		}
		if match {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// judgePool is the pool's verdict from its agents' records at now.
func judgePool(pool *dnsconfig.Pool, list []*golivev1.Agent, now time.Time, maxAge time.Duration) dnsfailover.Health {
	agents := make(map[string]*golivev1.Agent, len(list))
	for _, a := range list {
		agents[a.HostId] = a
	}
	hosts := poolHosts(pool, agents)
	if len(hosts) == 0 {
		return dnsfailover.Health{Verdict: dnsfailover.Unknown, Reason: fmt.Sprintf("pool %s: no agent matches its selector", pool.Name)}
	}
	healthy, known := 0, 0
	var bad []string
	for _, h := range hosts {
		ok, why, isKnown := judgeHost(agents[h], now, maxAge)
		if isKnown {
			known++
		}
		if ok {
			healthy++
		} else {
			bad = append(bad, h+": "+why)
		}
	}
	reason := fmt.Sprintf("%d/%d hosts healthy", healthy, len(hosts))
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		reason += " (" + strings.Join(bad, "; ") + ")"
	}
	switch {
	case healthy > 0 && 2*healthy >= len(hosts):
		return dnsfailover.Health{Verdict: dnsfailover.Healthy, Reason: reason}
	case known == 0:
		return dnsfailover.Health{Verdict: dnsfailover.Unknown, Reason: reason}
	}
	return dnsfailover.Health{Verdict: dnsfailover.Unhealthy, Reason: reason}
}

// judgeHost says whether a host serves well: connected, fresh, every
// service's probe passing and its real traffic's error rate low. known is
// false when there is no data to judge by.
func judgeHost(a *golivev1.Agent, now time.Time, maxAge time.Duration) (ok bool, why string, known bool) {
	if a == nil {
		return false, "no agent", false
	}
	if a.State != "connected" {
		return false, "agent " + orDash(a.State), true
	}
	if a.LastHeartbeat == nil || now.Sub(a.LastHeartbeat.AsTime()) > maxAge {
		return false, "no fresh heartbeat", false
	}
	if len(a.Services) == 0 {
		return false, "no service", false
	}
	for _, sv := range a.Services {
		hw := sv.Health
		if hw == nil || hw.Requests == 0 {
			return false, sv.Name + ": no probe data", false
		}
		if hw.LastProbe != nil && now.Sub(hw.LastProbe.AsTime()) > maxAge {
			return false, sv.Name + ": probe data stale", false
		}
		if !hw.Healthy {
			msg := sv.Name + ": probe failing"
			if hw.LastError != "" {
				msg += " (" + hw.LastError + ")"
			}
			return false, msg, true
		}
		if tw := sv.Traffic; tw != nil && tw.Source != "" && tw.Error == "" && (tw.ObservedAt == nil || now.Sub(tw.ObservedAt.AsTime()) <= maxAge) {
			for _, sl := range tw.Slots {
				if sl.Slot != sv.ActiveSlot || sl.Requests < dnsMinRequests {
					continue
				}
				if rate := float64(sl.Errors) / float64(sl.Requests); rate > dnsMaxErrorRate {
					return false, fmt.Sprintf("%s: %s counts %.1f%% errors over %d requests", sv.Name, tw.Source, 100*rate, sl.Requests), true
				}
			}
		}
	}
	return true, "", true
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
