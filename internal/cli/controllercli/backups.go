package controllercli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// newBackupsCmd lists the database backups agents took (and proved
// restorable) before migrations, and the safety backups of restores.
func newBackupsCmd(co *clientOpts) *cobra.Command {
	req := &golivev1.ListBackupsRequest{}
	cmd := &cobra.Command{
		Use:   "backups",
		Short: "database backups taken (and restore-verified) before migrations: id, host, size, tables, rows, releases",
		Long: "List the database backups of a service, newest first. Agents take one before every migration and\n" +
			"prove it by restoring it into a scratch database and comparing every table's row count.\n" +
			"Restore one with: golive-controller rollback --service S --restore-db ID --yes",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" {
				return cli.Usagef("backups needs --service")
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ListBackupsResponse, error) {
				return c.ListBackups(ctx, req)
			}, func(resp *golivev1.ListBackupsResponse) any { return resp }, func(w io.Writer, resp *golivev1.ListBackupsResponse) error {
				if len(resp.Backups) == 0 {
					on := ""
					if req.HostId != "" {
						on = " on " + req.HostId
					}
					fmt.Fprintf(w, "no backups of %s%s (agents take one before every migration)\n", req.Service, on)
					return nil
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tHOST\tSIZE\tTABLES\tROWS\tRELEASE\tCREATED\tVERIFIED")
				for _, b := range resp.Backups {
					var rows int64
					for _, t := range b.Tables {
						rows += t.Rows
					}
					verified := "NO"
					if b.VerifiedAt != nil {
						verified = stamp(b.VerifiedAt.AsTime())
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s→%s\t%s\t%s\n", b.Id, b.HostId, humanBytes(b.Size), len(b.Tables), rows,
						orDash(b.ReleaseBefore), orDash(b.ReleaseAfter), stamp(b.CreatedAt.AsTime()), verified)
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service name")
	f.StringVar(&req.HostId, "host", "", "only backups made on this host")
	f.Uint32Var(&req.Limit, "limit", 0, "at most this many, newest first (0: all)")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	cmd.RegisterFlagCompletionFunc("host", co.completeHosts)
	return cmd
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

// humanBytes prints n in B, KiB, MiB, GiB or TiB with one decimal.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || u == "TiB" {
			return fmt.Sprintf("%.1f%s", v, u)
		}
	}
	return ""
}
