package controller

// Scaling by demand (issue 17): the leader's loop that evaluates every
// scaled service on every host (internal/scaling is the policy) and, only
// under a live approval, writes ScaleAction commands; and the operator's
// ScaleStatus and ScaleSet.
//
// The unit is one service on one host, with the policy of the scale block
// its agent reports: each host's router fronts its own instances.
//
// Every interval (the scale block's, 15s by default):
//
//	agents (hub) --> counts, demand (rps: the load balancer's figures of
//	   the serving slot; cpu: the instances' cores; query: PromQL) --> scaling.Evaluate
//	   None / Hold ----------------> record (scaling/<service>/<host>, written
//	                                 when what it shows changed), metrics
//	   Up / Down, no approval -----> the same: a recommendation, nothing changes
//	   Up / Down, rollout running -> frozen: the same, with the reason
//	   Up / Down, approval live ---> txn If(leader key, approval token, no
//	        rollout holds the service, record unchanged) Then(ScaleAction
//	        command fenced on the token, record, audit entry with the
//	        figures); webhook, metrics
//
// A revoke is seen at the next evaluation (no approval: nothing written)
// and by the txn's compare (a write after the revoke fails); agents also
// refuse a ScaleAction whose token is not the live one. An operator's
// `scale set` writes the same record (token 0, operator=true) from any
// replica; the leader's next write then fails its compare, it reads the
// record again and decides on it.
//
// The record in etcd carries the policy's state (the window's
// recommendations, the last scale-up), so a new leader resumes the
// cooldown and the window, and `scale status` works on every replica; the
// leader's in-memory evaluations, fresher, are shown when the call lands
// on it. A replica's view of an agent held by another replica may be up
// to hub.DefaultFiguresEvery old: such figures are stale and never scale.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/scaling"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Results of scaling actions (golive_controller_scale_actions_total).
const (
	scaleSent     = "sent"     // written under the approval
	scaleFenced   = "fenced"   // not written: approval, leadership or rollout changed
	scaleOperator = "operator" // an operator's scale set
)

// scaleRecordRewrite bounds how long an unchanged record goes unwritten.
const scaleRecordRewrite = 5 * time.Minute

// scaleRecord is stored at scaling/<service>/<host>.
type scaleRecord struct {
	Service    string        `json:"service"`
	Host       string        `json:"host"`
	State      scaling.State `json:"state"`
	Eval       *scaleEval    `json:"eval,omitempty"`
	LastAction *scaleAction  `json:"last_action,omitempty"`
	WrittenAt  time.Time     `json:"written_at"`
	modRev     int64
}

type scaleEval struct {
	At             time.Time `json:"at"`
	Metric         string    `json:"metric,omitempty"`
	Demand         *float64  `json:"demand,omitempty"`
	PerInstance    float64   `json:"per_instance,omitempty"`
	Target         float64   `json:"target,omitempty"`
	Instances      int       `json:"instances"`
	Desired        int       `json:"desired"`
	Recommendation int       `json:"recommendation"`
	Action         string    `json:"action"`
	Reason         string    `json:"reason"`
	Frozen         string    `json:"frozen,omitempty"`
}

// shown is what a stored evaluation says, without its time and figures.
func (e *scaleEval) shown() string {
	if e == nil {
		return ""
	}
	return fmt.Sprintf("%s|%d|%d|%d|%s|%v", e.Action, e.Recommendation, e.Instances, e.Desired, e.Frozen, e.Demand == nil)
}

type scaleAction struct {
	At        time.Time `json:"at"`
	From      int       `json:"from"`
	To        int       `json:"to"`
	Actor     string    `json:"actor"`
	Operator  bool      `json:"operator,omitempty"`
	Reason    string    `json:"reason"`
	CommandID string    `json:"command_id"`
	Token     int64     `json:"token,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// scaleMetrics are the scaling series.
type scaleMetrics struct {
	instances      *prometheus.GaugeVec
	recommendation *prometheus.GaugeVec
	actions        *prometheus.CounterVec
}

func newScaleMetrics(reg prometheus.Registerer) (*scaleMetrics, error) {
	m := &scaleMetrics{
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "golive_controller_instances",
			Help: "Serving instances of a scaled service on a host, as its agent reports (on the leader)."}, []string{"service", "host"}),
		recommendation: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "golive_controller_scale_recommendation",
			Help: "Instances the scaling policy recommends for a service on a host (on the leader; applied only under an approval)."}, []string{"service", "host"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "golive_controller_scale_actions_total",
			Help: "Scaling actions, by service and result (sent, fenced, operator)."}, []string{"service", "result"}),
	}
	for _, c := range []prometheus.Collector{m.instances, m.recommendation, m.actions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register scaling metrics: %w", err)
		}
	}
	return m, nil
}

// scaler is the leader's scaling loop and the state ScaleStatus shows.
type scaler struct {
	s       *Server
	log     hclog.Logger
	prom    analysis.Querier // nil: query policies have no metric
	metrics *scaleMetrics

	mu   sync.Mutex
	recs map[string]*scaleRecord // by key, the leader's latest
	due  map[string]time.Time    // next evaluation, by key
}

func newScaler(s *Server, reg prometheus.Registerer, prom analysis.Querier) (*scaler, error) {
	m, err := newScaleMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &scaler{s: s, log: s.log.Named("scaling"), prom: prom, metrics: m}, nil
}

func (sc *scaler) prefix() string { return sc.s.keys.Prefix + "scaling/" }
func (sc *scaler) key(service, host string) string {
	return sc.prefix() + service + "/" + host
}

func (sc *scaler) opPut(r *scaleRecord) clientv3.Op {
	b, _ := json.Marshal(r)
	return clientv3.OpPut(sc.key(r.Service, r.Host), string(b))
}

// load reads the stored records (a new leader resumes from them).
func (sc *scaler) load(ctx context.Context, service string) (map[string]*scaleRecord, error) {
	p := sc.prefix()
	if service != "" {
		p += service + "/"
	}
	resp, err := sc.s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: read scaling records: %v", apierr.ErrUnavailable, err)
	}
	out := make(map[string]*scaleRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r := &scaleRecord{}
		if err := json.Unmarshal(kv.Value, r); err != nil {
			sc.log.Error("unreadable scaling record", "key", string(kv.Key), "error", err)
			continue
		}
		r.modRev = kv.ModRevision
		out[string(kv.Key)] = r
	}
	return out, nil
}

func (sc *scaler) loadOne(ctx context.Context, service, host string) (*scaleRecord, error) {
	resp, err := sc.s.cli.Get(ctx, sc.key(service, host))
	if err != nil {
		return nil, fmt.Errorf("%w: read the scaling record: %v", apierr.ErrUnavailable, err)
	}
	r := &scaleRecord{Service: service, Host: host}
	if len(resp.Kvs) == 1 {
		if err := json.Unmarshal(resp.Kvs[0].Value, r); err != nil {
			return nil, fmt.Errorf("scaling record of %s on %s is corrupt: %w", service, host, err)
		}
		r.modRev = resp.Kvs[0].ModRevision
	}
	return r, nil
}

// start runs the loop under the leader's election key until ctx ends; the
// returned channel closes when it stopped.
func (sc *scaler) start(ctx context.Context, leaderKey string, leaderRev int64) <-chan struct{} {
	done := make(chan struct{})
	if sc == nil {
		close(done)
		return done
	}
	fence := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", leaderRev)
	go func() {
		defer close(done)
		sc.run(ctx, fence)
		sc.mu.Lock()
		sc.recs, sc.due = nil, nil
		sc.mu.Unlock()
		sc.metrics.instances.Reset()
		sc.metrics.recommendation.Reset()
	}()
	return done
}

func (sc *scaler) run(ctx context.Context, fence clientv3.Cmp) {
	// As the DNS failover: let the fleet reconnect before judging it.
	sleepCtx(ctx, 3*sc.s.cfg.HeartbeatInterval)
	recs, err := sc.load(ctx, "")
	for err != nil && ctx.Err() == nil {
		sleepCtx(ctx, time.Second)
		recs, err = sc.load(ctx, "")
	}
	sc.mu.Lock()
	sc.recs, sc.due = recs, map[string]time.Time{}
	sc.mu.Unlock()
	for ctx.Err() == nil {
		next, err := sc.pass(ctx, fence)
		if err != nil && ctx.Err() == nil {
			sc.log.Warn("scaling evaluation", "error", err)
		}
		sleepCtx(ctx, max(time.Until(next), 50*time.Millisecond))
	}
}

// pass evaluates every (service, host) that is due; it returns when the
// next is due (at most DefaultInterval: new agents are found then).
func (sc *scaler) pass(ctx context.Context, fence clientv3.Cmp) (time.Time, error) {
	now := time.Now()
	next := now.Add(scaling.DefaultInterval)
	agents, err := sc.s.hub.Agents(ctx)
	if err != nil {
		return now.Add(time.Second), err
	}
	ap, _, err := sc.s.approvals.Current(ctx)
	if err != nil {
		return now.Add(time.Second), err
	}
	frozen := map[string]string{}
	var errs []error
	for _, a := range agents {
		for _, sv := range a.Services {
			if sv.Scale == nil {
				continue
			}
			k := sc.key(sv.Name, a.HostId)
			sc.mu.Lock()
			due := sc.due[k]
			sc.mu.Unlock()
			if now.Before(due) {
				next = minTime(next, due)
				continue
			}
			p, perr := scaling.FromProto(sv.Scale)
			interval := p.Interval
			if perr != nil {
				interval = scaling.DefaultInterval
			}
			sc.mu.Lock()
			sc.due[k] = now.Add(interval)
			sc.mu.Unlock()
			next = minTime(next, now.Add(interval))
			if _, ok := frozen[sv.Name]; !ok {
				id, err := sc.s.store.RunningRollout(ctx, sv.Name)
				if err != nil {
					return now.Add(time.Second), err
				}
				frozen[sv.Name] = ""
				if id != "" {
					frozen[sv.Name] = "frozen: rollout " + id + " is running for " + sv.Name
				}
			}
			if err := sc.evaluate(ctx, fence, a, sv, p, perr, ap.Active(now), ap.Token, frozen[sv.Name], now); err != nil {
				errs = append(errs, fmt.Errorf("%s on %s: %w", sv.Name, a.HostId, err))
			}
		}
	}
	return next, errors.Join(errs...)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// evaluate decides once for sv on a's host and acts on the decision.
func (sc *scaler) evaluate(ctx context.Context, fence clientv3.Cmp, a *golivev1.Agent, sv *golivev1.ServiceState, p scaling.Policy, perr error,
	live bool, token int64, frozen string, now time.Time) error {
	k := sc.key(sv.Name, a.HostId)
	sc.mu.Lock()
	rec := sc.recs[k]
	sc.mu.Unlock()
	if rec == nil {
		rec = &scaleRecord{Service: sv.Name, Host: a.HostId}
	}
	counts := scaling.CountsOf(sv)
	sc.metrics.instances.WithLabelValues(sv.Name, a.HostId).Set(float64(counts.Serving))
	ev := &scaleEval{At: now, Metric: string(p.Metric), Target: p.Target, Instances: counts.Serving, Desired: counts.Current,
		Recommendation: counts.Current, Action: string(scaling.Hold), Frozen: frozen}
	upd := *rec
	upd.Eval = ev
	var dec scaling.Decision
	switch {
	case perr != nil:
		ev.Reason = "the scale block is not usable: " + perr.Error()
	case a.State != "connected":
		ev.Reason = "skipped: the agent is " + orDash(a.State)
	default:
		if la := rec.LastAction; la != nil && (la.Outcome == "" || la.Outcome == "pending") {
			settled := *la
			sc.settle(ctx, a.HostId, &settled)
			upd.LastAction = &settled
		}
		in := scaling.Input{Now: now, Current: counts.Current, Serving: counts.Serving, Converging: counts.Converging,
			Demand: sc.demand(ctx, p, a, sv, now)}
		switch {
		case upd.LastAction != nil && upd.LastAction.Outcome == "pending":
			in.Converging = "waiting for the agent's result of " + upd.LastAction.CommandID
		case sv.CommandId != "" || sv.State == "deploying":
			in.Converging = "a command is in flight on the service (" + orDash(sv.CommandId) + ")"
		}
		upd.State, dec = scaling.Evaluate(p, rec.State, in)
		if in.Demand.Missing == "" {
			d, per := dec.Total, dec.PerInstance
			ev.Demand, ev.PerInstance = &d, per
		}
		ev.Recommendation, ev.Action, ev.Reason = dec.To, string(dec.Action), dec.Reason
		if dec.Action == scaling.Hold || dec.Action == scaling.None {
			ev.Recommendation = dec.Recommended
		}
	}
	sc.metrics.recommendation.WithLabelValues(sv.Name, a.HostId).Set(float64(ev.Recommendation))
	acting := dec.Action == scaling.Up || dec.Action == scaling.Down
	switch {
	case acting && frozen != "":
		ev.Action, ev.Reason = string(scaling.Hold), frozen+"; "+dec.Reason
	case acting && !live:
		ev.Reason = dec.Reason + "; not applied: no live approval (run `golive-controller authorize \"start automation now\"`, or " +
			scaleSetCommand(sv.Name, a.HostId, dec.To) + ")"
	case acting:
		return sc.act(ctx, fence, rec, &upd, a, sv, p, dec, token, now)
	}
	return sc.store(ctx, fence, rec, &upd, now)
}

// store writes the record when what it shows changed (or it is old).
func (sc *scaler) store(ctx context.Context, fence clientv3.Cmp, rec, upd *scaleRecord, now time.Time) error {
	k := sc.key(upd.Service, upd.Host)
	sameState, _ := json.Marshal(rec.State)
	newState, _ := json.Marshal(upd.State)
	if rec.modRev != 0 && rec.Eval.shown() == upd.Eval.shown() && string(sameState) == string(newState) &&
		now.Sub(rec.WrittenAt) < scaleRecordRewrite && sameAction(rec.LastAction, upd.LastAction) {
		sc.mu.Lock()
		if sc.recs != nil {
			upd.modRev, upd.WrittenAt = rec.modRev, rec.WrittenAt
			sc.recs[k] = upd
		}
		sc.mu.Unlock()
		return nil
	}
	upd.WrittenAt = now
	ok, tr, err := sc.s.store.Commit(ctx, []clientv3.Cmp{fence, clientv3.Compare(clientv3.ModRevision(k), "=", rec.modRev)}, []clientv3.Op{sc.opPut(upd)})
	if err != nil {
		return err
	}
	if !ok {
		return sc.reload(ctx, upd.Service, upd.Host)
	}
	upd.modRev = tr.Header.Revision
	sc.mu.Lock()
	if sc.recs != nil {
		sc.recs[k] = upd
	}
	sc.mu.Unlock()
	return nil
}

func sameAction(a, b *scaleAction) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// reload reads a record another writer changed (an operator's scale set).
func (sc *scaler) reload(ctx context.Context, service, host string) error {
	r, err := sc.loadOne(ctx, service, host)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	if sc.recs != nil {
		sc.recs[sc.key(service, host)] = r
	}
	sc.mu.Unlock()
	return nil
}

// act writes the ScaleAction fenced on the leader, the approval's token,
// the service having no rollout and the record, with its audit entry.
func (sc *scaler) act(ctx context.Context, fence clientv3.Cmp, rec, upd *scaleRecord, a *golivev1.Agent, sv *golivev1.ServiceState,
	p scaling.Policy, dec scaling.Decision, token int64, now time.Time) error {
	id := fmt.Sprintf("scale-%s-%d", sv.Name, now.UnixNano())
	cmd := &golivev1.Command{Id: id, FencingToken: token, IssuedAt: timestamppb.New(now),
		Action: &golivev1.Command_Scale{Scale: &golivev1.ScaleAction{Service: sv.Name, Instances: uint32(dec.To), Reason: dec.Reason}}}
	upd.State = scaling.Acted(upd.State, dec, now)
	upd.LastAction = &scaleAction{At: now, From: dec.From, To: dec.To, Actor: "controller", Reason: dec.Reason, CommandID: id, Token: token, Outcome: "pending"}
	upd.WrittenAt = now
	k := sc.key(sv.Name, a.HostId)
	entry := audit.Entry{Actor: "controller", Action: "scale", Outcome: "sent", Reason: dec.Reason, Source: sc.s.cfg.ReplicaID,
		Detail: fmt.Sprintf("service=%s host=%s from=%d to=%d metric=%s demand=%g per_instance=%g target=%g command=%s token=%d",
			sv.Name, a.HostId, dec.From, dec.To, p.Metric, dec.Total, dec.PerInstance, p.Target, id, token)}
	cmps := []clientv3.Cmp{fence, sc.s.approvals.Fence(token), sc.s.store.CmpServiceFree(sv.Name), clientv3.Compare(clientv3.ModRevision(k), "=", rec.modRev)}
	_, tr, err := sc.s.audit.Append(ctx, entry, cmps, []clientv3.Op{sc.s.store.OpPutCommand(a.HostId, cmd), sc.opPut(upd)})
	if errors.Is(err, audit.ErrPrecondition) {
		sc.metrics.actions.WithLabelValues(sv.Name, scaleFenced).Inc()
		sc.log.Info("scale action not written: the approval ended, leadership was lost, a rollout started or an operator set the count",
			"service", sv.Name, "host_id", a.HostId, "to", dec.To)
		return sc.reload(ctx, sv.Name, a.HostId)
	}
	if err != nil {
		return err
	}
	upd.modRev = tr.Header.Revision
	sc.mu.Lock()
	if sc.recs != nil {
		sc.recs[k] = upd
	}
	sc.mu.Unlock()
	sc.metrics.actions.WithLabelValues(sv.Name, scaleSent).Inc()
	sc.log.Info("scaling", "service", sv.Name, "host_id", a.HostId, "from", dec.From, "to", dec.To, "reason", dec.Reason, "command_id", id)
	sc.s.notifier.Notify(notify.Event{Kind: notify.KindScaled, Actor: "controller", Reason: dec.Reason, FencingToken: token,
		Details: map[string]string{"service": sv.Name, "host": a.HostId, "from": fmt.Sprint(dec.From), "to": fmt.Sprint(dec.To),
			"command_id": id, "metric": string(p.Metric)}})
	return nil
}

// settle fills a's outcome from the agent's stored result, if any.
func (sc *scaler) settle(ctx context.Context, host string, a *scaleAction) {
	res, err := sc.s.store.Result(ctx, host, a.CommandID)
	switch {
	case err != nil:
		return
	case res == nil:
		a.Outcome = "pending"
		if cr, err := sc.s.cli.Get(ctx, sc.s.store.CommandKey(host, a.CommandID), clientv3.WithCountOnly()); err == nil && cr.Count == 0 {
			a.Outcome = "gone" // neither command nor result: forgotten
		}
	default:
		a.Outcome = outcomeWord(res.Outcome)
		a.Error = res.Error
	}
}

func outcomeWord(o golivev1.CommandOutcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "COMMAND_OUTCOME_"))
}

// demand measures sv's demand on a's host by p's metric.
func (sc *scaler) demand(ctx context.Context, p scaling.Policy, a *golivev1.Agent, sv *golivev1.ServiceState, now time.Time) scaling.Demand {
	maxAge := 3*sc.s.cfg.HeartbeatInterval + p.Interval
	switch p.Metric {
	case scaling.RPS:
		return scaling.RPSDemand(sv, now, maxAge)
	case scaling.CPU:
		var hb time.Time
		if a.LastHeartbeat != nil {
			hb = a.LastHeartbeat.AsTime()
		}
		return scaling.CPUDemand(sv, hb, now, maxAge)
	case scaling.Query:
		return sc.queryDemand(ctx, p, a, sv, now)
	}
	return scaling.Demand{Missing: "no metric"}
}

// queryDemand runs the policy's PromQL for the host: its placeholders
// ({{service}}, {{hosts}}, {{hosts_regex}}, {{slot}}) name this host; it
// must answer one number.
func (sc *scaler) queryDemand(ctx context.Context, p scaling.Policy, a *golivev1.Agent, sv *golivev1.ServiceState, now time.Time) scaling.Demand {
	if sc.prom == nil {
		return scaling.Demand{Missing: "the query needs the controller's --prometheus-url"}
	}
	q, err := analysis.Render(p.Query, analysis.Values{Hosts: []string{a.HostId}, Service: sv.Name, Release: sv.CurrentRelease, Slot: sv.ActiveSlot})
	if err != nil {
		return scaling.Demand{Missing: "the query is not usable: " + err.Error()}
	}
	qctx, cancel := context.WithTimeout(ctx, max(p.Interval/2, time.Second))
	defer cancel()
	res, err := sc.prom.Query(qctx, q, now)
	if err != nil {
		return scaling.Demand{Missing: "the query failed: " + err.Error()}
	}
	if len(res.Samples) != 1 {
		return scaling.Demand{Missing: fmt.Sprintf("the query answered %d series, want 1", len(res.Samples))}
	}
	v := res.Samples[0].Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return scaling.Demand{Missing: fmt.Sprintf("the query answered %v", v)}
	}
	return scaling.Demand{Total: v}
}

func scaleSetCommand(service, host string, n int) string {
	return fmt.Sprintf("golive-controller scale set --service %s --instances %d --hosts %s", service, n, host)
}

// ScaleStatus shows every scaled service on every host.
func (c *control) ScaleStatus(ctx context.Context, req *golivev1.ScaleStatusRequest) (*golivev1.ScaleStatusResponse, error) {
	if req.Service != "" {
		if err := validName("service", req.Service); err != nil {
			return nil, apierr.ToStatus(err)
		}
	}
	entries, err := c.s.scale.entries(ctx, req.Service)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	ap, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.ScaleStatusResponse{Entries: entries, ApprovalLive: ap.Active(time.Now())}, nil
}

// entries are the API view of service's ("": every) scaled instances on
// every host, by service then host: the agents' figures, the stored
// records, and the leader's fresher evaluations when this replica leads.
func (sc *scaler) entries(ctx context.Context, service string) ([]*golivev1.ScaleEntry, error) {
	agents, err := sc.s.hub.Agents(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
	}
	recs, err := sc.load(ctx, service)
	if err != nil {
		return nil, err
	}
	sc.mu.Lock()
	for k, r := range sc.recs {
		if service != "" && r.Service != service {
			continue
		}
		if old := recs[k]; old == nil || r.Eval != nil && (old.Eval == nil || !r.Eval.At.Before(old.Eval.At)) {
			cp := *r
			if old != nil && old.LastAction != nil && (r.LastAction == nil || old.LastAction.At.After(r.LastAction.At)) {
				cp.LastAction = old.LastAction // an operator's, written by another replica
			}
			recs[k] = &cp
		}
	}
	sc.mu.Unlock()
	var out []*golivev1.ScaleEntry
	running := map[string]string{}
	for _, a := range agents {
		for _, sv := range a.Services {
			if sv.Scale == nil || (service != "" && sv.Name != service) {
				continue
			}
			if _, ok := running[sv.Name]; !ok {
				id, err := sc.s.store.RunningRollout(ctx, sv.Name)
				if err != nil {
					return nil, err
				}
				running[sv.Name] = id
			}
			out = append(out, sc.entry(ctx, a, sv, recs[sc.key(sv.Name, a.HostId)], running[sv.Name]))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		return x.Service < y.Service || x.Service == y.Service && x.Host < y.Host
	})
	return out, nil
}

// entry is the API view of sv on a's host: the agent's figures, the
// record's evaluation and last action.
func (sc *scaler) entry(ctx context.Context, a *golivev1.Agent, sv *golivev1.ServiceState, r *scaleRecord, rollout string) *golivev1.ScaleEntry {
	counts := scaling.CountsOf(sv)
	e := &golivev1.ScaleEntry{Service: sv.Name, Host: a.HostId, AgentState: a.State, Min: sv.Scale.Min, Max: sv.Scale.Max,
		Instances: uint32(counts.Serving), DesiredInstances: uint32(counts.Current), Recommendation: uint32(counts.Current), Action: string(scaling.Hold)}
	if p, err := scaling.FromProto(sv.Scale); err == nil {
		e.Metric, e.Target = string(p.Metric), p.Target
	}
	if rollout != "" {
		e.Frozen, e.FrozenReason = true, "frozen: rollout "+rollout+" is running for "+sv.Name
	}
	if r == nil || r.Eval == nil {
		e.Reason = "not evaluated yet (the leader evaluates every interval)"
	} else {
		ev := r.Eval
		e.Demand, e.PerInstance = ev.Demand, ev.PerInstance
		e.Recommendation, e.Action, e.Reason, e.EvaluatedAt = uint32(ev.Recommendation), ev.Action, ev.Reason, timestamppb.New(ev.At)
		if ev.Frozen != "" && !e.Frozen {
			e.Frozen, e.FrozenReason = true, ev.Frozen
		}
	}
	if e.Recommendation != e.DesiredInstances {
		e.Command = scaleSetCommand(sv.Name, a.HostId, int(e.Recommendation))
	}
	if r != nil && r.LastAction != nil {
		la := *r.LastAction
		if la.Outcome == "" || la.Outcome == "pending" {
			sc.settle(ctx, a.HostId, &la)
		}
		e.LastAction = actionProto(&la)
	}
	return e
}

func actionProto(a *scaleAction) *golivev1.ScaleActionRecord {
	return &golivev1.ScaleActionRecord{At: timestamppb.New(a.At), From: uint32(a.From), To: uint32(a.To), Actor: a.Actor, Operator: a.Operator,
		Reason: a.Reason, CommandId: a.CommandID, FencingToken: a.Token, Outcome: a.Outcome, Error: a.Error}
}

// ScaleSet is the operator's manual path: allowed without an approval
// (token 0, operator), within each host's [min, max], refused while a
// rollout runs for the service; audited per host.
func (c *control) ScaleSet(ctx context.Context, req *golivev1.ScaleSetRequest) (*golivev1.ScaleSetResponse, error) {
	actor, src := actorAndSource(ctx)
	if err := validName("service", req.Service); err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.Instances == 0 {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --instances must be at least 1", apierr.ErrInvalid))
	}
	agents, err := c.s.hub.Agents(ctx)
	if err != nil {
		return nil, apierr.ToStatus(fmt.Errorf("%w: %v", apierr.ErrUnavailable, err))
	}
	byHost := map[string]*golivev1.Agent{}
	for _, a := range agents {
		byHost[a.HostId] = a
	}
	hosts := req.Hosts
	if len(hosts) == 0 {
		for _, a := range agents {
			if sv := scaledService(a, req.Service); sv != nil {
				hosts = append(hosts, a.HostId)
			}
		}
		if len(hosts) == 0 {
			return nil, apierr.ToStatus(fmt.Errorf("%w: no host runs service %q with a scale block", apierr.ErrNotFound, req.Service))
		}
	}
	svcs := make([]*golivev1.ServiceState, len(hosts))
	for i, h := range hosts {
		a := byHost[h]
		if a == nil {
			return nil, apierr.ToStatus(fmt.Errorf("%w: host %q is not known to the controller (see `golive-controller agents`)", apierr.ErrNotFound, h))
		}
		sv := scaledService(a, req.Service)
		if sv == nil {
			return nil, apierr.ToStatus(fmt.Errorf("%w: service %q on host %q has no scale block in its agent's config", apierr.ErrInvalid, req.Service, h))
		}
		if req.Instances < sv.Scale.Min || req.Instances > sv.Scale.Max {
			return nil, apierr.ToStatus(fmt.Errorf("%w: %d instances is outside [%d, %d], the scale block of %s on %s", apierr.ErrInvalid,
				req.Instances, sv.Scale.Min, sv.Scale.Max, req.Service, h))
		}
		if a.State != "connected" {
			return nil, apierr.ToStatus(fmt.Errorf("%w: host %q's agent is %s: it cannot apply the count now", apierr.ErrConflict, h, orDash(a.State)))
		}
		svcs[i] = sv
	}
	if id, err := c.s.store.RunningRollout(ctx, req.Service); err != nil {
		return nil, apierr.ToStatus(err)
	} else if id != "" {
		return nil, apierr.ToStatus(fmt.Errorf("%w: rollout %s is running for %s; wait for it or abort it (`golive-controller abort %s`) before scaling",
			apierr.ErrConflict, id, req.Service, id))
	}
	sc := c.s.scale
	resp := &golivev1.ScaleSetResponse{}
	reason := "operator " + actor
	if req.Reason != "" {
		reason += ": " + req.Reason
	}
	for i, h := range hosts {
		now := time.Now()
		rec, err := sc.loadOne(ctx, req.Service, h)
		if err != nil {
			return nil, apierr.ToStatus(err)
		}
		from := scaling.CountsOf(svcs[i]).Current
		id := fmt.Sprintf("scale-%s-%d", req.Service, now.UnixNano())
		cmd := &golivev1.Command{Id: id, IssuedAt: timestamppb.New(now),
			Action: &golivev1.Command_Scale{Scale: &golivev1.ScaleAction{Service: req.Service, Instances: req.Instances, Operator: true, Reason: reason}}}
		upd := *rec
		if p, err := scaling.FromProto(svcs[i].Scale); err == nil {
			upd.State = scaling.SetByOperator(p, rec.State, from, int(req.Instances), now)
		}
		upd.LastAction = &scaleAction{At: now, From: from, To: int(req.Instances), Actor: actor, Operator: true, Reason: reason, CommandID: id, Outcome: "pending"}
		upd.WrittenAt = now
		entry := audit.Entry{Actor: actor, Action: "scale", Outcome: "operator", Reason: req.Reason, Source: src,
			Detail: fmt.Sprintf("service=%s host=%s from=%d to=%d command=%s token=0", req.Service, h, from, req.Instances, id)}
		cmps := []clientv3.Cmp{c.s.store.CmpServiceFree(req.Service), clientv3.Compare(clientv3.ModRevision(sc.key(req.Service, h)), "=", rec.modRev)}
		if _, _, err := c.s.audit.Append(ctx, entry, cmps, []clientv3.Op{c.s.store.OpPutCommand(h, cmd), sc.opPut(&upd)}); err != nil {
			if errors.Is(err, audit.ErrPrecondition) {
				err = fmt.Errorf("%w: a rollout started for %s or the leader scaled %s at the same moment; look at `golive-controller scale status` and try again",
					apierr.ErrConflict, req.Service, h)
			}
			return nil, apierr.ToStatus(err)
		}
		sc.metrics.actions.WithLabelValues(req.Service, scaleOperator).Inc()
		c.s.log.Info("scale set by operator", "actor", actor, "service", req.Service, "host_id", h, "from", from, "to", req.Instances, "command_id", id)
		c.s.notifier.Notify(notify.Event{Kind: notify.KindScaled, Actor: actor, Reason: reason,
			Details: map[string]string{"service": req.Service, "host": h, "from": fmt.Sprint(from), "to": fmt.Sprint(req.Instances), "command_id": id, "operator": "true"}})
		resp.Actions = append(resp.Actions, actionProto(upd.LastAction))
		resp.Hosts = append(resp.Hosts, h)
	}
	return resp, nil
}

func scaledService(a *golivev1.Agent, service string) *golivev1.ServiceState {
	for _, sv := range a.Services {
		if sv.Name == service && sv.Scale != nil {
			return sv
		}
	}
	return nil
}
