package controller

// The dns preflight check's TTL part, run by the controller itself.
//
// A host in a failover pool is only as quickly replaceable as the TTL its
// failover name is served with: after a switch, resolvers and clients keep
// the old answer that long. The check runs here rather than on the agents
// because only the controller knows which names fail over between which
// pools (--dns-config) and can ask the zone's primary, TSIG-signed, for the
// TTL it serves: an agent's resolver answers from its cache, with a TTL
// counting down, and knows nothing of failover names. Its result is added
// to each host of the preflight that is in one of the failover's pools, as
// a "dns" check beside the agent's own (the domain resolves), so a rollout's
// preflight refuses on it like on any host check, and --skip-check dns
// skips it too.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/preflight"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// dnsPreflightTimeout bounds the TTL queries of one preflight.
const dnsPreflightTimeout = 10 * time.Second

// PreflightChecks returns, per host of hosts that is in a failover's
// primary or secondary pool, the TTL check of each such failover name
// (executor.ControllerChecks). A controller without DNS returns nil.
func (d *dnsService) PreflightChecks(ctx context.Context, _ string, hosts, skip []string) map[string][]*golivev1.CheckResult {
	if d == nil || len(d.cfg.Failovers) == 0 || len(hosts) == 0 {
		return nil
	}
	agents := map[string]*golivev1.Agent{}
	if list, err := d.s.hub.Agents(ctx); err == nil {
		for _, a := range list {
			agents[a.HostId] = a
		}
	}
	// Which failovers concern which of the hosts.
	byFailover := map[*dnsconfig.Failover][]string{}
	var failovers []*dnsconfig.Failover
	for _, f := range d.cfg.Failovers {
		var in []string
		for _, pool := range []string{f.Primary, f.Secondary} {
			members := poolHosts(d.cfg.Pool(pool), agents)
			for _, h := range hosts {
				if slices.Contains(members, h) && !slices.Contains(in, h) {
					in = append(in, h)
				}
			}
		}
		if len(in) > 0 {
			byFailover[f] = in
			failovers = append(failovers, f)
		}
	}
	if len(failovers) == 0 {
		return nil
	}
	results := make([]preflight.Result, len(failovers))
	if slices.Contains(skip, preflight.NameDNS) {
		for i, f := range failovers {
			results[i] = preflight.Result{Name: preflight.NameDNS, Status: preflight.StatusSkip,
				Detail: fmt.Sprintf("Check dns (the TTL of failover name %s) was skipped on request; make sure the skip is intended, it is audited.", f.Name)}
		}
	} else {
		qctx, cancel := context.WithTimeout(ctx, dnsPreflightTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for i, f := range failovers {
			wg.Add(1)
			go func() { defer wg.Done(); results[i] = d.ttlCheck(qctx, f) }()
		}
		wg.Wait()
	}
	out := map[string][]*golivev1.CheckResult{}
	for i, f := range failovers {
		r := results[i]
		for _, h := range byFailover[f] {
			out[h] = append(out[h], &golivev1.CheckResult{Name: r.Name, Status: string(r.Status), Detail: r.Detail})
		}
	}
	for h := range out {
		sort.SliceStable(out[h], func(i, j int) bool { return out[h][i].Detail < out[h][j].Detail })
	}
	return out
}

// ttlCheck asks the zone's primary for f's record and judges its TTL.
func (d *dnsService) ttlCheck(ctx context.Context, f *dnsconfig.Failover) preflight.Result {
	res := func(st preflight.Status, format string, args ...any) preflight.Result {
		return preflight.Result{Name: preflight.NameDNS, Status: st, Detail: fmt.Sprintf(format, args...)}
	}
	c, err := d.client(f.Name)
	if err != nil {
		return res(preflight.StatusFail, "Failover name %s has no zone in --dns-config (%v); fix the config before going live.", f.Name, err)
	}
	a, err := c.Query(ctx, f.Name, string(f.Type))
	if err != nil {
		return res(preflight.StatusFail, "Cannot ask the zone's primary %s for failover name %s's TTL (%v): a failover could not be confirmed either; make the primary answer before going live.",
			c.Server(), f.Name, err)
	}
	if !a.Exists {
		return res(preflight.StatusFail, "Failover name %s %s does not exist at the zone's primary %s: clients cannot resolve it; publish it (golive-controller dns failover %s --to %s) before going live.",
			f.Name, f.Type, c.Server(), f.Name, f.Primary)
	}
	if a.TTL > f.MaxTTL {
		return res(preflight.StatusFail, "Failover name %s is served by its primary %s with TTL %s, above its max_ttl %s: after a failover, clients may hold the old answer for up to %s; lower the record's TTL to at most %s (golive-controller dns set %s %s %s --ttl %s) before going live.",
			f.Name, c.Server(), a.TTL, f.MaxTTL, a.TTL, f.MaxTTL, f.Name, f.Type, strings.Join(a.Values, " "), f.TTL)
	}
	return res(preflight.StatusPass, "Failover name %s is served by its primary %s with TTL %s (max_ttl %s): clients follow a failover within %s; nothing to do.",
		f.Name, c.Server(), a.TTL, f.MaxTTL, a.TTL)
}
