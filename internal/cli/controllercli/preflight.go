package controllercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// errPreflightFailed makes the command exit non-zero after its table.
var errPreflightFailed = errors.New("preflight failed")

func newPreflightCmd(co *clientOpts) *cobra.Command {
	req := &golivev1.PreflightRequest{}
	var selector string
	var within time.Duration
	cmd := &cobra.Command{
		Use:   "preflight",
		Short: "run the pre-live checks of a service on its hosts (needs no approval)",
		Long: "Run the pre-live checks of a service on its hosts and sum them up: " + strings.Join(preflight.Names, ", ") + ". " +
			"Every deploy runs them first and refuses to start on a failure. Exits 1 unless every host answered and no check failed.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" {
				return cli.Usagef("preflight needs --service")
			}
			if selector != "" {
				if len(req.Hosts) > 0 {
					return cli.Usagef("use --host or --selector, not both")
				}
				sel, err := rollout.ParseSelector(selector)
				if err != nil {
					return cli.Usagef("--selector: %v", err)
				}
				req.Selector = sel
			}
			if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
				return cli.Usagef("--skip-check: %v", err)
			}
			if within <= 0 {
				return cli.Usagef("--within must be positive")
			}
			req.Timeout = durationpb.New(within)
			// The controller waits up to --within for the hosts: give
			// the call that long and a margin.
			co.timeout = max(co.timeout, within+10*time.Second)
			var ok bool
			err := run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.PreflightResponse, error) {
				resp, err := c.Preflight(ctx, req)
				ok = err == nil && resp.Ok
				return resp, err
			}, func(resp *golivev1.PreflightResponse) any { return resp }, printPreflight)
			if err == nil && !ok {
				return errPreflightFailed
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service name")
	f.StringVar(&req.Release, "release", "", "release about to go live (the rollback target is judged against it)")
	f.StringVar(&req.ArtifactUrl, "artifact", "", "artifact URL: sizes the release for the disk check (default: the live release's size)")
	f.StringSliceVar(&req.Hosts, "host", nil, "host id to check (repeat or comma-separate; default: every connected host that runs the service)")
	f.StringVar(&selector, "selector", "", "agent labels key=value,... (all must match)")
	f.StringSliceVar(&req.SkipChecks, "skip-check", nil, "check to skip (repeat or comma-separate): "+strings.Join(preflight.Names, ", "))
	f.DurationVar(&within, "within", controller.DefaultPreflightTimeout, "how long to wait for the hosts' answers")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	cmd.RegisterFlagCompletionFunc("host", co.completeHosts)
	cmd.RegisterFlagCompletionFunc("skip-check", completeSkipChecks)
	return cmd
}

// printPreflight prints one line per host and check, then a summary.
func printPreflight(w io.Writer, resp *golivev1.PreflightResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCHECK\tSTATUS\tDETAIL")
	counts := map[string]int{}
	errs := 0
	for _, h := range resp.Hosts {
		if h.Error != "" {
			errs++
			fmt.Fprintf(tw, "%s\t-\terror\t%s\n", h.HostId, h.Error)
			continue
		}
		for _, c := range h.Checks {
			counts[c.Status]++
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.HostId, c.Name, c.Status, c.Detail)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "OK: nothing stops a rollout"
	if !resp.Ok {
		verdict = "NOT OK: a rollout would refuse to start (fix the failures, or skip a check with --skip-check NAME, audited)"
	}
	what := resp.Service
	if resp.Release != "" {
		what += "@" + resp.Release
	}
	_, err := fmt.Fprintf(w, "preflight of %s on %d hosts: %d pass, %d warn, %d fail, %d skip, %d hosts without answer: %s\n",
		what, len(resp.Hosts), counts["pass"], counts["warn"], counts["fail"], counts["skip"], errs, verdict)
	return err
}
