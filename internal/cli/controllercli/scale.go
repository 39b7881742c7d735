package controllercli

// `golive-controller scale status|set`: scaling by demand (issue 17).

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func newScaleCmd(co *clientOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "instances of scaled services per host: status (demand, recommendation, last action), set",
		Long: "Services with a scale block in their agent's config run between min and max instances per host. The\n" +
			"controller's leader computes a recommendation every interval from the demand (real traffic, CPU, or a\n" +
			"PromQL query) and applies it only under a live approval; without one it only shows it. `scale set` is\n" +
			"the operator's manual path: allowed without an approval, within min/max, audited.",
		Example: "  golive-controller scale status\n" +
			"  golive-controller scale set --service web --instances 4 --reason \"launch\"",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newScaleStatusCmd(co), newScaleSetCmd(co))
	return cmd
}

func newScaleStatusCmd(co *clientOpts) *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "status [--service S]",
		Short: "per service and host: instances, demand, target, recommendation, last action and why, frozen",
		Example: "  golive-controller scale status\n" +
			"  golive-controller scale status --service web -o json",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ScaleStatusResponse, error) {
				return c.ScaleStatus(ctx, &golivev1.ScaleStatusRequest{Service: service})
			}, func(resp *golivev1.ScaleStatusResponse) any { return resp }, func(w io.Writer, resp *golivev1.ScaleStatusResponse) error {
				printScaleStatus(w, resp, time.Now())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only this service")
	return cmd
}

func printScaleStatus(w io.Writer, resp *golivev1.ScaleStatusResponse, now time.Time) {
	if len(resp.Entries) == 0 {
		fmt.Fprintln(w, "no scaled service (add a scale block to a service in the agent's config)")
		return
	}
	if resp.ApprovalLive {
		fmt.Fprintln(w, "automation: approved: recommendations are applied")
	} else {
		fmt.Fprintln(w, "automation: no live approval: recommendations are shown, nothing changes")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tHOST\tAGENT\tINSTANCES\tMIN-MAX\tDEMAND\tTARGET\tRECOMMENDED\tACTION")
	for _, e := range resp.Entries {
		inst := fmt.Sprint(e.Instances)
		if e.DesiredInstances != e.Instances {
			inst = fmt.Sprintf("%d (-> %d)", e.Instances, e.DesiredInstances)
		}
		demand := "-"
		if e.Demand != nil {
			demand = fmt.Sprintf("%s %s", fig(*e.Demand), metricUnit(e.Metric))
		}
		action := e.Action
		if e.Frozen {
			action += " (frozen)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d-%d\t%s\t%s/instance\t%d\t%s\n", e.Service, e.Host, e.AgentState, inst, e.Min, e.Max,
			demand, fig(e.Target), e.Recommendation, action)
	}
	tw.Flush()
	for _, e := range resp.Entries {
		fmt.Fprintf(w, "\n%s on %s:\n", e.Service, e.Host)
		if e.FrozenReason != "" {
			fmt.Fprintf(w, "  frozen:      %s\n", e.FrozenReason)
		}
		when := ""
		if e.EvaluatedAt != nil {
			when = fmt.Sprintf(" (%s ago)", now.Sub(e.EvaluatedAt.AsTime()).Round(time.Second))
		}
		fmt.Fprintf(w, "  why:         %s%s\n", e.Reason, when)
		if la := e.LastAction; la != nil {
			outcome := la.Outcome
			if la.Error != "" {
				outcome += ": " + la.Error
			}
			fmt.Fprintf(w, "  last action: %d -> %d by %s %s ago, %s; %s\n", la.From, la.To, la.Actor,
				now.Sub(la.At.AsTime()).Round(time.Second), outcome, la.Reason)
		}
		if e.Command != "" {
			fmt.Fprintf(w, "  to apply:    %s\n", e.Command)
		}
	}
}

func metricUnit(m string) string {
	switch m {
	case "rps":
		return "rps"
	case "cpu":
		return "cores"
	}
	return m
}

func fig(v float64) string {
	s := strings.TrimRight(fmt.Sprintf("%.2f", v), "0")
	return strings.TrimSuffix(s, ".")
}

func newScaleSetCmd(co *clientOpts) *cobra.Command {
	var service, reason string
	var instances int
	var hosts []string
	cmd := &cobra.Command{
		Use:   "set --service S --instances N [--hosts H,...]",
		Short: "set a scaled service's instances per host: the operator's path, no approval needed, within min/max; audited",
		Long: "Set how many instances of SERVICE run on each host (--hosts, default every host with its scale block).\n" +
			"Refused outside the scale block's [min, max], for a host whose agent is not connected, and while a\n" +
			"rollout runs for the service. Needs the deployer role. With a live approval, automatic scaling may\n" +
			"change the count again later: an increase starts the scale-up cooldown and the count stays in the\n" +
			"scale-down window.",
		Example: "  golive-controller scale set --service web --instances 4\n" +
			"  golive-controller scale set --service web --instances 2 --hosts web-1,web-2 --reason \"maintenance\"",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if service == "" {
				return cli.Usagef("--service is required")
			}
			if instances < 1 {
				return cli.Usagef("--instances %d: want at least 1", instances)
			}
			var hs []string
			for _, h := range hosts {
				for _, p := range strings.Split(h, ",") {
					if p = strings.TrimSpace(p); p != "" {
						hs = append(hs, p)
					}
				}
			}
			req := &golivev1.ScaleSetRequest{Service: service, Instances: uint32(instances), Hosts: hs, Reason: reason}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ScaleSetResponse, error) {
				return c.ScaleSet(ctx, req)
			}, func(resp *golivev1.ScaleSetResponse) any { return resp }, func(w io.Writer, resp *golivev1.ScaleSetResponse) error {
				for i, a := range resp.Actions {
					fmt.Fprintf(w, "%s on %s: %d -> %d (command %s)\n", service, resp.Hosts[i], a.From, a.To, a.CommandId)
				}
				fmt.Fprintln(w, "follow with: golive-controller scale status --service "+service)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "the service (required)")
	cmd.Flags().IntVar(&instances, "instances", 0, "instances per host (required, within the scale block's min and max)")
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "hosts (comma-separated; default every host with the service's scale block)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (audited)")
	return cmd
}
