package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Pre-live checks: the controller fans a PreflightAction out to hosts
// through the ordinary command path and sums up their answers.
//
//	Preflight RPC / executor (rollout.RunPreflight)
//	  --txn--> commands/<host>/pf-<batch>-<host>  (fencing token 0, leased)
//	  replica holding the stream --> agent (no approval needed) --> result
//	  recordResult --> results/<host>/pf-<batch>-<host>
//	  fan-out watches results/ from its own put's revision, then deletes
//	  the commands and results it wrote
//
// The commands carry a lease of the run's timeout plus a margin, so a
// controller that dies mid-run leaves no command behind.

// DefaultPreflightTimeout bounds a preflight run when the request names none.
const DefaultPreflightTimeout = 30 * time.Second

// maxPreflightTimeout caps a requested timeout.
const maxPreflightTimeout = 10 * time.Minute

// preflightSpec is one fan-out.
type preflightSpec struct {
	Service, Release, ArtifactURL string
	Hosts                         []string // connected hosts to ask
	Skip                          []string
	Timeout                       time.Duration
}

// fanOutPreflight asks every host of spec for its checks and waits (by
// watch) for their answers until spec.Timeout. It returns one HostChecks per
// host, in spec.Hosts order; a host that did not answer in time gets an
// error. ctx ending early is an error.
func (s *Server) fanOutPreflight(ctx context.Context, spec preflightSpec) ([]*golivev1.HostChecks, error) {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultPreflightTimeout
	}
	batch := "pf-" + newID()[:10]
	out := make([]*golivev1.HostChecks, len(spec.Hosts))
	want := map[string]int{} // result key -> index in out
	answered := map[int]bool{}
	var cmdKeys []string
	lease, err := s.cli.Grant(ctx, int64((timeout+30*time.Second)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("preflight: grant lease: %w", err)
	}
	defer func() {
		// Clean up whatever happens: the commands not yet taken and the
		// results that came in; a late answer is swept when it lands.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var ops []clientv3.Op
		for _, k := range cmdKeys {
			ops = append(ops, clientv3.OpDelete(k))
		}
		for k := range want {
			ops = append(ops, clientv3.OpDelete(k))
		}
		tr, err := s.cli.Txn(cctx).Then(ops...).Commit()
		if err != nil {
			s.log.Warn("preflight: cannot delete its commands and results", "batch", batch, "error", err)
		}
		s.cli.Revoke(cctx, lease.ID)
		var late []string
		for k, i := range want {
			if !answered[i] {
				late = append(late, k)
			}
		}
		if err == nil && len(late) > 0 {
			go s.sweepLateResults(late, tr.Header.Revision)
		}
	}()
	now := time.Now()
	var ops []clientv3.Op
	for i, h := range spec.Hosts {
		out[i] = &golivev1.HostChecks{HostId: h}
		cmd := &golivev1.Command{Id: batch + "-" + h, IssuedAt: timestamppb.New(now),
			Action: &golivev1.Command_Preflight{Preflight: &golivev1.PreflightAction{
				Service: spec.Service, Release: spec.Release, SkipChecks: spec.Skip, ArtifactUrl: spec.ArtifactURL}}}
		b, _ := marshal.Marshal(cmd)
		k := s.keys.Command(h, cmd.Id)
		cmdKeys = append(cmdKeys, k)
		want[s.keys.Result(h, cmd.Id)] = i
		ops = append(ops, clientv3.OpPut(k, string(b), clientv3.WithLease(lease.ID)))
	}
	if len(ops) == 0 {
		return out, nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	put, err := s.cli.Txn(wctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("preflight: write commands: %w", err)
	}
	s.log.Info("preflight sent", "batch", batch, "service", spec.Service, "release", spec.Release, "hosts", spec.Hosts, "skip", spec.Skip)
	pending := len(want)
	take := func(key string, value []byte) {
		i, ok := want[key]
		if !ok || answered[i] {
			return
		}
		answered[i] = true
		res := &golivev1.CommandResult{}
		if err := protojson.Unmarshal(value, res); err != nil {
			out[i].Error = "the host's answer is corrupt: " + err.Error()
		} else if res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED {
			out[i].Error = orDefault(res.Error, "the checks could not run ("+outcomeWord(res.Outcome)+")")
		} else {
			out[i].Checks = res.Checks
			if out[i].Checks == nil {
				out[i].Checks = []*golivev1.CheckResult{}
			}
		}
		pending--
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(wctx), s.keys.Results(), clientv3.WithPrefix(), clientv3.WithRev(put.Header.Revision+1))
	for pending > 0 {
		wr, ok := <-wch
		if !ok || wr.Err() != nil {
			break
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				take(string(ev.Kv.Key), ev.Kv.Value)
			}
		}
	}
	if pending > 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("preflight: %w", ctx.Err())
	}
	if pending > 0 && wctx.Err() == nil {
		// The watch broke (etcd trouble): read what arrived.
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		for k := range want {
			if r, err := s.cli.Get(gctx, k); err == nil && len(r.Kvs) == 1 {
				take(k, r.Kvs[0].Value)
			}
		}
		gcancel()
	}
	for _, hc := range out {
		if hc.Checks == nil && hc.Error == "" {
			hc.Error = fmt.Sprintf("no answer within %s: is the agent connected and running a golive that knows preflight?", timeout)
		}
	}
	return out, nil
}

// lateAnswer bounds how long after a run an agent that got the command may
// still answer: its own run is bounded well below this.
const lateAnswer = time.Minute

// sweepLateResults deletes the results of keys that agents store after
// the run gave up on them (results are not leased), watching from rev.
func (s *Server) sweepLateResults(keys []string, rev int64) {
	ctx, cancel := context.WithTimeout(context.Background(), lateAnswer)
	defer cancel()
	left := map[string]bool{}
	for _, k := range keys {
		left[k] = true
	}
	for ev := range s.cli.Watch(ctx, s.keys.Results(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if ev.Err() != nil {
			return
		}
		for _, e := range ev.Events {
			k := string(e.Kv.Key)
			if e.Type == clientv3.EventTypePut && left[k] {
				if _, err := s.cli.Delete(ctx, k); err == nil {
					delete(left, k)
				}
			}
		}
		if len(left) == 0 {
			return
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// preflightOK reports whether hosts allow going live: every host answered
// and no check failed.
func preflightOK(hosts []*golivev1.HostChecks) bool { return len(preflightFailures(hosts)) == 0 }

// preflightFailures names each host's error and failed check, "host h1:
// tls: <detail>", in host order.
func preflightFailures(hosts []*golivev1.HostChecks) []string {
	var out []string
	for _, h := range hosts {
		if h.Error != "" {
			out = append(out, fmt.Sprintf("host %s: %s", h.HostId, h.Error))
		}
		for _, c := range h.Checks {
			switch preflight.Status(c.Status) {
			case preflight.StatusPass, preflight.StatusWarn, preflight.StatusSkip:
			default:
				out = append(out, fmt.Sprintf("host %s: check %s failed: %s", h.HostId, c.Name, c.Detail))
			}
		}
	}
	return out
}

// preflightReason sums up failures for a rollout's reason: the first few in
// full, then how many more.
func preflightReason(hosts []*golivev1.HostChecks) string {
	f := preflightFailures(hosts)
	const show = 3
	if len(f) <= show {
		return strings.Join(f, "; ")
	}
	return strings.Join(f[:show], "; ") + fmt.Sprintf("; and %d more (see the rollout's preflight table)", len(f)-show)
}

// preflightHosts picks the hosts of a Preflight RPC: the named ones (each
// must be known and run the service; a lost one is reported, not asked), or
// the connected hosts running the service that match the selector. The
// second list holds the named hosts whose agent is not connected.
func (s *Server) preflightHosts(ctx context.Context, req *golivev1.PreflightRequest) (ask, lost []string, err error) {
	if len(req.Hosts) > 0 && len(req.Selector) > 0 {
		return nil, nil, fmt.Errorf("%w: use --host or --selector, not both", errInvalid)
	}
	agents, err := s.hub.agents(ctx)
	if err != nil {
		return nil, nil, err
	}
	selected, err := rollout.SelectHosts(planHosts(agents), req.Service, req.Hosts, req.Selector)
	switch {
	case errors.Is(err, rollout.ErrUnknownHost), errors.Is(err, rollout.ErrNoHosts):
		return nil, nil, fmt.Errorf("%w: %v", errNotFound, err)
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	for _, h := range selected {
		switch {
		case !h.Lost:
			ask = append(ask, h.ID)
		case len(req.Hosts) > 0:
			lost = append(lost, h.ID) // named: reported as not connected
		}
	}
	if len(ask) == 0 && len(lost) == 0 {
		what := fmt.Sprintf("no connected host runs service %q", req.Service)
		if len(req.Selector) > 0 {
			what += " with labels " + rollout.FormatSelector(req.Selector)
		}
		return nil, nil, fmt.Errorf("%w: %s (see `golive-controller agents`)", errNotFound, what)
	}
	sort.Strings(ask)
	sort.Strings(lost)
	return ask, lost, nil
}

// Preflight runs the pre-live checks of a service on its hosts. Checking
// only reads, so no approval is needed; every run is audited.
func (c *control) Preflight(ctx context.Context, req *golivev1.PreflightRequest) (*golivev1.PreflightResponse, error) {
	actor, src := actorAndSource(ctx)
	if err := validName("service", req.Service); err != nil {
		return nil, toStatus(err)
	}
	if req.Release != "" {
		if err := validName("release", req.Release); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
		return nil, toStatus(fmt.Errorf("%w: --skip-check: %v", errInvalid, err))
	}
	timeout := req.Timeout.AsDuration()
	switch {
	case req.Timeout == nil || timeout <= 0:
		timeout = DefaultPreflightTimeout
	case timeout > maxPreflightTimeout:
		return nil, toStatus(fmt.Errorf("%w: --timeout %s is longer than %s", errInvalid, timeout, maxPreflightTimeout))
	}
	ask, lost, err := c.s.preflightHosts(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	checked, err := c.s.fanOutPreflight(ctx, preflightSpec{Service: req.Service, Release: req.Release, ArtifactURL: req.ArtifactUrl,
		Hosts: ask, Skip: req.SkipChecks, Timeout: timeout})
	if err != nil {
		return nil, toStatus(err)
	}
	for _, h := range lost {
		checked = append(checked, &golivev1.HostChecks{HostId: h, Error: "agent is not connected (lost): bring it back, or leave it out of --host"})
	}
	sort.Slice(checked, func(i, j int) bool { return checked[i].HostId < checked[j].HostId })
	resp := &golivev1.PreflightResponse{Service: req.Service, Release: req.Release, Hosts: checked, Ok: preflightOK(checked)}
	outcome := "ok"
	if !resp.Ok {
		outcome = "failed"
	}
	var hosts []string
	for _, h := range checked {
		hosts = append(hosts, h.HostId)
	}
	detail := fmt.Sprintf("service=%s release=%s hosts=%s", req.Service, orNone(req.Release), strings.Join(hosts, ","))
	if len(req.SkipChecks) > 0 {
		detail += " skip_checks=" + strings.Join(req.SkipChecks, ",")
	}
	if f := preflightFailures(checked); len(f) > 0 {
		detail += " failures=" + fmt.Sprint(len(f))
	}
	if _, _, err := c.s.audit.Append(ctx, audit.Entry{Actor: actor, Action: "preflight", Outcome: outcome, Source: src, Detail: detail}, nil, nil); err != nil {
		c.s.log.Warn("preflight: cannot audit", "error", err)
		return nil, toStatus(fmt.Errorf("record the preflight in the audit log: %w", err))
	}
	c.s.log.Info("preflight", "actor", actor, "service", req.Service, "release", req.Release, "ok", resp.Ok, "hosts", hosts)
	return resp, nil
}

// A rollout's preflight runs on the leader, off the reconcile loop: the
// executor starts a run when a rollout is in its preflight phase and none
// is running for that phase's start (so a new leader, or a resume, starts
// it again), and reads the outcome on its next passes.

// preflightRun is one rollout preflight.
type preflightRun struct {
	start  time.Time // the rollout's PhaseStart the run belongs to
	done   bool
	result rollout.PreflightResult
	hosts  []*golivev1.HostChecks
}

// preflightRuns holds a leader's rollout preflight runs by rollout id.
type preflightRuns struct {
	sync.Mutex
	m map[string]*preflightRun
}

// rolloutPreflight is the executor's observation of st's preflight: it
// starts a run when none belongs to the current phase start and returns
// the run's outcome (pending until it is done) and its table (nil while
// pending). Outside the preflight phase it forgets the rollout's run.
func (s *Server) rolloutPreflight(ctx context.Context, st rollout.State, req *golivev1.DeployRequest) (rollout.PreflightResult, []*golivev1.HostChecks) {
	key := st.ID
	s.preflightRuns.Lock()
	defer s.preflightRuns.Unlock()
	if s.preflightRuns.m == nil {
		s.preflightRuns.m = map[string]*preflightRun{}
	}
	if st.Phase != rollout.PhasePreflight {
		delete(s.preflightRuns.m, key)
		return rollout.PreflightResult{}, nil
	}
	run := s.preflightRuns.m[key]
	if run == nil || !run.start.Equal(st.PhaseStart) {
		s.startRolloutPreflight(ctx, st, req)
		return rollout.PreflightResult{Result: rollout.ResultPending}, nil
	}
	if !run.done {
		return rollout.PreflightResult{Result: rollout.ResultPending}, nil
	}
	return run.result, run.hosts
}

// startRolloutPreflight starts st's preflight run in its own goroutine
// (s.preflightRuns must be locked). Its timeout stays well inside the
// rollout's progress deadline, so a silent host fails the preflight with a
// clear reason rather than the deadline.
func (s *Server) startRolloutPreflight(ctx context.Context, st rollout.State, req *golivev1.DeployRequest) {
	key := st.ID
	run := &preflightRun{start: st.PhaseStart}
	s.preflightRuns.m[key] = run
	timeout := DefaultPreflightTimeout
	if d := st.Plan.ProgressDeadline; d > 0 && d < 2*timeout {
		timeout = d / 2
	}
	spec := preflightSpec{Service: st.Plan.Service, Release: st.Plan.Release, ArtifactURL: req.GetArtifactUrl(),
		Hosts: slices.Clone(st.Plan.Hosts), Skip: req.GetSkipChecks(), Timeout: timeout}
	go func() {
		hosts, err := s.fanOutPreflight(ctx, spec)
		s.preflightRuns.Lock()
		defer s.preflightRuns.Unlock()
		if s.preflightRuns.m[key] != run {
			return // forgotten or superseded meanwhile
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("rollout preflight could not run; retrying on the next pass", "rollout_id", st.ID, "error", err)
			}
			delete(s.preflightRuns.m, key)
			return
		}
		run.done, run.hosts = true, hosts
		run.result = rollout.PreflightResult{Result: rollout.ResultSucceeded}
		if !preflightOK(hosts) {
			run.result = rollout.PreflightResult{Result: rollout.ResultFailed, Reason: preflightReason(hosts)}
		}
		s.log.Info("rollout preflight done", "rollout_id", st.ID, "ok", run.result.Result == rollout.ResultSucceeded, "reason", run.result.Reason)
		s.rolloutKick()
	}()
}
