package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// The executor runs on the leader only, under its election session. It
// reconciles every running rollout: observe (approval, results, agents'
// health, operator requests) -> rollout.Next -> one etcd transaction that
// stores the new state and writes the commands. Every such transaction is
// fenced twice: on the leader's election key (a deposed leader writes
// nothing) and, when it commands hosts, on the approval's token.
//
//	etcd watch / 250ms tick --> reconcileAll --> for each rollout:
//	    observe --> rollout.Next --> txn(If leader && record unchanged [&& approval])
//	                                    Then(record, commands, consumed requests)
//	    after commit: webhooks, metrics

// lostGrace is how long a host may be without a stream before a gate
// counts it as lost: the 30 s in which a vanished agent is shown lost.
const lostGrace = 30 * time.Second

// planHosts converts known agents for the planner.
func planHosts(agents []*golivev1.Agent) []rollout.Host {
	var out []rollout.Host
	for _, a := range agents {
		h := rollout.Host{ID: a.HostId, Labels: a.Labels, Lost: a.State != "connected", Releases: map[string]string{}}
		for _, s := range a.Services {
			h.Services = append(h.Services, s.Name)
			h.Releases[s.Name] = s.CurrentRelease
		}
		out = append(out, h)
	}
	return out
}

// specFrom turns a DeployRequest into a plan spec.
func specFrom(req *golivev1.DeployRequest) (rollout.Spec, error) {
	spec := rollout.Spec{Service: req.Service, Release: req.Release, Selector: req.Selector, Hosts: req.Hosts,
		Canary: int(req.Canary), Batch: req.Batch, Gate: rollout.DefaultGate(), PauseAfterCanary: req.PauseAfterCanary,
		ProgressDeadline: rollout.DefaultProgressDeadline}
	if req.MinHealthy != nil {
		spec.Gate.MinHealthy = req.MinHealthy.AsDuration()
	}
	if req.MaxErrorRate > 0 {
		spec.Gate.MaxErrorRate = req.MaxErrorRate
	}
	if req.MaxAvgLatency != nil {
		spec.Gate.MaxAvgLatency = req.MaxAvgLatency.AsDuration()
	}
	if req.ProgressDeadline != nil {
		spec.ProgressDeadline = req.ProgressDeadline.AsDuration()
	}
	return spec, nil
}

// plan computes the schedule of a deploy against the agents known now.
func (s *Server) plan(ctx context.Context, req *golivev1.DeployRequest) (rollout.Schedule, error) {
	if err := validName("service", req.Service); err != nil {
		return rollout.Schedule{}, err
	}
	if err := validName("release", req.Release); err != nil {
		return rollout.Schedule{}, err
	}
	agents, err := s.hub.agents(ctx)
	if err != nil {
		return rollout.Schedule{}, err
	}
	spec, err := specFrom(req)
	if err != nil {
		return rollout.Schedule{}, err
	}
	if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
		return rollout.Schedule{}, fmt.Errorf("%w: --skip-check: %v", errInvalid, err)
	}
	sched, err := rollout.Plan(planHosts(agents), spec)
	if err != nil {
		return rollout.Schedule{}, fmt.Errorf("%w: %v", errInvalid, err)
	}
	return sched, nil
}

func planProto(sched rollout.Schedule) *golivev1.Rollout {
	r := &golivev1.Rollout{Service: sched.Service, Release: sched.Release, State: "plan", Kind: "deploy"}
	for _, w := range sched.Waves {
		r.Waves = append(r.Waves, &golivev1.Wave{Index: uint32(w.Index), Name: w.Name, Hosts: w.Hosts, State: "planned"})
	}
	return r
}

// startRollout writes a planned rollout for the leader to execute: one
// transaction, fenced on the approval, taking the service's one-rollout lock.
func (s *Server) startRollout(ctx context.Context, actor, source string, token int64, req *golivev1.DeployRequest, sched rollout.Schedule) (*golivev1.Rollout, error) {
	now := time.Now()
	id := now.UTC().Format("20060102T150405") + "-" + newID()[:6]
	st := rollout.New(id, sched, token, now)
	rec, err := s.rolloutRecord(st, req, actor, nil, nil)
	if err != nil {
		return nil, err
	}
	lock := s.keys.ServiceLock(req.Service)
	cmps := []clientv3.Cmp{s.approvals.Fence(token), clientv3.Compare(clientv3.CreateRevision(lock), "=", 0)}
	entry := audit.Entry{Actor: actor, Action: "deploy", Outcome: "started", Source: source,
		Detail: fmt.Sprintf("rollout=%s service=%s release=%s hosts=%d waves=%d token=%d", id, req.Service, req.Release, len(sched.Hosts), len(sched.Waves), token)}
	if len(req.SkipChecks) > 0 {
		// Skipping a pre-live check is the operator's call: on the record.
		entry.Detail += " skip_checks=" + strings.Join(req.SkipChecks, ",")
	}
	_, _, err = s.audit.Append(ctx, entry, cmps, []clientv3.Op{clientv3.OpPut(lock, id), clientv3.OpPut(s.keys.Rollout(id), rec)})
	if err == audit.ErrPrecondition {
		if a, _, aerr := s.approvals.Current(ctx); aerr == nil && !a.Active(time.Now()) {
			return nil, errNoApproval
		}
		running, _ := s.cli.Get(ctx, lock)
		if len(running.Kvs) == 1 {
			return nil, fmt.Errorf("%w: rollout %s is already running for service %s: follow it with `golive-controller watch %s`, or stop it with `golive-controller abort %s`",
				errConflict, running.Kvs[0].Value, req.Service, running.Kvs[0].Value, running.Kvs[0].Value)
		}
		return nil, fmt.Errorf("%w: the approval or the service's rollout changed meanwhile; try again", errConflict)
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("rollout planned", "rollout_id", id, "service", req.Service, "release", req.Release, "waves", len(sched.Waves), "hosts", len(sched.Hosts))
	s.rolloutKick()
	out, _ := s.decodeRecord([]byte(rec))
	return out, nil
}

// rolloutRecord renders the stored record of a state, with its preflight
// table (nil until the preflight ran) and the checks the request skipped.
func (s *Server) rolloutRecord(st rollout.State, req *golivev1.DeployRequest, createdBy string, gate *golivev1.GateStatus, pf []*golivev1.HostChecks) (string, error) {
	sj, err := st.Encode()
	if err != nil {
		return "", err
	}
	r := st.Proto()
	r.Request, r.CreatedBy, r.StateJson, r.Gate = req, createdBy, string(sj), gate
	r.Preflight, r.SkippedChecks = pf, req.GetSkipChecks()
	if st.Phase.Terminal() {
		r.FinishedAt = timestamppb.New(st.UpdatedAt)
	}
	b, err := marshal.Marshal(r)
	return string(b), err
}

func (s *Server) decodeRecord(v []byte) (*golivev1.Rollout, error) {
	r := &golivev1.Rollout{}
	if err := protojson.Unmarshal(v, r); err != nil {
		return nil, err
	}
	return r, nil
}

// rolloutKick wakes the executor (no-op when this replica does not lead).
func (s *Server) rolloutKick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// runExecutor drives rollouts while this replica leads.
func (s *Server) runExecutor(ctx context.Context, e *concurrency.Election) {
	fence := clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())
	log := s.log.Named("executor")
	log.Info("rollout executor running")
	// Any change under results/, rollouts/, rollout_requests/ or the
	// approval wakes the loop; a tick covers bake windows and deadlines.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, prefix := range []string{s.keys.Results(), s.keys.Rollouts(), s.keys.Prefix + "rollout_requests/", s.keys.Approval(), s.keys.Agents()} {
		wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix())
		go func() {
			for range wch {
				s.rolloutKick()
			}
		}()
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.reconcileAll(ctx, fence)
	}
}

func (s *Server) reconcileAll(ctx context.Context, fence clientv3.Cmp) {
	resp, err := s.cli.Get(ctx, s.keys.Rollouts(), clientv3.WithPrefix())
	if err != nil {
		s.metrics.etcdErrors.WithLabelValues("executor").Inc()
		return
	}
	var agents map[string]*golivev1.Agent
	var ap approval.Approval
	loaded := false
	perState := map[string]int{}
	defer func() {
		s.metrics.hostsPerStage.Reset()
		for st, n := range perState {
			s.metrics.hostsPerStage.WithLabelValues(st).Set(float64(n))
		}
	}()
	for _, kv := range resp.Kvs {
		rec, err := s.decodeRecord(kv.Value)
		if err != nil || rec.StateJson == "" || terminal(rec.State) {
			continue
		}
		for _, h := range rec.Hosts {
			perState[h.State]++
		}
		if !loaded {
			list, err := s.hub.agents(ctx)
			if err != nil {
				return
			}
			agents = map[string]*golivev1.Agent{}
			for _, a := range list {
				agents[a.HostId] = a
			}
			if ap, _, err = s.approvals.Current(ctx); err != nil {
				return
			}
			loaded = true
		}
		if err := s.reconcile(ctx, fence, kv.ModRevision, rec, agents, ap); err != nil {
			s.log.Warn("reconcile rollout", "rollout_id", rec.Id, "error", err)
		}
	}
}

func resultOf(o golivev1.CommandOutcome) rollout.Result {
	switch o {
	case golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED:
		return rollout.ResultSucceeded
	case golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK:
		return rollout.ResultRolledBack
	case golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED, golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED:
		return rollout.ResultCancelled
	}
	return rollout.ResultFailed
}

func (s *Server) commandResult(ctx context.Context, host, id string) (*golivev1.CommandResult, error) {
	if id == "" {
		return nil, nil
	}
	resp, err := s.cli.Get(ctx, s.keys.Result(host, id))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	r := &golivev1.CommandResult{}
	return r, protojson.Unmarshal(resp.Kvs[0].Value, r)
}

func (s *Server) reconcile(ctx context.Context, fence clientv3.Cmp, modRev int64, rec *golivev1.Rollout, agents map[string]*golivev1.Agent, ap approval.Approval) error {
	st, err := rollout.Decode([]byte(rec.StateJson))
	if err != nil {
		return err
	}
	now := time.Now()
	// The pre-live checks run off this loop (see rolloutPreflight); their
	// table goes into the record once they are done.
	pfResult, pfHosts := s.rolloutPreflight(ctx, st, rec.Request)
	if pfHosts == nil {
		pfHosts = rec.Preflight
	}
	obs := rollout.Observation{
		Approval:  rollout.Approval{Active: ap.Active(now), Token: ap.Token},
		Preflight: pfResult,
		Hosts:     map[string]rollout.HostObservation{},
	}
	if !obs.Approval.Active {
		obs.Approval.Token = 0
		if ended, err := s.cli.Get(ctx, s.keys.ApprovalEnded(st.Token)); err == nil && len(ended.Kvs) == 1 {
			obs.Approval.Expired = string(ended.Kvs[0].Value) == "expired"
		}
	}
	for host, hs := range st.Hosts {
		ho := rollout.HostObservation{}
		if r, err := s.commandResult(ctx, host, hs.Command); err != nil {
			return err
		} else if r != nil {
			ho.Result, ho.Error = resultOf(r.Outcome), r.Error
		}
		if r, err := s.commandResult(ctx, host, hs.Rollback); err != nil {
			return err
		} else if r != nil {
			ho.RollbackResult = resultOf(r.Outcome)
		}
		a := agents[host]
		// Lost for a gate: no stream for longer than the liveness contract
		// (a host reconnecting to another replica after a failover is not
		// lost). Until then the gate still needs fresh health data from it,
		// so a silent host fails closed by the data timeout anyway.
		ho.Lost = a == nil || a.State != "connected" && (a.LastHeartbeat == nil || now.Sub(a.LastHeartbeat.AsTime()) > lostGrace)
		if a != nil {
			for _, sv := range a.Services {
				if sv.Name == st.Plan.Service && sv.Health != nil && sv.Health.Requests > 0 {
					ho.Health = rollout.Health{HasData: true, Requests: sv.Health.Requests, Errors: sv.Health.Errors,
						AvgLatency: time.Duration(sv.Health.AvgLatencyMs * float64(time.Millisecond))}
					if sv.Health.LastProbe != nil {
						ho.Health.ObservedAt = sv.Health.LastProbe.AsTime()
					}
				}
			}
		}
		obs.Hosts[host] = ho
	}
	reqs, err := s.cli.Get(ctx, s.keys.RolloutRequests(st.ID), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var ops []clientv3.Op
	for _, kv := range reqs.Kvs {
		switch strings.TrimPrefix(string(kv.Key), s.keys.RolloutRequests(st.ID)) {
		case "pause":
			obs.Pause = true
		case "resume":
			obs.Resume = true
		case "abort":
			obs.Abort = true
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	next, actions := rollout.Next(st, obs, now)
	gate := gateStatus(next, obs, now)
	moved := len(actions) > 0 || len(ops) > 0 || next.Phase != st.Phase || !next.UpdatedAt.Equal(st.UpdatedAt)
	if !moved && (gate == nil || rec.Gate != nil && int(gate.BakedSeconds) == int(rec.Gate.BakedSeconds)) {
		return nil // nothing moved; the gate figures are refreshed once a second while baking
	}
	cmps := []clientv3.Cmp{fence, clientv3.Compare(clientv3.ModRevision(s.keys.Rollout(st.ID)), "=", modRev)}
	req := rec.Request
	var events []rollout.EmitEvent
	var started []rollout.StartWave
	var rollbacks []rollout.RollBack
	fenced := false
	for _, a := range actions {
		switch a := a.(type) {
		case rollout.StartWave:
			fenced = true
			for _, c := range a.Commands {
				cmd := &golivev1.Command{Id: c.ID, FencingToken: next.Token, IssuedAt: timestamppb.New(now), RolloutId: st.ID,
					Action: &golivev1.Command_Deploy{Deploy: &golivev1.DeployAction{Service: req.Service, Release: req.Release,
						ArtifactUrl: req.ArtifactUrl, Sha256: req.Sha256, Signature: req.Signature, AutoRollback: true, WeightPercent: req.WeightPercent, WeightBake: req.MinHealthy}}}
				b, _ := marshal.Marshal(cmd)
				ops = append(ops, clientv3.OpPut(s.keys.Command(c.Host, c.ID), string(b)))
			}
			started = append(started, a)
		case rollout.RollBack:
			token := next.Token
			if a.Operator {
				token = 0
			} else {
				fenced = true
			}
			for _, t := range a.Targets {
				cmd := &golivev1.Command{Id: t.ID, FencingToken: token, IssuedAt: timestamppb.New(now), RolloutId: st.ID,
					Action: &golivev1.Command_Rollback{Rollback: &golivev1.RollbackAction{Service: req.Service, ToRelease: t.ToRelease, Operator: a.Operator}}}
				b, _ := marshal.Marshal(cmd)
				ops = append(ops, clientv3.OpPut(s.keys.Command(t.Host, t.ID), string(b)))
			}
			rollbacks = append(rollbacks, a)
		case rollout.Finish:
			lock := s.keys.ServiceLock(req.Service)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(lock), "=", st.ID)}, []clientv3.Op{clientv3.OpDelete(lock)}, nil))
		case rollout.EmitEvent:
			events = append(events, a)
		case rollout.Halt, rollout.RunPreflight:
		}
	}
	if fenced {
		cmps = append(cmps, s.approvals.Fence(next.Token))
	}
	recStr, err := s.rolloutRecord(next, req, rec.CreatedBy, gate, pfHosts)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(s.keys.Rollout(st.ID), recStr))
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		s.metrics.etcdErrors.WithLabelValues("executor").Inc()
		return err
	}
	if !tr.Succeeded {
		// Deposed, raced, or the approval ended: the next pass sees why.
		return nil
	}
	// Start the pre-live checks now rather than on the next pass (a no-op
	// when they run already); forget them once the rollout left preflight.
	s.rolloutPreflight(ctx, next, req)
	// Logged only once committed: a deposed leader's attempts leave no trace
	// but "lost leadership".
	for _, a := range started {
		s.log.Info("wave started", "rollout_id", st.ID, "wave", a.Wave, "name", a.Name, "hosts", a.Hosts())
	}
	for _, a := range rollbacks {
		s.log.Warn("rolling back every touched host", "rollout_id", st.ID, "reason", a.Reason, "hosts", len(a.Targets))
	}
	if next.Phase != st.Phase {
		s.log.Info("rollout state", "rollout_id", st.ID, "from", st.Phase, "to", next.Phase, "reason", next.Reason)
	}
	if next.Phase.Terminal() {
		s.metrics.rollouts.WithLabelValues(string(next.Phase)).Inc()
		s.metrics.rolloutDuration.Observe(next.UpdatedAt.Sub(next.CreatedAt).Seconds())
	}
	for _, ev := range events {
		switch ev.Kind {
		case rollout.EventGateFailed:
			s.metrics.gateFailures.Inc()
		case rollout.EventWavePassed:
			s.metrics.waveDuration.Observe(now.Sub(st.PhaseStart).Seconds())
		}
		kind, ok := eventKind(ev.Kind)
		if !ok {
			continue
		}
		s.notifier.Notify(notify.Event{Kind: kind, Actor: rec.CreatedBy, RolloutID: st.ID, Service: req.Service,
			Release: req.Release, Reason: ev.Reason, FencingToken: next.Token, Details: map[string]string{"wave": fmt.Sprint(ev.Wave), "event": string(ev.Kind)}})
	}
	return nil
}

// eventKind maps the executor's events onto the webhook kinds; events
// with no webhook kind (wave started, resumed) are not sent.
func eventKind(k rollout.EventKind) (notify.Kind, bool) {
	switch k {
	case rollout.EventStarted:
		return notify.KindRolloutStarted, true
	case rollout.EventWavePassed:
		return notify.KindWavePassed, true
	case rollout.EventGateFailed:
		return notify.KindGateFailed, true
	case rollout.EventRolledBack, rollout.EventAborted:
		return notify.KindRolledBack, true
	case rollout.EventSucceeded:
		return notify.KindRolloutSucceeded, true
	case rollout.EventHalted, rollout.EventFailed:
		return notify.KindRolloutHalted, true
	}
	return "", false
}

// gateStatus sums up the bake of the current wave for watch: the touched
// hosts' error rate and average latency, and how much of the window passed.
// The decision itself is rollout.Next's, host by host.
func gateStatus(st rollout.State, obs rollout.Observation, now time.Time) *golivev1.GateStatus {
	if st.Step != rollout.StepBaking || st.BakeStart.IsZero() {
		return nil
	}
	g := &golivev1.GateStatus{Wave: uint32(st.Wave), WindowSeconds: st.Plan.Gate.MinHealthy.Seconds(),
		BakedSeconds: min(now.Sub(st.BakeStart).Seconds(), st.Plan.Gate.MinHealthy.Seconds()), Passing: true}
	var req, errs uint64
	var lat time.Duration
	n := 0
	for _, id := range st.Touched() {
		h := obs.Hosts[id]
		if !h.Health.HasData || h.Lost {
			g.Passing = false
			g.Detail = "host " + id + " has no health data"
			continue
		}
		req += h.Health.Requests
		errs += h.Health.Errors
		lat += h.Health.AvgLatency
		n++
	}
	if req > 0 {
		g.ErrorRate = float64(errs) / float64(req)
	}
	if n > 0 {
		g.AvgLatencyMs = float64(lat) / float64(n) / float64(time.Millisecond)
	}
	if g.ErrorRate >= st.Plan.Gate.MaxErrorRate && st.Plan.Gate.MaxErrorRate > 0 || g.AvgLatencyMs >= float64(st.Plan.Gate.MaxAvgLatency)/float64(time.Millisecond) {
		g.Passing = false
	}
	return g
}
