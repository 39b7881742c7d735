// Package executor is the leader's rollout loop: it drives every rollout —
// a deploy, an operator's rollback (with or without a database restore),
// an abort — through the one state machine, rollout.Next.
//
// Each pass reconciles every running rollout: observe (approval, results,
// agents' health, operator requests) -> rollout.Next -> write the new
// record and the commands its actions ask for. Every write is fenced twice:
// on the leader's election key (a deposed leader writes nothing) and, when
// it commands hosts under the approval, on the approval's token.
//
//	etcd watch (results/, rollouts/, rollout_requests/, approval, agents/)
//	    or a deadline timer --> pass --> for each running rollout:
//	    observe --> rollout.Next --> txn(If leader && record unchanged [&& approval])
//	                                    Then(record, consumed requests, unlock)
//	                             --> commands in transactions of at most
//	                                 store.MaxOps, fenced the same way
//	    after commit: webhooks, metrics
//
// The record is written first, the commands after it: a host is on the
// record as commanded before any command for it exists, so a rollout never
// loses track of a host it touched. A command the record names but etcd
// lacks (the leader died between the two writes, or the approval ended
// between two chunks) is written again, with the same id, on a later pass
// while its fence still holds; agents run a command id once.
package executor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/controller/metrics"
	"github.com/golive/golive/internal/controller/store"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// LostGrace is how long a host may be without a stream before a gate
// counts it as lost: the 30 s in which a vanished agent is shown lost.
const LostGrace = 30 * time.Second

// Agents lists the agents the controller knows (the hub).
type Agents interface {
	Agents(ctx context.Context) ([]*golivev1.Agent, error)
}

// Config is what an Executor needs.
type Config struct {
	Log       hclog.Logger
	Store     *store.Store
	Approvals *approval.Manager
	Agents    Agents
	Notifier  *notify.Notifier
	Metrics   *metrics.Metrics
	// Prometheus answers the gates' PromQL analysis (nil: none configured;
	// a rollout with an analysis is refused before it starts).
	Prometheus analysis.Querier
	// PreflightChecks adds the controller's own checks to a rollout's
	// preflight (nil: none; the DNS failover TTL check when configured).
	PreflightChecks ControllerChecks
	// DNS makes the rollouts' DNS changes (nil: no --dns-config; a deploy
	// with --dns is refused before it starts).
	DNS DNSChanger
}

// Executor drives rollouts while its replica leads.
type Executor struct {
	cfg  Config
	log  hclog.Logger
	st   *store.Store
	kick chan struct{}

	preflights preflightRuns
	dns        dnsRuns
	// wg holds the goroutines a Run started (watches, preflight runs);
	// Run waits for them before it returns.
	wg sync.WaitGroup
}

// New returns an Executor; Run drives it.
func New(cfg Config) *Executor {
	return &Executor{cfg: cfg, log: cfg.Log.Named("executor"), st: cfg.Store, kick: make(chan struct{}, 1)}
}

// Kick wakes the loop (a no-op when it does not run).
func (e *Executor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run drives rollouts until ctx ends, fenced on the election key leaderKey
// at revision leaderRev. It returns once every goroutine it started ended.
func (e *Executor) Run(ctx context.Context, leaderKey string, leaderRev int64) {
	fence := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", leaderRev)
	e.log.Info("rollout executor running")
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); e.wg.Wait() }()
	keys := e.st.Keys()
	for _, prefix := range []string{keys.Results(), keys.Rollouts(), keys.RolloutRequestsAll(), keys.Approval(), keys.Agents()} {
		wch := e.st.Client().Watch(ctx, prefix, clientv3.WithPrefix())
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			for range wch {
				e.Kick()
			}
		}()
	}
	// Without events, a pass runs when the next deadline of a running
	// rollout (a bake window, a data timeout, a progress deadline) is due,
	// and at least every few seconds as a safety net.
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.kick:
		}
		next := e.pass(ctx, fence)
		// Events that arrive in the gap wait for the next pass, which
		// takes them all: at 1,000 hosts results and heartbeats come
		// faster than passes (each reads every agent and the running
		// records), and back to back the passes were most of the
		// controller's CPU (`golive-bench -only rollout1000`).
		select {
		case <-ctx.Done():
			return
		case <-time.After(passGap):
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// idleWake bounds how long the loop sleeps without an event.
const idleWake = 5 * time.Second

// passGap is the least time between two passes.
const passGap = 200 * time.Millisecond

// pass reconciles every running rollout and says when the next is due.
func (e *Executor) pass(ctx context.Context, fence clientv3.Cmp) time.Duration {
	wake := idleWake
	recs, err := e.st.ListRollouts(ctx, func(key string, err error) {
		e.log.Error("unreadable rollout record", "key", key, "error", err)
	})
	if err != nil {
		e.cfg.Metrics.EtcdErrors.WithLabelValues("executor").Inc()
		return time.Second
	}
	perState := map[string]int{}
	defer func() {
		e.cfg.Metrics.HostsPerStage.Reset()
		for st, n := range perState {
			e.cfg.Metrics.HostsPerStage.WithLabelValues(st).Set(float64(n))
		}
	}()
	var env *environment
	for _, rec := range recs {
		if rec.Terminal() {
			continue
		}
		for _, h := range rec.State.Hosts {
			perState[hostWord(h)]++
		}
		if env == nil {
			if env, err = e.environment(ctx); err != nil {
				return time.Second
			}
		}
		d, err := e.reconcile(ctx, fence, rec, env)
		if err != nil {
			e.log.Warn("reconcile rollout", "rollout_id", rec.State.ID, "error", err)
			d = time.Second
		}
		wake = min(wake, d)
	}
	return max(wake, 50*time.Millisecond)
}

func hostWord(h rollout.HostState) string {
	switch {
	case h.Rollback != "":
		return "rollback_" + string(h.RollbackResult)
	case h.Result == rollout.ResultNone:
		return "waiting"
	}
	return string(h.Result)
}

// environment is what every rollout of a pass observes alike.
type environment struct {
	agents  map[string]*golivev1.Agent
	ap      approval.Approval
	pending map[string]bool // command keys not yet answered
}

func (e *Executor) environment(ctx context.Context) (*environment, error) {
	list, err := e.cfg.Agents.Agents(ctx)
	if err != nil {
		return nil, err
	}
	env := &environment{agents: make(map[string]*golivev1.Agent, len(list))}
	for _, a := range list {
		env.agents[a.HostId] = a
	}
	if env.ap, _, err = e.cfg.Approvals.Current(ctx); err != nil {
		return nil, err
	}
	if env.pending, err = e.st.PendingCommands(ctx); err != nil {
		return nil, err
	}
	return env, nil
}

// observe builds what Next needs to know about rec now, and the commands
// the record names that etcd lacks (neither pending nor answered).
func (e *Executor) observe(ctx context.Context, rec store.Record, env *environment, now time.Time) (rollout.Observation, []missing, error) {
	st := rec.State
	obs := rollout.Observation{
		Approval: rollout.Approval{Active: env.ap.Active(now), Token: env.ap.Token},
		Hosts:    make(map[string]rollout.HostObservation, len(st.Hosts)),
	}
	if !obs.Approval.Active {
		obs.Approval.Token = 0
		if how, err := e.st.ApprovalEnded(ctx, st.Token); err == nil {
			obs.Approval.Expired = how == "expired"
		}
	}
	var lost []missing
	for host, hs := range st.Hosts {
		ho := rollout.HostObservation{}
		if hs.Command != "" && !hs.Result.Final() {
			r, err := e.st.Result(ctx, host, hs.Command)
			if err != nil {
				return obs, nil, err
			}
			if r != nil {
				ho.Result, ho.Error, ho.Unchanged = rollout.ResultOf(r.Outcome), r.Error, r.Unchanged
			} else if !env.pending[e.st.CommandKey(host, hs.Command)] {
				lost = append(lost, missing{host: host, id: hs.Command, token: hs.Token})
			}
		}
		if hs.Rollback != "" && !hs.RollbackResult.Final() {
			r, err := e.st.Result(ctx, host, hs.Rollback)
			if err != nil {
				return obs, nil, err
			}
			if r != nil {
				ho.RollbackResult, ho.RollbackRelease = rollout.ResultOf(r.Outcome), r.Release
				if ho.Error == "" {
					ho.Error = r.Error
				}
			} else if !env.pending[e.st.CommandKey(host, hs.Rollback)] {
				lost = append(lost, missing{host: host, id: hs.Rollback, rollback: true})
			}
		}
		a := env.agents[host]
		ho.Traffic, ho.Stable = trafficOf(a, st.Plan.Service)
		// Lost for a gate: no stream for longer than the liveness contract
		// (a host reconnecting to another replica after a failover is not
		// lost). Until then the gate still needs fresh health data from it,
		// so a silent host fails closed by the data timeout anyway.
		ho.Lost = a == nil || a.State != "connected" && (a.LastHeartbeat == nil || now.Sub(a.LastHeartbeat.AsTime()) > LostGrace)
		if a != nil {
			for _, sv := range a.Services {
				if sv.Name == st.Plan.Service {
					ho.Serving = sv.CurrentRelease
				}
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
	return obs, lost, nil
}

// trafficOf picks, from the agent's heartbeat, the load balancer's counts
// for the slot that serves the service (the active slot of a blue-green
// service, "" for a restart-mode one) and for the other slot (stable).
func trafficOf(a *golivev1.Agent, service string) (serving, stable rollout.Traffic) {
	if a == nil {
		return
	}
	for _, sv := range a.Services {
		if sv.Name != service || sv.Traffic == nil || sv.Traffic.Source == "" {
			continue
		}
		tw := sv.Traffic
		serving = rollout.Traffic{HasData: true, Source: tw.Source, Err: tw.Error}
		if tw.ObservedAt != nil {
			serving.ObservedAt = tw.ObservedAt.AsTime()
		}
		stable = rollout.Traffic{}
		for _, sl := range tw.Slots {
			t := rollout.Traffic{HasData: true, Source: tw.Source, Requests: sl.Requests, Errors: sl.Errors,
				AvgLatency: time.Duration(sl.AvgLatencyMs * float64(time.Millisecond)), ObservedAt: serving.ObservedAt, Err: tw.Error}
			if sl.ObservedAt != nil {
				t.ObservedAt = sl.ObservedAt.AsTime()
			}
			if sl.Slot == sv.ActiveSlot {
				serving = t
			} else {
				stable = t
			}
		}
	}
	return serving, stable
}

// missing is a command the record names but etcd lacks.
type missing struct {
	host, id string
	token    int64
	rollback bool
}

func (e *Executor) reconcile(ctx context.Context, fence clientv3.Cmp, rec store.Record, env *environment) (time.Duration, error) {
	st := rec.State
	now := time.Now()
	obs, lost, err := e.observe(ctx, rec, env, now)
	if err != nil {
		return 0, err
	}
	if len(lost) > 0 {
		return time.Second, e.rewrite(ctx, fence, rec, lost, now)
	}
	// The pre-live checks run off this loop (see rolloutPreflight); their
	// table goes into the record once they are done.
	pfHosts := rec.Preflight
	if !st.Plan.IsRollback() {
		var res []*golivev1.HostChecks
		obs.Preflight, res = e.rolloutPreflight(ctx, st, rec.Request)
		if res != nil {
			pfHosts = res
		}
	}
	obs.DNS = e.rolloutDNS(ctx, fence, rec)
	reqs, reqOps, err := e.st.Requests(ctx, st.ID)
	if err != nil {
		return 0, err
	}
	obs.Pause, obs.Resume, obs.Abort = reqs[store.RequestPause], reqs[store.RequestResume], reqs[store.RequestAbort]
	an, anMoved, err := e.analyse(ctx, rec, env, now)
	if err != nil {
		return 0, err
	}
	obs.Analysis = analysisResult(an)

	next, actions := rollout.Next(st, obs, now)
	gate := gateStatus(next, obs, now)
	moved := anMoved || len(actions) > 0 || len(reqOps) > 0 || next.Phase != st.Phase || !next.UpdatedAt.Equal(st.UpdatedAt)
	if !moved && (gate == nil || rec.Gate != nil && int(gate.BakedSeconds) == int(rec.Gate.BakedSeconds)) {
		return min(dueIn(next, now), analysisDue(an.State, now)), nil // nothing moved; the gate figures are refreshed once a second while baking
	}
	cmps := []clientv3.Cmp{fence, e.st.CmpRolloutAt(st.ID, rec.ModRevision)}
	ops := append([]clientv3.Op(nil), reqOps...)
	var cmds, opCmds []clientv3.Op // fenced on the approval / the operator's, unfenced
	var events []rollout.EmitEvent
	var started []rollout.StartWave
	var rollbacks []rollout.RollBack
	for _, a := range actions {
		switch a := a.(type) {
		case rollout.StartWave:
			for _, c := range a.Commands {
				cmds = append(cmds, e.st.OpPutCommand(c.Host, deployCommand(next, rec.Request, c.Host, c.ID, now)))
			}
			started = append(started, a)
		case rollout.RollBack:
			for _, t := range a.Targets {
				cmd := rollbackCommand(next, t.Host, t.ID, t.ToRelease, a, now)
				if a.Operator {
					opCmds = append(opCmds, e.st.OpPutCommand(t.Host, cmd))
				} else {
					cmds = append(cmds, e.st.OpPutCommand(t.Host, cmd))
				}
			}
			rollbacks = append(rollbacks, a)
		case rollout.Finish:
			ops = append(ops, e.st.OpUnlockService(st.Plan.Service, st.ID))
		case rollout.EmitEvent:
			events = append(events, a)
		case rollout.Halt, rollout.RunPreflight, rollout.ChangeDNS:
			// Run off the loop, from the stored record (rolloutPreflight,
			// rolloutDNS).
		}
	}
	if len(cmds) > 0 {
		// The record that names these commands is written only while the
		// approval still allows them.
		cmps = append(cmps, e.cfg.Approvals.Fence(next.Token))
	}
	put, err := e.st.OpPutRollout(store.Record{State: next, Request: rec.Request, CreatedBy: rec.CreatedBy, Gate: gate, Preflight: pfHosts,
		Metrics: rec.Metrics, Analysis: an.State, AnalysisWave: an.Wave, AnalysisBake: an.Bake})
	if err != nil {
		return 0, err
	}
	ops = append(ops, put)
	ok, tr, err := e.st.Commit(ctx, cmps, ops)
	if err != nil {
		e.cfg.Metrics.EtcdErrors.WithLabelValues("executor").Inc()
		return 0, err
	}
	if !ok {
		return time.Second, nil // deposed, raced, or the approval ended: the next pass sees why
	}
	// The commands, after the record that names them; a chunk whose fence
	// fails leaves the rest to a later pass (see the package doc).
	rev := tr.Header.Revision
	if err := e.writeCommands(ctx, fence, st.ID, rev, next.Token, cmds, opCmds); err != nil {
		// The record moved but its commands did not all go out (deposed,
		// the approval ended, etcd trouble): whoever leads next writes
		// them, or reports them cancelled. Nothing is announced from here.
		e.log.Warn("record stored, commands not all written; the leader's next pass finishes them", "rollout_id", st.ID, "error", err)
		return time.Second, nil
	}
	// Start the pre-live checks now rather than on the next pass (a no-op
	// when they run already); forget them once the rollout left preflight.
	if !st.Plan.IsRollback() {
		e.rolloutPreflight(ctx, next, rec.Request)
	}
	e.committed(st, next, rec, started, rollbacks, events, now)
	return min(dueIn(next, now), analysisDue(an.State, now)), nil
}

// run is a rollout's analysis as of this pass.
type run struct {
	State *analysis.State
	Wave  int
	Bake  time.Time
}

// analyse starts the current bake's PromQL analysis, or takes the
// measurements due now; it reports whether the run moved (to be stored).
// A rollout that is not baking keeps its last run (shown by rollout ID).
func (e *Executor) analyse(ctx context.Context, rec store.Record, env *environment, now time.Time) (run, bool, error) {
	st := rec.State
	cur := run{State: rec.Analysis, Wave: rec.AnalysisWave, Bake: rec.AnalysisBake}
	if !st.Plan.Gate.Analysis || len(rec.Metrics) == 0 || st.Step != rollout.StepBaking || st.Phase == rollout.PhaseHalted {
		return cur, false, nil
	}
	if cur.State == nil || cur.Wave != st.Wave || !cur.Bake.Equal(st.BakeStart) {
		v := analysis.Values{Hosts: st.Touched(), Service: st.Plan.Service, Release: st.Plan.Release, Slot: servingSlot(env, st)}
		a, err := analysis.Start(rec.Metrics, v, now)
		if err != nil {
			// A query the wave cannot fill (e.g. {{slot}} on a restart-mode
			// service) fails closed.
			a = analysis.State{Version: analysis.StateVersion, Values: v, Phase: analysis.PhaseFailed, Reason: err.Error(), StartedAt: now, EndedAt: now}
		}
		return run{State: &a, Wave: st.Wave, Bake: st.BakeStart}, true, nil
	}
	if cur.State.Done() || now.Before(cur.State.NextAt()) {
		return cur, false, nil
	}
	if e.cfg.Prometheus == nil {
		a := cur.State.Cut(now, "no Prometheus configured (serve --prometheus-url)")
		return run{State: &a, Wave: cur.Wave, Bake: cur.Bake}, true, nil
	}
	a, err := analysis.Step(ctx, e.cfg.Prometheus, *cur.State, now)
	if err != nil {
		return cur, false, err
	}
	return run{State: &a, Wave: cur.Wave, Bake: cur.Bake}, true, nil
}

func servingSlot(env *environment, st rollout.State) string {
	for _, id := range st.Touched() {
		if a := env.agents[id]; a != nil {
			for _, sv := range a.Services {
				if sv.Name == st.Plan.Service {
					return sv.ActiveSlot
				}
			}
		}
	}
	return ""
}

func analysisResult(r run) rollout.PreflightResult {
	switch {
	case r.State == nil || !r.State.Done():
		return rollout.PreflightResult{Result: rollout.ResultPending}
	case r.State.Passed():
		return rollout.PreflightResult{Result: rollout.ResultSucceeded}
	}
	return rollout.PreflightResult{Result: rollout.ResultFailed, Reason: r.State.Summary()}
}

func analysisDue(a *analysis.State, now time.Time) time.Duration {
	if a == nil || a.Done() {
		return idleWake
	}
	return max(a.NextAt().Sub(now), 0)
}

// writeCommands writes a pass's commands after its record, in chunks
// fenced on the leader and on the record being the one just written (and,
// for the approval's commands, on the approval).
func (e *Executor) writeCommands(ctx context.Context, fence clientv3.Cmp, id string, rev, token int64, fenced, operator []clientv3.Op) error {
	at := e.st.CmpRolloutAt(id, rev)
	if len(fenced) > 0 {
		ok, _, err := e.st.Commit(ctx, []clientv3.Cmp{fence, at, e.cfg.Approvals.Fence(token)}, fenced)
		if err != nil || !ok {
			return fmt.Errorf("approval commands: fence held=%v: %v", ok, err)
		}
	}
	if len(operator) > 0 {
		ok, _, err := e.st.Commit(ctx, []clientv3.Cmp{fence, at}, operator)
		if err != nil || !ok {
			return fmt.Errorf("operator commands: fence held=%v: %v", ok, err)
		}
	}
	return nil
}

// rewrite writes again the commands the record names that etcd lacks: the
// same ids, fenced as when first written. A deploy command whose approval
// ended is not written; the host is reported cancelled instead, so that
// Next can command it again under a new approval.
func (e *Executor) rewrite(ctx context.Context, fence clientv3.Cmp, rec store.Record, lost []missing, now time.Time) error {
	st := rec.State
	at := e.st.CmpRolloutAt(st.ID, rec.ModRevision)
	var deploys, rollbacks []clientv3.Op
	var fencedRollback bool
	for _, m := range lost {
		if m.rollback {
			ra := rollout.RollBack{Operator: st.Aborted || st.Plan.IsRollback(), RestoreBackupID: st.Plan.RestoreBackupID}
			fencedRollback = fencedRollback || !ra.Operator
			rollbacks = append(rollbacks, e.st.OpPutCommand(m.host, rollbackCommand(st, m.host, m.id, rollbackTarget(st, m.host), ra, now)))
			continue
		}
		deploys = append(deploys, e.st.OpPutCommand(m.host, deployCommand(st, rec.Request, m.host, m.id, now)))
	}
	e.log.Warn("writing commands the record names but etcd lacks", "rollout_id", st.ID, "commands", len(lost))
	if len(deploys) > 0 {
		ok, _, err := e.st.Commit(ctx, []clientv3.Cmp{fence, at, e.cfg.Approvals.Fence(st.Token)}, deploys)
		if err != nil {
			return err
		}
		if !ok {
			return e.cancelUnwritten(ctx, fence, rec, lost, now)
		}
	}
	if len(rollbacks) > 0 {
		cmps := []clientv3.Cmp{fence, at}
		if fencedRollback {
			cmps = append(cmps, e.cfg.Approvals.Fence(st.Token))
		}
		if _, _, err := e.st.Commit(ctx, cmps, rollbacks); err != nil {
			return err
		}
	}
	return nil
}

// cancelUnwritten stores a "cancelled" result for each deploy command the
// record names but that was never written (its approval ended first): the
// agent never saw it, so nothing changed on the host.
func (e *Executor) cancelUnwritten(ctx context.Context, fence clientv3.Cmp, rec store.Record, lost []missing, now time.Time) error {
	var ops []clientv3.Op
	for _, m := range lost {
		if m.rollback {
			continue
		}
		ops = append(ops, e.st.OpPutResult(m.host, &golivev1.CommandResult{CommandId: m.id, Service: rec.State.Plan.Service,
			Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED, Unchanged: true, FinishedAt: timestamppb.New(now),
			Error: "not sent: the approval ended before the command was written"}))
	}
	_, _, err := e.st.Commit(ctx, []clientv3.Cmp{fence, e.st.CmpRolloutAt(rec.State.ID, rec.ModRevision)}, ops)
	return err
}

func rollbackTarget(st rollout.State, host string) string {
	if st.Plan.IsRollback() {
		return st.Plan.ToRelease
	}
	return st.Hosts[host].Previous
}

func deployCommand(st rollout.State, req *golivev1.DeployRequest, host, id string, now time.Time) *golivev1.Command {
	return &golivev1.Command{Id: id, FencingToken: st.Token, IssuedAt: timestamppb.New(now), RolloutId: st.ID,
		Action: &golivev1.Command_Deploy{Deploy: &golivev1.DeployAction{Service: req.GetService(), Release: req.GetRelease(),
			ArtifactUrl: req.GetArtifactUrl(), Sha256: req.GetSha256(), Signature: req.GetSignature(), AutoRollback: true,
			WeightPercent: req.GetWeightPercent(), WeightBake: req.GetMinHealthy()}}}
}

// rollbackCommand is host's rollback command. The operator's (an abort, a
// rollback) carries token 0: agents run it without an approval.
func rollbackCommand(st rollout.State, host, id, to string, a rollout.RollBack, now time.Time) *golivev1.Command {
	token := st.Token
	if a.Operator {
		token = 0
	}
	return &golivev1.Command{Id: id, FencingToken: token, IssuedAt: timestamppb.New(now), RolloutId: st.ID,
		Action: &golivev1.Command_Rollback{Rollback: &golivev1.RollbackAction{Service: st.Plan.Service, ToRelease: to,
			Operator: a.Operator, RestoreDbBackupId: a.RestoreBackupID}}}
}

// committed logs, counts and notifies what a committed pass did. Only
// then: a deposed leader's attempts leave no trace but "lost leadership".
func (e *Executor) committed(st, next rollout.State, rec store.Record, started []rollout.StartWave, rollbacks []rollout.RollBack, events []rollout.EmitEvent, now time.Time) {
	for _, a := range started {
		e.log.Info("wave started", "rollout_id", st.ID, "wave", a.Wave, "name", a.Name, "hosts", len(a.Commands))
	}
	for _, a := range rollbacks {
		e.log.Warn("rolling back", "rollout_id", st.ID, "reason", a.Reason, "hosts", len(a.Targets), "operator", a.Operator)
	}
	if next.Phase != st.Phase {
		e.log.Info("rollout state", "rollout_id", st.ID, "from", st.Phase, "to", next.Phase, "reason", next.Reason)
	}
	if next.Phase.Terminal() {
		e.cfg.Metrics.Rollouts.WithLabelValues(string(next.Phase)).Inc()
		e.cfg.Metrics.RolloutDuration.Observe(next.UpdatedAt.Sub(next.CreatedAt).Seconds())
	}
	release := st.Plan.Release
	if st.Plan.IsRollback() {
		release = rec.View().Release
	}
	for _, ev := range events {
		switch ev.Kind {
		case rollout.EventGateFailed:
			e.cfg.Metrics.GateFailures.Inc()
		case rollout.EventWavePassed:
			e.cfg.Metrics.WaveDuration.Observe(now.Sub(st.PhaseStart).Seconds())
		}
		kind, ok := eventKind(ev.Kind)
		if !ok || e.cfg.Notifier == nil {
			continue
		}
		e.cfg.Notifier.Notify(notify.Event{Kind: kind, Actor: rec.CreatedBy, RolloutID: st.ID, Service: st.Plan.Service,
			Release: release, Reason: ev.Reason, FencingToken: next.Token, Details: map[string]string{"wave": fmt.Sprint(ev.Wave), "event": string(ev.Kind)}})
	}
}

// dueIn is when the next pass of st is due without events: at its bake
// window's end, its data timeout, or its progress deadline.
func dueIn(st rollout.State, now time.Time) time.Duration {
	d := idleWake
	at := func(t time.Time) {
		if t.IsZero() {
			return
		}
		if w := t.Sub(now); w > 0 {
			d = min(d, w)
		}
	}
	if st.Step == rollout.StepBaking && !st.BakeStart.IsZero() {
		end := st.BakeStart.Add(st.Plan.Gate.MinHealthy)
		at(end)
		at(end.Add(st.Plan.Gate.DataTimeout))
		if now.Before(end) {
			d = min(d, time.Second) // the gate's figures refresh once a second
		}
	}
	if !st.Phase.Terminal() && st.Phase != rollout.PhaseHalted {
		at(st.PhaseStart.Add(st.Plan.ProgressDeadline))
	}
	return d
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
		// What the gate judges: the load balancer's counts when the host
		// has them, else the probe.
		reqs, bad, avg, ok := h.Health.Requests, h.Health.Errors, h.Health.AvgLatency, h.Health.HasData
		if h.Traffic.HasData {
			reqs, bad, avg, ok = h.Traffic.Requests, h.Traffic.Errors, h.Traffic.AvgLatency, h.Traffic.Err == ""
		}
		if !ok || h.Lost {
			g.Passing = false
			g.Detail = "host " + id + " has no health data"
			continue
		}
		req += reqs
		errs += bad
		lat += avg
		n++
	}
	if j := st.JudgedOn[st.Wave]; j != "" && g.Detail == "" {
		g.Detail = "judged on " + j
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
