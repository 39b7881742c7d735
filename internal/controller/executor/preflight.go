package executor

import (
	"context"
	"errors"
	"fmt"
	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/controller/store"
	"github.com/hashicorp/go-hclog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// MaxPreflightTimeout caps a requested timeout.
const MaxPreflightTimeout = 10 * time.Minute

// PreflightSpec is one fan-out.
type PreflightSpec struct {
	Service, Release, ArtifactURL string
	Hosts                         []string // connected hosts to ask
	Skip                          []string
	Timeout                       time.Duration
	// Controller, when set, adds the checks the controller runs itself
	// to the hosts' answers (run while the agents answer).
	Controller ControllerChecks
}

// ControllerChecks are pre-live checks the controller runs itself on
// behalf of hosts: the TTL of a DNS failover name whose pool holds the
// host (only the controller knows the failover config and can ask the
// zone's primary).
type ControllerChecks interface {
	// PreflightChecks returns extra check results by host id (only for
	// hosts it concerns); skip are the --skip-check names.
	PreflightChecks(ctx context.Context, service string, hosts, skip []string) map[string][]*golivev1.CheckResult
}

// FanOutPreflight asks every host of spec for its checks and waits (by
// watch) for their answers until spec.Timeout. sweep, when not nil, is
// called with the results that did not arrive in time (to delete them when
// they land; the caller owns that work). It returns one HostChecks per
// host, in spec.Hosts order; a host that did not answer in time gets an
// error. ctx ending early is an error.
func FanOutPreflight(ctx context.Context, st *store.Store, log hclog.Logger, spec PreflightSpec, sweep func(late []string, rev int64)) ([]*golivev1.HostChecks, error) {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultPreflightTimeout
	}
	batch := "pf-" + hub.NewID()[:10]
	out := make([]*golivev1.HostChecks, len(spec.Hosts))
	var extra map[string][]*golivev1.CheckResult
	extraDone := make(chan struct{})
	if spec.Controller != nil && len(spec.Hosts) > 0 {
		ectx, ecancel := context.WithTimeout(ctx, timeout)
		go func() {
			defer close(extraDone)
			defer ecancel()
			extra = spec.Controller.PreflightChecks(ectx, spec.Service, spec.Hosts, spec.Skip)
		}()
	} else {
		close(extraDone)
	}
	// Whatever happens, the controller's checks end before this returns.
	defer func() { <-extraDone }()
	want := map[string]int{} // result key -> index in out
	answered := map[int]bool{}
	var cmdKeys []string
	lease, err := st.Client().Grant(ctx, int64((timeout+30*time.Second)/time.Second))
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
		_, tr, err := st.Commit(cctx, nil, ops)
		if err != nil {
			log.Warn("preflight: cannot delete its commands and results", "batch", batch, "error", err)
		}
		st.Client().Revoke(cctx, lease.ID)
		var late []string
		for k, i := range want {
			if !answered[i] {
				late = append(late, k)
			}
		}
		if err == nil && len(late) > 0 && sweep != nil {
			sweep(late, tr.Header.Revision)
		}
	}()
	now := time.Now()
	var ops []clientv3.Op
	for i, h := range spec.Hosts {
		out[i] = &golivev1.HostChecks{HostId: h}
		cmd := &golivev1.Command{Id: batch + "-" + h, IssuedAt: timestamppb.New(now),
			Action: &golivev1.Command_Preflight{Preflight: &golivev1.PreflightAction{
				Service: spec.Service, Release: spec.Release, SkipChecks: spec.Skip, ArtifactUrl: spec.ArtifactURL}}}
		cmdKeys = append(cmdKeys, st.CommandKey(h, cmd.Id))
		want[st.ResultKey(h, cmd.Id)] = i
		ops = append(ops, st.OpPutCommand(h, cmd, clientv3.WithLease(lease.ID)))
	}
	if len(ops) == 0 {
		return out, nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The commands go out in several transactions when there are many
	// hosts, and an answer may land before the last one: watch from before
	// the first (the lease's grant is older than every command).
	if _, _, err := st.Commit(wctx, nil, ops); err != nil {
		return nil, fmt.Errorf("preflight: write commands: %w", err)
	}
	log.Info("preflight sent", "batch", batch, "service", spec.Service, "release", spec.Release, "hosts", len(spec.Hosts), "skip", spec.Skip)
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
			out[i].Error = orDefault(res.Error, "the checks could not run ("+rollout.OutcomeWord(res.Outcome)+")")
		} else {
			out[i].Checks = res.Checks
			if out[i].Checks == nil {
				out[i].Checks = []*golivev1.CheckResult{}
			}
		}
		pending--
	}
	wch := st.Client().Watch(clientv3.WithRequireLeader(wctx), st.Keys().Results(), clientv3.WithPrefix(), clientv3.WithRev(lease.ResponseHeader.Revision+1))
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
			if r, err := st.Client().Get(gctx, k); err == nil && len(r.Kvs) == 1 {
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
	<-extraDone
	for _, hc := range out {
		hc.Checks = append(hc.Checks, extra[hc.HostId]...)
	}
	return out, nil
}

// lateAnswer bounds how long after a run an agent that got the command may
// still answer: its own run is bounded well below this.
const lateAnswer = time.Minute

// SweepLateResults deletes the results of keys that agents store after
// the run gave up on them (results are not leased), watching from rev,
// until they are all gone, lateAnswer passed, or ctx ended.
func SweepLateResults(ctx context.Context, st *store.Store, keys []string, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, lateAnswer)
	defer cancel()
	left := map[string]bool{}
	for _, k := range keys {
		left[k] = true
	}
	for ev := range st.Client().Watch(ctx, st.Keys().Results(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if ev.Err() != nil {
			return
		}
		for _, e := range ev.Events {
			k := string(e.Kv.Key)
			if e.Type == clientv3.EventTypePut && left[k] {
				if _, err := st.Client().Delete(ctx, k); err == nil {
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

// PreflightOK reports whether hosts allow going live: every host answered
// and no check failed.
func PreflightOK(hosts []*golivev1.HostChecks) bool { return len(PreflightFailures(hosts)) == 0 }

// PreflightFailures names each host's error and failed check, "host h1:
// tls: <detail>", in host order.
func PreflightFailures(hosts []*golivev1.HostChecks) []string {
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
	f := PreflightFailures(hosts)
	const show = 3
	if len(f) <= show {
		return strings.Join(f, "; ")
	}
	return strings.Join(f[:show], "; ") + fmt.Sprintf("; and %d more (see the rollout's preflight table)", len(f)-show)
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
func (e *Executor) rolloutPreflight(ctx context.Context, st rollout.State, req *golivev1.DeployRequest) (rollout.PreflightResult, []*golivev1.HostChecks) {
	key := st.ID
	e.preflights.Lock()
	defer e.preflights.Unlock()
	if e.preflights.m == nil {
		e.preflights.m = map[string]*preflightRun{}
	}
	if st.Phase != rollout.PhasePreflight {
		delete(e.preflights.m, key)
		return rollout.PreflightResult{}, nil
	}
	run := e.preflights.m[key]
	if run == nil || !run.start.Equal(st.PhaseStart) {
		e.startRolloutPreflight(ctx, st, req)
		return rollout.PreflightResult{Result: rollout.ResultPending}, nil
	}
	if !run.done {
		return rollout.PreflightResult{Result: rollout.ResultPending}, nil
	}
	return run.result, run.hosts
}

// startRolloutPreflight starts st's preflight run in its own goroutine
// (e.preflights must be locked). Its timeout stays well inside the
// rollout's progress deadline, so a silent host fails the preflight with a
// clear reason rather than the deadline.
func (e *Executor) startRolloutPreflight(ctx context.Context, st rollout.State, req *golivev1.DeployRequest) {
	key := st.ID
	run := &preflightRun{start: st.PhaseStart}
	e.preflights.m[key] = run
	timeout := DefaultPreflightTimeout
	if d := st.Plan.ProgressDeadline; d > 0 && d < 2*timeout {
		timeout = d / 2
	}
	spec := PreflightSpec{Service: st.Plan.Service, Release: st.Plan.Release, ArtifactURL: req.GetArtifactUrl(),
		Hosts: slices.Clone(st.Plan.Hosts), Skip: req.GetSkipChecks(), Timeout: timeout, Controller: e.cfg.PreflightChecks}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		hosts, err := FanOutPreflight(ctx, e.st, e.log, spec, func(late []string, rev int64) { SweepLateResults(ctx, e.st, late, rev) })
		e.preflights.Lock()
		defer e.preflights.Unlock()
		if e.preflights.m[key] != run {
			return // forgotten or superseded meanwhile
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				e.log.Warn("rollout preflight could not run; retrying on the next pass", "rollout_id", st.ID, "error", err)
			}
			delete(e.preflights.m, key)
			return
		}
		run.done, run.hosts = true, hosts
		run.result = rollout.PreflightResult{Result: rollout.ResultSucceeded}
		if !PreflightOK(hosts) {
			run.result = rollout.PreflightResult{Result: rollout.ResultFailed, Reason: preflightReason(hosts)}
		}
		e.log.Info("rollout preflight done", "rollout_id", st.ID, "ok", run.result.Result == rollout.ResultSucceeded, "reason", run.result.Reason)
		e.Kick()
	}()
}
