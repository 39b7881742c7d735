package controllercli

import (
	"context"
	"slices"
	"strings"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Checks of a deploy or rollback against what the controller knows of the
// fleet, made in the CLI before the rollout is created: a command line the
// fleet cannot carry out is a usage error (exit 2), not a rollout that
// fails on every host.

// targets are the agents a deploy or rollback of service would reach:
// those named (hosts), else every agent that runs the service.
func targets(agents []*golivev1.Agent, service string, hosts []string) []*golivev1.Agent {
	var out []*golivev1.Agent
	for _, a := range agents {
		if len(hosts) > 0 && !slices.Contains(hosts, a.HostId) {
			continue
		}
		for _, s := range a.Services {
			if s.Name == service {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func serviceOn(a *golivev1.Agent, service string) *golivev1.ServiceState {
	for _, s := range a.Services {
		if s.Name == service {
			return s
		}
	}
	return nil
}

// checkWeight refuses --weight when a target host runs the service in
// restart mode: a weighted canary needs two slots (the agents report each
// service's swap_mode).
func (co *clientOpts) checkWeight(ctx context.Context, c golivev1.ControlServiceClient, req *golivev1.DeployRequest) error {
	resp, err := c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		return err
	}
	var restart []string
	for _, a := range targets(resp.Agents, req.Service, req.Hosts) {
		if s := serviceOn(a, req.Service); s != nil && s.SwapMode == string(agentconfig.SwapRestart) {
			restart = append(restart, a.HostId)
		}
	}
	if len(restart) > 0 {
		return cli.Usagef("--weight %d%%: a weighted canary needs blue-green hosts, and %s run%s %s in restart mode (one slot: no share of traffic to move); drop --weight or name blue-green --hosts",
			req.WeightPercent, strings.Join(restart, ","), plural(len(restart) == 1, "s", ""), req.Service)
	}
	return nil
}

func plural(one bool, ifOne, ifMany string) string {
	if one {
		return ifOne
	}
	return ifMany
}

// checkRollbackTarget refuses --to RELEASE that no host of the service is
// known to have. Agents report only their current and previous release, not
// every release on disk, so the check is against what the controller knows:
// those, and the releases of the service's past deploys that succeeded on
// a host (it may keep older ones: the agent still refuses one it lacks).
func (co *clientOpts) checkRollbackTarget(ctx context.Context, c golivev1.ControlServiceClient, req *golivev1.RollbackRequest) error {
	resp, err := c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, a := range targets(resp.Agents, req.Service, req.Hosts) {
		if s := serviceOn(a, req.Service); s != nil {
			known[s.CurrentRelease], known[s.PreviousRelease] = true, true
		}
	}
	if known[req.ToRelease] {
		return nil
	}
	hist, err := c.ListRollouts(ctx, &golivev1.ListRolloutsRequest{Service: req.Service, Limit: 200})
	if err != nil {
		return err
	}
	for _, r := range hist.Rollouts {
		for _, h := range r.Hosts {
			if r.Release == req.ToRelease && h.State == "succeeded" {
				return nil
			}
		}
	}
	delete(known, "")
	list := slices.Sorted(func(yield func(string) bool) {
		for k := range known {
			if !yield(k) {
				return
			}
		}
	})
	return cli.Usagef("--to %q: no host of %s is known to have that release (current and previous releases on its hosts: %s; nor did a deploy of it succeed): see `golive-controller agents` and `golive-controller history --service %s`",
		req.ToRelease, req.Service, orDash(strings.Join(list, ", ")), req.Service)
}
