package controllercli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

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
