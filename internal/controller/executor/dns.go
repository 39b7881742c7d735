package executor

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/controller/store"
	"github.com/golive/golive/internal/rollout"
)

// DNS changes of rollouts (rollout.ChangeDNS): like the pre-live checks,
// they run off the loop, one goroutine per change, started by the pass
// that finds the record asking for a change (result pending) that the DNS
// record's history does not know. The change is tagged (rollout.DNSTag) in
// that history, so whoever leads next finds it done, failed or in flight
// and never sends it twice.

// DNSChanger makes rollouts' DNS changes (the controller's DNS part).
type DNSChanger interface {
	// ObserveRolloutDNS says what the DNS record's history knows of the
	// change tag of t (a zero Result: not attempted). A change left in
	// flight by a controller that stopped is resolved from what the
	// primary answers, once its grace passed.
	ObserveRolloutDNS(ctx context.Context, tag string, t rollout.DNSTarget) (rollout.DNSResult, error)
	// ApplyRolloutDNS points t's records at values (expect: only while they
	// serve expect; nil for a deploy's set), fenced on fences, and waits
	// until the primary answers. retry says it did not start (another
	// change in flight, a fence, etcd): the next pass may ask again.
	ApplyRolloutDNS(ctx context.Context, fences []clientv3.Cmp, token int64, actor, tag string, t rollout.DNSTarget, values, expect []string) (res rollout.DNSResult, retry bool)
}

// dnsRuns are the DNS changes this executor runs or ran.
type dnsRuns struct {
	mu      sync.Mutex
	running map[string]bool
	done    map[string]rollout.DNSResult
}

// rolloutDNS observes rec's DNS changes and starts those it should run.
func (e *Executor) rolloutDNS(ctx context.Context, fence clientv3.Cmp, rec store.Record) []rollout.DNSObservation {
	st := rec.State
	if len(st.Plan.DNS) == 0 {
		return nil
	}
	out := make([]rollout.DNSObservation, len(st.Plan.DNS))
	rollingBack := st.Phase == rollout.PhaseRollingBack
	for i, t := range st.Plan.DNS {
		d := st.DNS[i]
		for _, undo := range []bool{false, true} {
			r := d.Set
			if undo {
				r = d.Undo
			}
			tag := rollout.DNSTag(st.ID, i, undo)
			if r.Result != rollout.ResultPending {
				e.dnsForget(tag)
				continue
			}
			got, running := e.dnsKnown(tag)
			if got.Result == rollout.ResultNone && !running && e.cfg.DNS != nil {
				var err error
				if got, err = e.cfg.DNS.ObserveRolloutDNS(ctx, tag, t); err != nil {
					e.log.Warn("observe a rollout's dns change", "rollout_id", st.ID, "name", t.Name, "type", t.Type, "error", err)
					continue
				}
			}
			if got.Result != rollout.ResultNone || running {
				if undo {
					out[i].Undo = got
				} else {
					out[i].Set = got
				}
				continue
			}
			// Not attempted: start it when the rollout is where it runs.
			switch {
			case e.cfg.DNS == nil:
				res := rollout.DNSResult{Result: rollout.ResultFailed, Error: "this controller has no --dns-config"}
				if undo {
					out[i].Undo = res
				} else {
					out[i].Set = res
				}
			case st.Plan.IsRollback() && !undo && rollingBack:
				// An operator's rollback restores: fenced on the leader only.
				e.startDNS(ctx, []clientv3.Cmp{fence}, 0, rec.CreatedBy, tag, t, t.Values, t.Expect)
			case !st.Plan.IsRollback() && !undo && st.Phase == rollout.PhaseValidating && st.Step == rollout.StepDNS:
				// The deploy's set: fenced on the leader and the approval.
				e.startDNS(ctx, []clientv3.Cmp{fence, e.cfg.Approvals.Fence(st.Token)}, st.Token, rec.CreatedBy, tag, t, t.Values, nil)
			case !st.Plan.IsRollback() && !undo && rollingBack:
				// Aborted before the set started: it never will.
				out[i].Set = rollout.DNSResult{Result: rollout.ResultCancelled, Error: "not started: the rollout was aborted first"}
			case undo && rollingBack && d.Set.Result == rollout.ResultSucceeded:
				// An abort's restore of what the set changed: the operator's.
				e.startDNS(ctx, []clientv3.Cmp{fence}, 0, rec.CreatedBy, tag, t, d.Set.Before, d.Set.After)
			}
		}
	}
	return out
}

func (e *Executor) dnsKnown(tag string) (rollout.DNSResult, bool) {
	e.dns.mu.Lock()
	defer e.dns.mu.Unlock()
	return e.dns.done[tag], e.dns.running[tag]
}

func (e *Executor) dnsForget(tag string) {
	e.dns.mu.Lock()
	defer e.dns.mu.Unlock()
	delete(e.dns.done, tag)
}

// startDNS runs one change in a goroutine Run waits for.
func (e *Executor) startDNS(ctx context.Context, fences []clientv3.Cmp, token int64, actor, tag string, t rollout.DNSTarget, values, expect []string) {
	e.dns.mu.Lock()
	if e.dns.running == nil {
		e.dns.running, e.dns.done = map[string]bool{}, map[string]rollout.DNSResult{}
	}
	if e.dns.running[tag] {
		e.dns.mu.Unlock()
		return
	}
	e.dns.running[tag] = true
	e.dns.mu.Unlock()
	if expect == nil && t.Restore {
		expect = []string{}
	}
	e.log.Info("rollout dns change", "tag", tag, "name", t.Name, "type", t.Type, "pool", t.Pool, "fencing_token", token)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		res, retry := e.cfg.DNS.ApplyRolloutDNS(ctx, fences, token, actor, tag, t, values, expect)
		e.dns.mu.Lock()
		delete(e.dns.running, tag)
		if !retry {
			e.dns.done[tag] = res
		}
		e.dns.mu.Unlock()
		if retry {
			e.log.Warn("rollout dns change not started; retried on a later pass", "tag", tag, "error", res.Error)
		}
		e.Kick()
	}()
}
