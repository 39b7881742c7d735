package controller

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/controller/store"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Every rollout — a deploy, an operator's rollback — is one record under
// rollouts/<id>, written here by the RPC that starts it (in the
// transaction of its audit entry) and driven from then on by the leader's
// executor alone (internal/controller/executor). Commands reach agents
// through etcd: every replica watches commands/ and pushes those for hosts
// whose stream it holds (and, on an agent's Hello, every pending one for
// that host); the agent's result is stored by whichever replica holds the
// stream, in one transaction with the command's removal.
//
//	Deploy/Rollback RPC --txn(audit[, approval fence], service lock)--> rollouts/<id>
//	leader's executor --txn(leader, approval)--> record; commands/<host>/<cmd>
//	replica watch(commands/) --> stream --> agent --> result
//	result --txn--> results/<host>/<cmd>, -commands/<host>/<cmd>[, backups/…]

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

func validName(kind, s string) error {
	if !nameRE.MatchString(s) || strings.Contains(s, "..") || strings.HasSuffix(s, ".tmp") {
		return fmt.Errorf("%w: %s %q: use letters, digits, '.', '_', '+' or '-' (no '/', no '..')", apierr.ErrInvalid, kind, s)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(previous)"
	}
	return s
}

func newRolloutID(now time.Time) string {
	return now.UTC().Format("20060102T150405") + "-" + hub.NewID()[:6]
}

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
func specFrom(req *golivev1.DeployRequest) rollout.Spec {
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
	if req.MinRequests > 0 {
		spec.Gate.MinRequests = req.MinRequests
	}
	spec.Gate.MaxErrorRatioVsStable = req.MaxErrorRatioVsStable
	return spec
}

// loadDefaultAnalysis reads each service's default analysis files.
func loadDefaultAnalysis(files map[string][]string) (map[string][]analysis.Metric, error) {
	out := map[string][]analysis.Metric{}
	for svc, paths := range files {
		for _, p := range paths {
			ms, err := analysis.Load(p)
			if err != nil {
				return nil, fmt.Errorf("--default-analysis %s=%s: %w", svc, p, err)
			}
			out[svc] = append(out[svc], ms...)
		}
	}
	return out, nil
}

// analysisOf is the PromQL analysis a deploy's gates run: the service's
// default, then the deploy's own files; a metric name twice is refused.
func (s *Server) analysisOf(req *golivev1.DeployRequest) ([]analysis.Metric, error) {
	ms := append([]analysis.Metric(nil), s.defaultAnalysis[req.Service]...)
	for _, f := range req.Analysis {
		got, err := analysis.Parse([]byte(f.Hcl), f.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: --analysis %s: %v", apierr.ErrInvalid, f.Name, err)
		}
		ms = append(ms, got...)
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.Name] {
			return nil, fmt.Errorf("%w: analysis metric %q is defined twice (the service's default and --analysis, or two files)", apierr.ErrInvalid, m.Name)
		}
		seen[m.Name] = true
	}
	if len(ms) > 0 && s.cfg.Prometheus.URL == "" {
		return nil, fmt.Errorf("%w: the deploy has a PromQL analysis but the controller has no Prometheus: start it with serve --prometheus-url URL", apierr.ErrInvalid)
	}
	return ms, nil
}

// plan computes the schedule of a deploy against the agents known now,
// and the PromQL analysis its gates run.
func (s *Server) plan(ctx context.Context, req *golivev1.DeployRequest) (rollout.Schedule, []analysis.Metric, error) {
	if err := validName("service", req.Service); err != nil {
		return rollout.Schedule{}, nil, err
	}
	if err := validName("release", req.Release); err != nil {
		return rollout.Schedule{}, nil, err
	}
	if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
		return rollout.Schedule{}, nil, fmt.Errorf("%w: --skip-check: %v", apierr.ErrInvalid, err)
	}
	agents, err := s.hub.Agents(ctx)
	if err != nil {
		return rollout.Schedule{}, nil, err
	}
	metrics, err := s.analysisOf(req)
	if err != nil {
		return rollout.Schedule{}, nil, err
	}
	dnsTargets, err := s.dnsTargets(req.Dns)
	if err != nil {
		return rollout.Schedule{}, nil, err
	}
	spec := specFrom(req)
	spec.Gate.Analysis = len(metrics) > 0
	sched, err := rollout.Plan(planHosts(agents), spec)
	switch {
	case errors.Is(err, rollout.ErrUnavailable):
		// A lost host is the fleet's state, not a bad request.
		return rollout.Schedule{}, nil, fmt.Errorf("%w: %v", apierr.ErrConflict, err)
	case err != nil:
		return rollout.Schedule{}, nil, fmt.Errorf("%w: %v", apierr.ErrInvalid, err)
	}
	sched.DNS = dnsTargets
	// A host whose rollback from an earlier rollout is still queued (it was
	// unreachable when that rollout ended) would run it after this deploy:
	// refuse until it is done or the operator rolls it back by hand.
	queued, err := s.store.QueuedRollbacks(ctx, req.Service)
	if err != nil {
		return rollout.Schedule{}, nil, err
	}
	var waiting []string
	for _, h := range sched.Hosts {
		if len(queued[h]) > 0 {
			waiting = append(waiting, h)
		}
	}
	if len(waiting) > 0 {
		return rollout.Schedule{}, nil, fmt.Errorf("%w: %s still %s a queued rollback of %s from an earlier rollout (unreachable when it ended): "+
			"bring the host back so it runs, or leave it out with --hosts/--selector", apierr.ErrConflict, strings.Join(waiting, ", "),
			map[bool]string{true: "has", false: "have"}[len(waiting) == 1], req.Service)
	}
	return sched, metrics, nil
}

// planView is a dry run's answer: the plan as a rollout that never ran.
func planView(sched rollout.Schedule, req *golivev1.DeployRequest) *golivev1.Rollout {
	v := store.Record{State: rollout.New("", sched, 0, time.Now()), Request: req}.View()
	v.State, v.CreatedAt, v.UpdatedAt = "plan", nil, nil
	for _, w := range v.Waves {
		w.State = "planned"
	}
	return v
}

// startRollout writes a new rollout's record for the leader to execute: one
// transaction with its audit entry, taking the service's one-rollout lock,
// fenced on the approval when token is not 0 (an operator's rollback runs
// without one).
func (s *Server) startRollout(ctx context.Context, entry audit.Entry, rec store.Record) (*golivev1.Rollout, error) {
	st := rec.State
	cmps := []clientv3.Cmp{s.store.CmpServiceFree(st.Plan.Service)}
	if st.Token != 0 {
		cmps = append(cmps, s.approvals.Fence(st.Token))
	}
	put, err := s.store.OpPutRollout(rec)
	if err != nil {
		return nil, err
	}
	_, _, err = s.audit.Append(ctx, entry, cmps, []clientv3.Op{s.store.OpLockService(st.Plan.Service, st.ID), put})
	if err == audit.ErrPrecondition {
		if st.Token != 0 {
			if a, _, aerr := s.approvals.Current(ctx); aerr == nil && !a.Active(time.Now()) {
				return nil, apierr.ErrNoApproval
			}
		}
		if id, _ := s.store.RunningRollout(ctx, st.Plan.Service); id != "" {
			return nil, runningError(st.Plan.Service, id)
		}
		return nil, fmt.Errorf("%w: the approval or the service's rollout changed meanwhile; try again", apierr.ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("rollout planned", "rollout_id", st.ID, "kind", st.Plan.Kind, "service", st.Plan.Service, "release", st.Plan.Release,
		"to_release", st.Plan.ToRelease, "waves", len(st.Plan.Waves), "hosts", len(st.Plan.Hosts))
	s.exec.Kick()
	return rec.View(), nil
}

func runningError(service, id string) error {
	return fmt.Errorf("%w: rollout %s of %s is running: follow it with `golive-controller watch %s`, or stop it with `golive-controller abort %s` (it rolls back every host it touched)",
		apierr.ErrConflict, id, service, id, id)
}

// startDeploy writes a deploy planned by plan.
func (s *Server) startDeploy(ctx context.Context, actor, source string, token int64, req *golivev1.DeployRequest, sched rollout.Schedule, metrics []analysis.Metric) (*golivev1.Rollout, error) {
	now := time.Now()
	st := rollout.New(newRolloutID(now), sched, token, now)
	entry := audit.Entry{Actor: actor, Action: "deploy", Outcome: "started", Source: source,
		Detail: fmt.Sprintf("rollout=%s service=%s release=%s hosts=%d waves=%d token=%d", st.ID, req.Service, req.Release, len(sched.Hosts), len(sched.Waves), token)}
	for _, t := range sched.DNS {
		entry.Detail += fmt.Sprintf(" dns=%s/%s=%s:[%s]", t.Name, t.Type, t.Pool, strings.Join(t.Values, " "))
	}
	if len(req.SkipChecks) > 0 {
		// Skipping a pre-live check is the operator's call: on the record.
		entry.Detail += " skip_checks=" + strings.Join(req.SkipChecks, ",")
	}
	if len(metrics) > 0 {
		names := make([]string, len(metrics))
		var passOnNoData []string
		for i, m := range metrics {
			names[i] = m.Name
			if m.OnNoData == analysis.NoDataPass {
				passOnNoData = append(passOnNoData, m.Name)
			}
		}
		entry.Detail += " analysis=" + strings.Join(names, ",")
		if len(passOnNoData) > 0 {
			// An analysis that passes on no data is the deployer's call.
			entry.Detail += " on_no_data_pass=" + strings.Join(passOnNoData, ",")
		}
	}
	return s.startRollout(ctx, entry, store.Record{State: st, Request: req, CreatedBy: actor, Metrics: metrics})
}

// startRollback writes an operator's rollback of hosts (token 0: no
// approval needed; audited). A rollback of the whole service (whole) also
// restores the DNS records its latest rollout set, if it was a deploy with
// --dns.
func (s *Server) startRollback(ctx context.Context, actor, source string, req *golivev1.RollbackRequest, whole bool) (*golivev1.Rollout, error) {
	sched, err := rollout.PlanRollback(rollout.RollbackSpec{Service: req.Service, Hosts: req.Hosts, ToRelease: req.ToRelease, RestoreBackupID: req.RestoreDbBackupId})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", apierr.ErrInvalid, err)
	}
	if whole && s.dns != nil {
		if sched.DNS, err = s.dnsRestores(ctx, req.Service); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	st := rollout.New(newRolloutID(now), sched, 0, now)
	restore := ""
	if req.RestoreDbBackupId != "" {
		restore = " restore_db_backup=" + req.RestoreDbBackupId
	}
	for _, t := range sched.DNS {
		restore += fmt.Sprintf(" restore_dns=%s/%s:[%s]", t.Name, t.Type, strings.Join(t.Values, " "))
	}
	entry := audit.Entry{Actor: actor, Action: "rollback", Outcome: "started", Source: source,
		Detail: fmt.Sprintf("rollout=%s service=%s release=%s hosts=%s token=0%s", st.ID, req.Service, orNone(req.ToRelease), strings.Join(sched.Hosts, ","), restore)}
	return s.startRollout(ctx, entry, store.Record{State: st, CreatedBy: actor})
}

// dispatchCommands pushes pending commands to the agents this replica
// holds: every pending one, then each new one (list, then watch).
func (s *Server) dispatchCommands(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.store.WatchNewCommands(ctx, func(host string, cmd *golivev1.Command, err error) {
			if err != nil {
				s.log.Error("corrupt command in etcd", "host_id", host, "error", err)
				return
			}
			s.hub.SendCommand(host, cmd)
		})
		if err != nil && ctx.Err() == nil {
			s.metrics.EtcdErrors.WithLabelValues("commands").Inc()
			sleepCtx(ctx, time.Second)
		}
	}
}

// AgentHello sends every pending command of host (hub.Owner).
func (s *Server) AgentHello(ctx context.Context, host string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmds, err := s.store.HostCommands(ctx, host)
	if err != nil {
		s.metrics.EtcdErrors.WithLabelValues("commands").Inc()
		s.log.Warn("cannot read a reconnected agent's pending commands", "host_id", host, "error", err)
		return
	}
	for _, c := range cmds {
		s.hub.SendCommand(host, c)
	}
}

// AgentResult stores a command's result with the command's removal (and a
// verified backup's record), in one transaction (hub.Owner). The rollout's
// record is the executor's alone: it reads results from results/. etcd
// may be slow (many hosts finish at once, a loaded machine): it tries again
// with backoff for up to resultPatience before giving up (unacked, the
// agent sends the result again when it reconnects).
func (s *Server) AgentResult(ctx context.Context, host string, res *golivev1.CommandResult) error {
	backupOps, res := s.backupOps(host, res)
	ops := append([]clientv3.Op{s.store.OpPutResult(host, res), s.store.OpDeleteCommand(host, res.CommandId)}, backupOps...)
	deadline := time.Now().Add(resultPatience)
	wait := 100 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.store.Client().Txn(tctx).Then(ops...).Commit()
		cancel()
		if err == nil {
			return nil
		}
		s.metrics.EtcdErrors.WithLabelValues("result").Inc()
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.log.Warn("cannot store a result; the agent sends it again when it reconnects", "host_id", host, "command_id", res.CommandId, "error", err)
			return err
		}
		sleepCtx(ctx, wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// resultPatience bounds how long AgentResult keeps trying.
const resultPatience = time.Minute

// AgentAck stores a refused command as its final, rejected result: the
// agent changed nothing (hub.Owner).
func (s *Server) AgentAck(ctx context.Context, host string, ack *golivev1.CommandAck) {
	if ack.Accepted {
		return
	}
	_ = s.AgentResult(ctx, host, &golivev1.CommandResult{CommandId: ack.CommandId, Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED,
		Error: ack.Reason, Unchanged: true, FinishedAt: timestamppb.Now()})
}

// rollouts lists rollouts, newest first, of service ("" all), the running
// ones only when running, at most limit (0: all).
func (s *Server) rollouts(ctx context.Context, service string, running bool, limit int) ([]*golivev1.Rollout, error) {
	recs, err := s.store.ListRollouts(ctx, func(key string, err error) {
		s.log.Error("unreadable rollout record", "key", key, "error", err)
	})
	if err != nil {
		return nil, err
	}
	var out []*golivev1.Rollout
	for _, r := range recs {
		if service != "" && r.State.Plan.Service != service || running && r.Terminal() {
			continue
		}
		out = append(out, r.View())
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}
