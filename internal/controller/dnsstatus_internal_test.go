package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsfailover"
)

// TestDNSStateCollector: the failover series are computed at scrape time
// from the last observation (seconds since the switch grow with the clock,
// not with checks), the no-approval alert is told apart from other
// recommendations, and an observation older than three checks (a replica
// that lost the lead) exposes nothing.
func TestDNSStateCollector(t *testing.T) {
	f := &dnsconfig.Failover{Name: "www.example.test.", Type: dnsconfig.TypeA, Primary: "blue", Secondary: "green",
		Check: dnsconfig.Check{Interval: 10 * time.Second, Threshold: 3}, Failback: dnsconfig.FailbackManual}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	c := newDNSStateCollector(&dnsconfig.Config{Failovers: []*dnsconfig.Failover{f}})
	c.now = func() time.Time { return now }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	scrape := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				var labels []string
				for _, l := range m.Label {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				fmt.Fprintf(&b, "%s{%s} %g\n", mf.GetName(), strings.Join(labels, ","), m.GetGauge().GetValue())
			}
		}
		return b.String()
	}
	if got := scrape(); got != "" {
		t.Fatalf("series before any observation:\n%s", got)
	}

	// Bad checks without an approval: recommend and no_approval.
	st := dnsfailover.State{Bad: 3}
	c.observe(f, st, &dnsfailover.Decision{Action: dnsfailover.Recommend, Kind: dnsfailover.Failover, To: "green"}, false)
	got := scrape()
	for _, want := range []string{
		"golive_controller_dns_failover_state{name=www.example.test.,pool=blue} 1",
		"golive_controller_dns_failover_bad_checks{name=www.example.test.} 3",
		"golive_controller_dns_failover_alert{kind=no_approval,name=www.example.test.} 1",
		"golive_controller_dns_failover_alert{kind=recommend,name=www.example.test.} 1",
		"golive_controller_dns_failover_alert{kind=hold,name=www.example.test.} 0",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "since_switch") {
		t.Errorf("since_switch before any switch:\n%s", got)
	}

	// Pinned: a recommendation, but not for want of an approval.
	c.observe(f, dnsfailover.State{Bad: 3, Pinned: true, Active: "green", LastSwitch: now.Add(-90 * time.Second)},
		&dnsfailover.Decision{Action: dnsfailover.Recommend, Kind: dnsfailover.Failback, To: "blue"}, false)
	got = scrape()
	for _, want := range []string{
		"golive_controller_dns_failover_state{name=www.example.test.,pool=green} 1",
		"golive_controller_dns_failover_pinned{name=www.example.test.} 1",
		"golive_controller_dns_failover_alert{kind=recommend,name=www.example.test.} 1",
		"golive_controller_dns_failover_since_switch_seconds{name=www.example.test.} 90",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "kind=no_approval,name=www.example.test.} 1") {
		t.Errorf("a pinned record's recommendation counted as no approval:\n%s", got)
	}

	// The clock moves, no new check: since_switch grows at scrape time.
	now = now.Add(20 * time.Second)
	if got := scrape(); !strings.Contains(got, "golive_controller_dns_failover_since_switch_seconds{name=www.example.test.} 110") {
		t.Errorf("since_switch 20s later:\n%s", got)
	}
	// Stale (more than 3 checks, at least 30s): nothing.
	now = now.Add(15 * time.Second)
	if got := scrape(); got != "" {
		t.Errorf("series from a stale observation:\n%s", got)
	}
}
