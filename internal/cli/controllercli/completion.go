package controllercli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Dynamic shell completion (cobra's `completion bash|zsh|fish`): rollout
// ids, services and hosts come from the controller at --addr, in a short
// call; a controller that does not answer completes nothing.

const completionTimeout = 2 * time.Second

type completeFunc = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

// complete runs f against the controller with a short timeout.
func (co *clientOpts) complete(cmd *cobra.Command, f func(context.Context, golivev1.ControlServiceClient) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	var out []string
	saved := co.timeout
	co.timeout = completionTimeout
	defer func() { co.timeout = saved }()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	err := co.call(ctx, func(ctx context.Context, c golivev1.ControlServiceClient) (err error) {
		out, err = f(ctx, c)
		return err
	})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeRolloutIDs completes a ROLLOUT_ID argument: the running rollouts
// only (watch, pause, resume, abort) or every recent one (rollout).
func (co *clientOpts) completeRolloutIDs(runningOnly bool) completeFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return co.complete(cmd, func(ctx context.Context, c golivev1.ControlServiceClient) ([]string, error) {
			resp, err := c.ListRollouts(ctx, &golivev1.ListRolloutsRequest{Limit: 50})
			if err != nil {
				return nil, err
			}
			var out []string
			for _, r := range resp.Rollouts {
				if runningOnly && rollout.TerminalState(r.State) {
					continue
				}
				out = append(out, r.Id+"\t"+r.Kind+" "+r.Service+"@"+orDash(r.Release)+" "+r.State)
			}
			return out, nil
		})
	}
}

// completeServices completes --service with the services agents run.
func (co *clientOpts) completeServices(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	return co.complete(cmd, func(ctx context.Context, c golivev1.ControlServiceClient) ([]string, error) {
		resp, err := c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, a := range resp.Agents {
			for _, s := range a.Services {
				if !slices.Contains(out, s.Name) {
					out = append(out, s.Name)
				}
			}
		}
		slices.Sort(out)
		return out, nil
	})
}

// completeHosts completes a host id (or a comma-separated list of them).
func (co *clientOpts) completeHosts(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	prefix := ""
	if i := strings.LastIndex(toComplete, ","); i >= 0 {
		prefix = toComplete[:i+1]
	}
	return co.complete(cmd, func(ctx context.Context, c golivev1.ControlServiceClient) ([]string, error) {
		resp, err := c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, a := range resp.Agents {
			out = append(out, prefix+a.HostId+"\t"+a.State)
		}
		return out, nil
	})
}

// completeSkipChecks completes --skip-check with the pre-live checks' names.
func completeSkipChecks(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	return slices.Clone(preflight.Names), cobra.ShellCompDirectiveNoFileComp
}

// completeOutput completes -o.
func completeOutput(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	return []string{"text\ttables and sentences", "json\tone JSON document (watch: one object per line)"}, cobra.ShellCompDirectiveNoFileComp
}
