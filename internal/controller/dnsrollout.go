package controller

// DNS in rollouts (deploy --dns NAME=POOL): the deploy's targets, checked
// before anything is written; the restores an operator's rollback of such
// a deploy makes; and the executor's DNSChanger, which makes each change
// through the one write path of a record (change), tagged with the
// rollout's tag so any leader finds it done.
//
// Decisions:
//   - The records are set after the last gate passed, fenced on the leader
//     and the rollout's approval token (like its waves); a revoke before
//     the update is sent halts the rollout, one already sent completes.
//   - A failed set (REFUSED/NOTAUTH, server down, the record changed by
//     someone else: the prerequisite) ends the rollout failed with the
//     reason; the hosts keep the release, which passed every gate, and the
//     records keep what they served. The operator decides: fix and `dns
//     set`, or `rollback` (which restores the records the rollout did set).
//   - A restore (an abort during the step, an operator's rollback of the
//     service's latest rollout when it was a deploy that set records) puts
//     back what the record served before, only while it still serves what
//     the rollout set: a record changed since is left as is (skipped, said
//     in the view). It is the operator's action: no approval needed.
//   - A failover record is the failover's: --dns refuses it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/rollout"
)

// dnsTargets checks a deploy's --dns NAME=POOL against the DNS config and
// returns the records it sets: an A record for the pool's IPv4 addresses,
// an AAAA for its IPv6 ones.
func (s *Server) dnsTargets(specs []string) ([]rollout.DNSTarget, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	d := s.dns
	if d == nil {
		return nil, fmt.Errorf("%w: --dns needs a controller that manages DNS: start `golive-controller serve` with --dns-config FILE (see deploy/examples/dns.hcl)", apierr.ErrConflict)
	}
	var out []rollout.DNSTarget
	seen := map[string]bool{}
	for _, spec := range specs {
		raw, pool, ok := strings.Cut(spec, "=")
		if !ok || strings.TrimSpace(raw) == "" || strings.TrimSpace(pool) == "" {
			return nil, fmt.Errorf("%w: --dns %q: want NAME=POOL (e.g. www.example.test=green)", apierr.ErrInvalid, spec)
		}
		name, pool := dnsconfig.CanonicalName(strings.TrimSpace(raw)), strings.TrimSpace(pool)
		if _, err := d.set.For(name); err != nil {
			return nil, fmt.Errorf("%w: --dns %s: %s is in no zone of --dns-config (zones: %s)", apierr.ErrInvalid, spec, name, d.zoneNames())
		}
		p := d.cfg.Pool(pool)
		if p == nil {
			return nil, fmt.Errorf("%w: --dns %s: no pool %q in --dns-config (pools: %s)", apierr.ErrInvalid, spec, pool, d.poolNames())
		}
		if f := d.cfg.Failover(name); f != nil {
			return nil, fmt.Errorf("%w: --dns %s: %s is a failover record: its health-checked failover owns it (use `golive-controller dns failover %s --to %s`)",
				apierr.ErrInvalid, spec, name, name, pool)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: --dns names %s twice", apierr.ErrInvalid, name)
		}
		seen[name] = true
		for _, typ := range []dnsconfig.RRType{dnsconfig.TypeA, dnsconfig.TypeAAAA} {
			if vals := p.Values(typ); len(vals) > 0 {
				out = append(out, rollout.DNSTarget{Name: name, Type: string(typ), Pool: pool, Values: sortedValues(vals)})
			}
		}
	}
	return out, nil
}

func (d *dnsService) zoneNames() string {
	var n []string
	for _, z := range d.cfg.Zones {
		n = append(n, z.Name)
	}
	return strings.Join(n, ", ")
}

func (d *dnsService) poolNames() string {
	var n []string
	for _, p := range d.cfg.Pools {
		n = append(n, p.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// dnsRestores are the restores of an operator's rollback of the whole
// service: when the service's latest rollout is a deploy that set records,
// put back what they served before it.
func (s *Server) dnsRestores(ctx context.Context, service string) ([]rollout.DNSTarget, error) {
	recs, err := s.store.ListRollouts(ctx, func(key string, err error) {
		s.log.Warn("unreadable rollout record", "key", key, "error", err)
	})
	if err != nil {
		return nil, err
	}
	var last *rollout.State
	for i := range recs {
		st := &recs[i].State
		if st.Plan.Service == service && (last == nil || st.CreatedAt.After(last.CreatedAt)) {
			last = st
		}
	}
	if last == nil || last.Plan.IsRollback() {
		return nil, nil
	}
	var out []rollout.DNSTarget
	for i, t := range last.Plan.DNS {
		if i >= len(last.DNS) {
			break
		}
		d := last.DNS[i]
		if d.Set.Result != rollout.ResultSucceeded || d.Undo.Result == rollout.ResultSucceeded {
			continue
		}
		out = append(out, rollout.DNSTarget{Name: t.Name, Type: t.Type, Values: slices.Clone(d.Set.Before), Restore: true,
			Expect: slices.Clone(d.Set.After), FromRollout: last.ID})
	}
	return out, nil
}

// ObserveRolloutDNS implements executor.DNSChanger.
func (d *dnsService) ObserveRolloutDNS(ctx context.Context, tag string, t rollout.DNSTarget) (rollout.DNSResult, error) {
	r, err := d.load(ctx, t.Name, t.Type)
	if err != nil || r == nil {
		return rollout.DNSResult{}, err
	}
	if p := r.Pending; p != nil && p.Rollout == tag {
		if r, err = d.resolvePending(ctx, r, false); err != nil {
			return rollout.DNSResult{}, err
		}
		if r.Pending != nil && r.Pending.Rollout == tag {
			return rollout.DNSResult{Result: rollout.ResultPending, Before: r.Pending.Old, After: r.Pending.New}, nil
		}
	}
	if e := r.Last; e != nil && e.Rollout == tag {
		return dnsRolloutResult(e), nil
	}
	// Later changes may have followed: the newest history entries.
	resp, err := d.s.cli.Get(ctx, d.s.keys.DNSHistory(t.Name, t.Type), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(200))
	if err != nil {
		return rollout.DNSResult{}, fmt.Errorf("%w: read dns history: %v", apierr.ErrUnavailable, err)
	}
	for _, kv := range resp.Kvs {
		var e dnsEntry
		if json.Unmarshal(kv.Value, &e) == nil && e.Rollout == tag {
			return dnsRolloutResult(&e), nil
		}
	}
	return rollout.DNSResult{}, nil
}

func dnsRolloutResult(e *dnsEntry) rollout.DNSResult {
	res := rollout.DNSResult{Result: rollout.ResultFailed, Before: slices.Clone(e.Old), After: slices.Clone(e.New), Error: e.Error}
	switch e.Outcome {
	case dnsConfirmed:
		res.Result, res.At, res.Error = rollout.ResultSucceeded, e.At, ""
	case dnsInFlight:
		res.Result = rollout.ResultPending
	case dnsUnknown:
		res.Error = "outcome unknown: " + e.Error
	}
	return res
}

// ApplyRolloutDNS implements executor.DNSChanger.
func (d *dnsService) ApplyRolloutDNS(ctx context.Context, fences []clientv3.Cmp, token int64, actor, tag string, t rollout.DNSTarget,
	values, expect []string) (rollout.DNSResult, bool) {
	failed := func(err error) (rollout.DNSResult, bool) {
		return rollout.DNSResult{Result: rollout.ResultFailed, Error: err.Error()}, false
	}
	dnsFailure := func(err error) bool {
		return errors.Is(err, dnsupdate.ErrUnreachable) || errors.Is(err, dnsupdate.ErrServer) || errors.Is(err, dnsupdate.ErrRefused) ||
			errors.Is(err, dnsupdate.ErrInvalid) || errors.Is(err, apierr.ErrInvalid)
	}
	values = sortedValues(values)
	r, err := d.adopt(ctx, t.Name, t.Type)
	if err != nil {
		if dnsFailure(err) {
			return failed(err)
		}
		return rollout.DNSResult{Error: err.Error()}, true
	}
	if r.Pending != nil {
		if r, err = d.resolvePending(ctx, r, false); err != nil || r.Pending != nil {
			return rollout.DNSResult{Error: fmt.Sprintf("another change of %s %s is in flight", t.Name, t.Type)}, true
		}
	}
	now := time.Now()
	if slices.Equal(r.Values, values) {
		// Nothing to send: it serves what is asked already.
		return rollout.DNSResult{Result: rollout.ResultSucceeded, Before: r.Values, After: values, At: now}, false
	}
	if expect != nil && !slices.Equal(r.Values, sortedValues(expect)) {
		return rollout.DNSResult{Result: rollout.ResultCancelled, Before: r.Values, After: r.Values,
			Error: fmt.Sprintf("not restored: the record serves [%s], not the [%s] the rollout set (changed since): left as is",
				strings.Join(r.Values, " "), strings.Join(expect, " "))}, false
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = r.TTL
	}
	if ttl < time.Second {
		ttl = dnsDefaultTTL
	}
	reason := fmt.Sprintf("rollout %s: --dns %s=%s", strings.Split(tag, "/")[0], t.Name, t.Pool)
	if t.Restore || expect != nil {
		reason = fmt.Sprintf("rollout %s: restore what rollout %s changed", strings.Split(tag, "/")[0], orNone(t.FromRollout))
	}
	e, _, err := d.change(ctx, dnsChange{name: t.Name, typ: t.Type, kind: dnsKindRollout, actor: actor, source: "controller", reason: reason,
		values: values, ttl: ttl, to: t.Pool, fences: fences, token: token, rollout: tag})
	if e == nil {
		if err != nil && dnsFailure(err) {
			return failed(err)
		}
		msg := "not started"
		if err != nil {
			msg = err.Error()
		}
		return rollout.DNSResult{Error: msg}, true
	}
	res := dnsRolloutResult(e)
	if res.Result != rollout.ResultSucceeded && err != nil {
		res.Error = err.Error()
	}
	return res, false
}
