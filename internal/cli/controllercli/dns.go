package controllercli

// `golive-controller dns show|set|failover|history`: the DNS records the
// controller manages (serve --dns-config FILE).

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func newDNSCmd(co *clientOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "DNS records the controller manages (serve --dns-config): show, set, failover, history",
		Example: "  golive-controller dns show\n" +
			"  golive-controller dns failover www.example.com --to green --reason \"blue is down\"",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDNSShowCmd(co), newDNSSetCmd(co), newDNSFailoverCmd(co), newDNSHistoryCmd(co))
	return cmd
}

func newDNSShowCmd(co *clientOpts) *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:     "show [NAME]",
		Short:   "what the zone's primary answers now (values, TTL) beside what golive stored, and the failover state",
		Example: "  golive-controller dns show\n  golive-controller dns show www.example.com -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &golivev1.DnsShowRequest{Type: typ}
			if len(args) == 1 {
				req.Name = args[0]
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DnsShowResponse, error) {
				return c.DnsShow(ctx, req)
			}, func(resp *golivev1.DnsShowResponse) any { return resp }, func(w io.Writer, resp *golivev1.DnsShowResponse) error {
				for i, r := range resp.Records {
					if i > 0 {
						fmt.Fprintln(w)
					}
					printDNSRecord(w, r)
				}
				if len(resp.Records) == 0 {
					fmt.Fprintln(w, "no DNS records managed (add failover blocks to --dns-config, or dns set one)")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "record type (default: the failover's, else A)")
	return cmd
}

func values(v []string) string {
	if len(v) == 0 {
		return "(none)"
	}
	return strings.Join(v, " ")
}

func printDNSRecord(w io.Writer, r *golivev1.DnsRecord) {
	fmt.Fprintf(w, "%s %s  (zone %s at %s)\n", r.Name, r.Type, r.Zone, r.Server)
	switch {
	case r.QueryError != "":
		fmt.Fprintf(w, "  serves:    unknown: %s\n", r.QueryError)
	case !r.ServedExists:
		fmt.Fprintln(w, "  serves:    no such record")
	default:
		fmt.Fprintf(w, "  serves:    %s  ttl %s\n", values(r.ServedValues), r.ServedTtl.AsDuration())
	}
	if r.StoredTtl != nil || len(r.StoredValues) > 0 {
		drift := ""
		if r.Drift {
			drift = "  DRIFT: the primary serves something else; golive's next change of it will be refused (someone else changed it)"
		}
		fmt.Fprintf(w, "  stored:    %s  ttl %s%s\n", values(r.StoredValues), r.StoredTtl.AsDuration(), drift)
	} else {
		fmt.Fprintln(w, "  stored:    nothing yet (golive has not read or changed it)")
	}
	if f := r.Failover; f != nil {
		fmt.Fprintf(w, "  failover:  active %s (primary %s, secondary %s, failback %s, %d bad checks switch, every %s)\n",
			f.Active, f.Primary, f.Secondary, f.Failback, f.Threshold, f.Interval.AsDuration())
		if f.LastCheck != nil {
			fmt.Fprintf(w, "  checks:    %d bad, %d good in a row; last %s ago: %s\n", f.Bad, f.Good, time.Since(f.LastCheck.AsTime()).Round(time.Second), orDash(f.LastAction))
			fmt.Fprintf(w, "  primary:   %s\n  secondary: %s\n", orDash(f.PrimaryHealth), orDash(f.SecondaryHealth))
		}
		if f.Pinned {
			fmt.Fprintln(w, "  pinned:    an operator moved it off the primary; automation only recommends")
		}
		if f.Blocked != "" {
			fmt.Fprintf(w, "  blocked:   %s\n", f.Blocked)
		}
		if f.Recommended != "" {
			fmt.Fprintf(w, "  RECOMMENDED: move to %s: %s\n    run: %s\n", f.Recommended, f.LastReason, f.Command)
		} else if f.LastAction == "hold" {
			fmt.Fprintf(w, "  HOLD:      %s\n", f.LastReason)
		}
		if f.LastSwitch != nil {
			fmt.Fprintf(w, "  switched:  %d times, last %s\n", f.Switches, f.LastSwitch.AsTime().UTC().Format(time.RFC3339))
			if f.LastSwitchBy != "" {
				fmt.Fprintf(w, "             by %s: %s\n", f.LastSwitchBy, orDash(f.LastSwitchReason))
			}
		}
	}
	if p := r.Pending; p != nil {
		fmt.Fprintf(w, "  IN FLIGHT: %s\n", dnsEntryLine(p))
	}
	if l := r.Last; l != nil {
		fmt.Fprintf(w, "  last:      %s\n", dnsEntryLine(l))
	}
}

func dnsEntryLine(e *golivev1.DnsHistoryEntry) string {
	s := fmt.Sprintf("#%d %s %s by %s at %s", e.Seq, e.Kind, e.Outcome, e.Actor, e.At.AsTime().UTC().Format(time.RFC3339))
	if e.ToPool != "" {
		s += fmt.Sprintf(" (%s -> %s)", orDash(e.FromPool), e.ToPool)
	}
	if len(e.NewValues) > 0 {
		s += " [" + values(e.OldValues) + "] -> [" + values(e.NewValues) + "]"
	}
	if e.Error != "" {
		s += ": " + e.Error
	}
	return s
}

func newDNSSetCmd(co *clientOpts) *cobra.Command {
	var typ, reason string
	var vals []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "set NAME --value V [--value V...]",
		Short: "replace a record's values on its zone's primary: a production change, needs a live approval; audited",
		Long: "Replace the values of NAME (type --type) on its zone's primary with one RFC 2136 update, signed with the\n" +
			"zone's TSIG key, whose prerequisite is the values golive last confirmed: a record someone else changed\n" +
			"since is refused, not overwritten. The change is confirmed by querying the primary. Like a deploy it\n" +
			"needs a live approval (golive-controller authorize) and is fenced on it.",
		Example: "  golive-controller dns set api.example.com --value 203.0.113.7 --ttl 60s --reason \"new api host\"",
		Args:    cli.ExactArgs(1, "one NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var all []string
			for _, v := range vals {
				for _, p := range strings.Split(v, ",") {
					if p = strings.TrimSpace(p); p != "" {
						all = append(all, p)
					}
				}
			}
			if len(all) == 0 {
				return cli.Usagef("--value is required (repeatable or comma-separated)")
			}
			if ttl < 0 || ttl%time.Second != 0 {
				return cli.Usagef("--ttl %s: want whole seconds (e.g. 30s)", ttl)
			}
			req := &golivev1.DnsSetRequest{Name: args[0], Type: typ, Values: all, Reason: reason}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DnsSetResponse, error) {
				return c.DnsSet(ctx, req)
			}, func(resp *golivev1.DnsSetResponse) any { return resp }, func(w io.Writer, resp *golivev1.DnsSetResponse) error {
				fmt.Fprintf(w, "%s %s set: %s (confirmed in %s)\n", resp.Result.Name, resp.Result.Type, values(resp.Result.NewValues), resp.Result.Latency.AsDuration().Round(time.Millisecond))
				printDNSRecord(w, resp.Record)
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&vals, "value", nil, "a value of the record (repeatable, or comma-separated)")
	cmd.Flags().StringVar(&typ, "type", "", "record type (default: the failover's, else A)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "TTL of the records; unset: the failover's ttl, else the stored TTL, else 30s (at most the failover's max_ttl)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func newDNSFailoverCmd(co *clientOpts) *cobra.Command {
	var to, reason string
	cmd := &cobra.Command{
		Use:   "failover NAME --to POOL",
		Short: "point a failover record at one of its pools now: the operator's safety path, no approval needed; audited",
		Long: "Point NAME at POOL (the failover's primary or secondary) with one confirmed RFC 2136 update. This is an\n" +
			"operator's safety action like rollback: it needs no approval and is always audited. Moving a record off\n" +
			"its primary pins it there: automation then only recommends, until an operator moves it back.",
		Example: "  golive-controller dns failover www.example.com --to green --reason \"blue datacenter down\"\n" +
			"  golive-controller dns failover www.example.com --to blue --reason \"blue is back\"",
		Args: cli.ExactArgs(1, "one NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return cli.Usagef("--to POOL is required")
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DnsFailoverResponse, error) {
				return c.DnsFailover(ctx, &golivev1.DnsFailoverRequest{Name: args[0], To: to, Reason: reason})
			}, func(resp *golivev1.DnsFailoverResponse) any { return resp }, func(w io.Writer, resp *golivev1.DnsFailoverResponse) error {
				fmt.Fprintf(w, "%s now points at pool %s: %s (confirmed in %s)\n", resp.Result.Name, resp.Result.ToPool, values(resp.Result.NewValues), resp.Result.Latency.AsDuration().Round(time.Millisecond))
				printDNSRecord(w, resp.Record)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the pool to point the record at")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func newDNSHistoryCmd(co *clientOpts) *cobra.Command {
	var typ string
	var limit uint32
	cmd := &cobra.Command{
		Use:     "history [NAME]",
		Short:   "a record's changes, recommendations and alerts, newest first",
		Example: "  golive-controller dns history www.example.com\n  golive-controller dns history --limit 5 -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &golivev1.DnsHistoryRequest{Type: typ, Limit: limit}
			if len(args) == 1 {
				req.Name = args[0]
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DnsHistoryResponse, error) {
				return c.DnsHistory(ctx, req)
			}, func(resp *golivev1.DnsHistoryResponse) any { return resp }, printDNSHistory)
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "record type (default: the failover's, else A)")
	cmd.Flags().Uint32Var(&limit, "limit", 50, "at most this many entries")
	return cmd
}

func printDNSHistory(w io.Writer, resp *golivev1.DnsHistoryResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tNAME\tKIND\tOUTCOME\tACTOR\tCHANGE\tREASON")
	for _, e := range resp.Entries {
		change := "[" + values(e.OldValues) + "] -> [" + values(e.NewValues) + "]"
		if e.ToPool != "" {
			change = orDash(e.FromPool) + " -> " + e.ToPool + " " + change
		}
		reason := e.Reason
		if e.Error != "" {
			reason = strings.TrimSpace(reason + " ERROR: " + e.Error)
		}
		if e.Command != "" {
			reason += " (run: " + e.Command + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.AsTime().UTC().Format(time.RFC3339), e.Name, e.Type, e.Kind, e.Outcome,
			e.Actor, change, orDash(reason))
	}
	return tw.Flush()
}
