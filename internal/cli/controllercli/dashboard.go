package controllercli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// newDashboardCmd is `dashboard`, whose one subcommand, `login`, asks the
// controller for a signed link to its web dashboard.
func newDashboardCmd(co *clientOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "the controller's web dashboard (serve --dashboard-addr)",
		Args:  cli.NoArgs,
	}
	var ttl time.Duration
	login := &cobra.Command{
		Use:   "login",
		Short: "print a short-lived, single-use link that signs your browser in to the dashboard as you",
		Long: "Print a link to the dashboard of the controller at --addr, signed by that controller for your identity " +
			"(your operator certificate's name and roles; in dev mode without TLS, --as with every role). " +
			"Open it in your browser once, before it expires: it opens a session (an HttpOnly cookie). " +
			"A browser that presents your operator certificate needs no link.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 || ttl > 15*time.Minute {
				return cli.Usagef("--ttl %s: want a duration up to 15m", ttl)
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DashboardLinkResponse, error) {
				return c.DashboardLink(ctx, &golivev1.DashboardLinkRequest{Ttl: durationpb.New(ttl)})
			}, func(resp *golivev1.DashboardLinkResponse) any { return resp }, func(w io.Writer, resp *golivev1.DashboardLinkResponse) error {
				printDashboardLink(w, resp)
				return nil
			})
		},
	}
	login.Flags().DurationVar(&ttl, "ttl", 15*time.Minute, "how long the link may be used (at most 15m)")
	cmd.AddCommand(login)
	return cmd
}

func printDashboardLink(w io.Writer, resp *golivev1.DashboardLinkResponse) {
	fmt.Fprintf(w, "open this link in your browser (once, before %s):\n\n  %s\n\n", resp.ExpiresAt.AsTime().Local().Format(time.RFC3339), resp.Url)
	fmt.Fprintf(w, "it signs you in as %s (%s) for %s; keep it to yourself.\n", resp.Identity, strings.Join(resp.Roles, ", "),
		resp.SessionExpiresIn.AsDuration())
}
