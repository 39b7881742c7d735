package controllercli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func newAgentsCmd(co *clientOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "list agents: state, heartbeat, services, the approval token each holds; `agents forget` drops a lost one",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ListAgentsResponse, error) {
				return c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
			}, func(resp *golivev1.ListAgentsResponse) any { return resp }, printAgents)
		},
	}
	cmd.AddCommand(newAgentsForgetCmd(co))
	return cmd
}

func printAgents(w io.Writer, resp *golivev1.ListAgentsResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tLAST HEARTBEAT\tTOKEN\tSERVICES\tHEALTH\tLAST RESULT\tLABELS")
	for _, a := range resp.Agents {
		var svcs, health []string
		for _, s := range a.Services {
			svcs = append(svcs, fmt.Sprintf("%s@%s", s.Name, orDash(s.CurrentRelease)))
			if h := healthWord(s); h != "-" {
				health = append(health, s.Name+":"+h)
			}
		}
		var labels []string
		for k, v := range a.Labels {
			labels = append(labels, k+"="+v)
		}
		last := "-"
		if a.LastHeartbeat != nil {
			last = time.Since(a.LastHeartbeat.AsTime()).Round(time.Second).String() + " ago"
		}
		result := "-"
		if r := lastResult(a); r != nil {
			result = fmt.Sprintf("%s %s@%s", rollout.OutcomeWord(r.Outcome), r.Service, orDash(r.Release))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", a.HostId, a.State, last, a.FencingToken,
			orDash(strings.Join(svcs, ",")), orDash(strings.Join(health, ",")), result, orDash(strings.Join(slices.Sorted(slices.Values(labels)), ",")))
	}
	return tw.Flush()
}

// preflightCommandPrefix starts the id of a preflight's command: its
// result checked a release, it did not deploy one.
const preflightCommandPrefix = "pf-"

// lastResult is the agent's newest deploy or rollback result (not a
// preflight's), or nil.
func lastResult(a *golivev1.Agent) *golivev1.CommandResult {
	for _, r := range a.RecentResults {
		if !strings.HasPrefix(r.CommandId, preflightCommandPrefix) {
			return r
		}
	}
	return nil
}

func newAgentsForgetCmd(co *clientOpts) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "forget HOST",
		Short: "delete a lost agent's record (a host taken out of service); a connected agent is refused; audited",
		Args:  cli.ExactArgs(1, "one HOST"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return co.completeHosts(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ForgetAgentResponse, error) {
				return c.ForgetAgent(ctx, &golivev1.ForgetAgentRequest{HostId: args[0], Reason: reason})
			}, func(resp *golivev1.ForgetAgentResponse) any { return resp }, func(w io.Writer, resp *golivev1.ForgetAgentResponse) error {
				_, err := fmt.Fprintf(w, "agent %s forgotten (if it connects again it is listed again)\n", resp.HostId)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}
