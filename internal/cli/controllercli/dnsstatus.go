package controllercli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/metadata"

	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/controller"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// DNS state in status and watch: each failover record as the controller
// stored it (StatusResponse.dns): the pool it serves, the primary's health
// as judged, the bad-check streak, pinned/blocked, the last switch.

// dnsRole says whether pool is the failover's primary or secondary.
func dnsRole(f *golivev1.DnsFailoverState, pool string) string {
	switch pool {
	case f.Primary:
		return "primary"
	case f.Secondary:
		return "secondary"
	}
	return "?"
}

// dnsSummary is a record's one-line state.
func dnsSummary(r *golivev1.DnsRecord) string {
	f := r.Failover
	s := fmt.Sprintf("dns %s %s: serving %s (%s); primary %s %s; bad checks %d/%d", r.Name, r.Type, f.Active, dnsRole(f, f.Active),
		f.Primary, orDash(f.PrimaryHealth), f.Bad, f.Threshold)
	if f.Pinned {
		s += "; PINNED by an operator"
	}
	if f.Blocked != "" {
		s += "; automation blocked: " + f.Blocked
	}
	return s
}

// dnsLastSwitch says when, by whom and why the record last switched.
func dnsLastSwitch(f *golivev1.DnsFailoverState, now time.Time) string {
	if f.LastSwitch == nil {
		return "last switch: never"
	}
	at := f.LastSwitch.AsTime()
	s := fmt.Sprintf("last switch %s (%s ago) by %s", at.Format(time.RFC3339), now.Sub(at).Round(time.Second), orDash(f.LastSwitchBy))
	if f.LastSwitchReason != "" {
		s += ": " + f.LastSwitchReason
	}
	return s
}

// printDNSStatus prints the failover records, three lines at most each.
func printDNSStatus(w io.Writer, recs []*golivev1.DnsRecord, width int) {
	now := time.Now()
	for _, r := range recs {
		f := r.Failover
		if f == nil {
			continue
		}
		fmt.Fprintln(w, truncate(dnsSummary(r), width))
		fmt.Fprintln(w, truncate("  "+dnsLastSwitch(f, now), width))
		if f.Recommended != "" && f.Command != "" {
			fmt.Fprintln(w, truncate(fmt.Sprintf("  recommended (%s): %s", orDash(f.LastAction), f.Command), width))
		}
		if p := r.Pending; p != nil {
			fmt.Fprintln(w, truncate(fmt.Sprintf("  change in flight: %s by %s since %s", p.Kind, p.Actor, p.At.AsTime().Format(time.RFC3339)), width))
		}
	}
}

// dnsStatus asks for the DNS state (nil when the controller has none or
// cannot say: watch goes on without it).
func dnsStatus(ctx context.Context, c golivev1.ControlServiceClient) []*golivev1.DnsRecord {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &golivev1.StatusRequest{})
	if err != nil {
		return nil
	}
	return st.Dns
}

// dnsWatchKey is what changes a watch line on a pipe.
func dnsWatchKey(recs []*golivev1.DnsRecord) string {
	var b strings.Builder
	for _, r := range recs {
		if f := r.Failover; f != nil {
			fmt.Fprintf(&b, " %s=%s/%d/%v/%d/%v", r.Name, f.Active, f.Bad, f.Pinned, f.Switches, f.Recommended)
		}
	}
	return b.String()
}

// dnsWatchLine is the DNS part of a watch line on a pipe.
func dnsWatchLine(recs []*golivev1.DnsRecord) string {
	var parts []string
	for _, r := range recs {
		if f := r.Failover; f != nil {
			p := fmt.Sprintf("%s:%s(%s),bad=%d/%d", strings.TrimSuffix(r.Name, "."), f.Active, dnsRole(f, f.Active), f.Bad, f.Threshold)
			if f.Pinned {
				p += ",pinned"
			}
			if f.Recommended != "" {
				p += ",recommends=" + f.Recommended
			}
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " dns=" + strings.Join(parts, ";")
}

// dnsWatchEvery is how often watch --dns asks for the state.
const dnsWatchEvery = time.Second

// watchDNS follows the DNS failover records until Ctrl-C: on a terminal a
// screen redrawn every second, on a pipe a line per change (and every
// statusEvery), with -o json one compact object per change.
func (co *clientOpts) watchDNS(cmd *cobra.Command) error {
	conn, err := co.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(cmd.Context(), controller.ActorMetadataKey, co.actor)
	client := golivev1.NewControlServiceClient(conn)
	w := cmd.OutOrStdout()
	tty := co.output != "json" && isTerminal(w)
	var lastKey string
	var lastPrint time.Time
	for first := true; ; first = false {
		if !first {
			select {
			case <-cmd.Context().Done():
				return cli.Interrupted{Note: "stopped watching DNS"}
			case <-time.After(dnsWatchEvery):
			}
		}
		st, err := client.Status(ctx, &golivev1.StatusRequest{})
		if err != nil {
			if cmd.Context().Err() != nil {
				return cli.Interrupted{Note: "stopped watching DNS"}
			}
			return co.connError(err)
		}
		if first && len(st.Dns) == 0 {
			return fmt.Errorf("the controller manages no DNS failover: start `golive-controller serve` with --dns-config FILE (see deploy/examples/dns.hcl)")
		}
		key := dnsWatchKey(st.Dns)
		switch {
		case co.output == "json":
			if key != lastKey {
				if err := writeJSON(w, jsonValue(&golivev1.DnsShowResponse{Records: st.Dns}), true); err != nil {
					return err
				}
			}
		case tty:
			fmt.Fprint(w, "\033[H\033[2J")
			fmt.Fprintf(w, "DNS failover as of %s (leader %s)\n\n", time.Now().Format("15:04:05"), orDash(st.Leader))
			printDNSStatus(w, st.Dns, termWidth(w))
		default:
			if key != lastKey || time.Since(lastPrint) >= statusEvery {
				fmt.Fprintf(w, "%s%s\n", time.Now().Format("15:04:05"), dnsWatchLine(st.Dns))
				lastPrint = time.Now()
			}
		}
		lastKey = key
	}
}
