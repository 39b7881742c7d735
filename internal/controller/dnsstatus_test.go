package controller_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// metricValue is the value of the series (name{labels} exactly as
// exposed) in a scrape, and whether it is there.
func metricValue(scrape, series string) (float64, bool) {
	for line := range strings.SplitSeq(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func (e *dnsEnv) status(t *testing.T) *golivev1.DnsRecord {
	t.Helper()
	st, err := e.ctl.Status(e.ctx, &golivev1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Dns) != 1 || st.Dns[0].Failover == nil {
		t.Fatalf("status lists DNS records %v, want the one failover record", st.Dns)
	}
	return st.Dns[0]
}

// TestDNSStatusAndMetrics: status and /metrics show the failover's state
// as it moves: bad checks counting, the no-approval alert while the leader
// may not switch, the switch under an approval (by whom, why, when; the
// seconds since it growing at each scrape), and the bad checks back to 0
// once the primary recovers.
func TestDNSStatusAndMetrics(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	agents := startSimAgents(t, e.c.GRPCAddr(), "web-1", "web-2", "dr-1")
	const (
		name       = `name="www.example.test."`
		stateBlue  = `golive_controller_dns_failover_state{` + name + `,pool="blue"}`
		stateGreen = `golive_controller_dns_failover_state{` + name + `,pool="green"}`
		bad        = `golive_controller_dns_failover_bad_checks{` + name + `}`
		since      = `golive_controller_dns_failover_since_switch_seconds{` + name + `}`
		noApproval = `golive_controller_dns_failover_alert{kind="no_approval",` + name + `}`
		recommend  = `golive_controller_dns_failover_alert{kind="recommend",` + name + `}`
	)
	testenv.WaitFor(t, 60*time.Second, "the primary judged healthy in status and metrics", func() bool {
		r := e.status(t)
		m := scrape(t, e.c)
		b, _ := metricValue(m, stateBlue)
		n, ok := metricValue(m, bad)
		return r.Failover.Active == "blue" && strings.HasPrefix(r.Failover.PrimaryHealth, "healthy") && r.Failover.LastCheck != nil &&
			b == 1 && ok && n == 0
	})
	if r := e.status(t); r.Failover.LastSwitch != nil || r.Failover.LastSwitchBy != "" || len(r.ServedValues) != 0 {
		t.Fatalf("status before any switch (and it must not ask the server): %v", r)
	}
	if _, ok := metricValue(scrape(t, e.c), since); ok {
		t.Fatal("since_switch_seconds is exposed before any switch")
	}

	// No approval: the bad checks count, the leader recommends, the
	// no-approval alert is up.
	agents["web-1"].healthy.Store(false)
	agents["web-2"].healthy.Store(false)
	testenv.WaitFor(t, 60*time.Second, "bad checks past the threshold and the no-approval alert", func() bool {
		m := scrape(t, e.c)
		n, _ := metricValue(m, bad)
		a, _ := metricValue(m, noApproval)
		rc, _ := metricValue(m, recommend)
		return n >= 3 && a == 1 && rc == 1
	})
	if r := e.status(t); r.Failover.Active != "blue" || r.Failover.Bad < 3 || r.Failover.Recommended != "green" ||
		!strings.Contains(r.Failover.LastReason, "no live automation approval") {
		t.Fatalf("status while a failover waits for an approval: %v", r)
	}

	// Under an approval the leader switches at its next check.
	token := e.authorize(t)
	testenv.WaitFor(t, 60*time.Second, "status shows the switch to green", func() bool {
		r := e.status(t)
		return r.Failover.Active == "green" && r.Failover.LastSwitch != nil
	})
	r := e.status(t)
	if r.Failover.LastSwitchBy != "automatic" || !strings.Contains(r.Failover.LastSwitchReason, "consecutive checks since") ||
		r.Failover.Pinned || r.Last.FencingToken != token || strings.Join(r.StoredValues, " ") != strings.Join(dnsGreen, " ") {
		t.Fatalf("status after the automatic switch: %v", r)
	}
	if shown := e.show(t); shown.Failover.LastSwitchBy != "automatic" || shown.Failover.LastSwitchReason != r.Failover.LastSwitchReason {
		t.Fatalf("dns show after the switch: %v", shown.Failover)
	}
	// A later change that is not a switch (same pool, a new TTL): the last
	// switch is still the automatic one, found in the history.
	if _, err := e.ctl.DnsSet(e.ctx, &golivev1.DnsSetRequest{Name: dnsWWW, Values: dnsGreen, Ttl: durationpb.New(20 * time.Second), Reason: "shorter ttl"}); err != nil {
		t.Fatal(err)
	}
	if r2 := e.status(t); r2.Last.Kind != "set" || r2.Failover.LastSwitchBy != "automatic" || r2.Failover.LastSwitchReason != r.Failover.LastSwitchReason ||
		!r2.Failover.LastSwitch.AsTime().Equal(r.Failover.LastSwitch.AsTime()) {
		t.Fatalf("status after a dns set that switched nothing: %v", r2)
	}
	var first float64
	testenv.WaitFor(t, 30*time.Second, "metrics after the switch", func() bool {
		m := scrape(t, e.c)
		g, _ := metricValue(m, stateGreen)
		b, _ := metricValue(m, stateBlue)
		a, _ := metricValue(m, noApproval)
		s, ok := metricValue(m, since)
		first = s
		return g == 1 && b == 0 && a == 0 && ok && s >= 0
	})
	testenv.WaitFor(t, 30*time.Second, "since_switch_seconds growing at scrape time", func() bool {
		s, _ := metricValue(scrape(t, e.c), since)
		return s >= first+1
	})

	// The primary recovers: its bad checks go back to 0; failback is
	// manual (and its hold-down a minute), so the record stays on green.
	agents["web-1"].healthy.Store(true)
	agents["web-2"].healthy.Store(true)
	testenv.WaitFor(t, 60*time.Second, "the bad checks back to 0", func() bool {
		m := scrape(t, e.c)
		n, ok := metricValue(m, bad)
		g, _ := metricValue(m, stateGreen)
		return ok && n == 0 && g == 1
	})
	if r := e.status(t); r.Failover.Active != "green" || r.Failover.Bad != 0 || !strings.HasPrefix(r.Failover.PrimaryHealth, "healthy") {
		t.Fatalf("status with the primary healthy again: %v", r)
	}
}

// startPoolAgents runs real agents (in the test process) for hosts, each
// with service "app".
func startPoolAgents(t *testing.T, addr string, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		testenv.StartAgent(t, h, "", []agent.Service{{Name: "app", SwapMode: "restart"}}, addr)
	}
}

func dnsChecks(t *testing.T, resp *golivev1.PreflightResponse, host string) []*golivev1.CheckResult {
	t.Helper()
	for _, h := range resp.Hosts {
		if h.HostId != host {
			continue
		}
		var out []*golivev1.CheckResult
		for _, c := range h.Checks {
			if c.Name == "dns" {
				out = append(out, c)
			}
		}
		return out
	}
	t.Fatalf("preflight did not answer for host %s: %v", host, resp)
	return nil
}

// TestDNSPreflightTTL: a preflight of a service whose hosts are in a
// failover pool checks the TTL the zone's primary serves for the failover
// name: 30s passes, 300s (above max_ttl 60s) fails and says clients may hold
// the old answer that long; a host in no pool gets no such check, and
// --skip-check dns skips it.
func TestDNSPreflightTTL(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	startPoolAgents(t, e.c.GRPCAddr(), "web-1", "dr-1", "other-1")
	testenv.WaitFor(t, 60*time.Second, "3 agents connected", func() bool {
		st, err := e.ctl.Status(e.ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 3
	})
	preflight := func(skip ...string) *golivev1.PreflightResponse {
		t.Helper()
		resp, err := e.ctl.Preflight(e.ctx, &golivev1.PreflightRequest{Service: "app", SkipChecks: skip, Timeout: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := preflight()
	for _, h := range []string{"web-1", "dr-1"} {
		c := dnsChecks(t, resp, h)
		if len(c) != 1 || c[0].Status != "pass" || !strings.Contains(c[0].Detail, "www.example.test. is served by its primary") ||
			!strings.Contains(c[0].Detail, "TTL 30s (max_ttl 1m0s)") {
			t.Fatalf("host %s's dns check with TTL 30s: %v", h, c)
		}
	}
	if c := dnsChecks(t, resp, "other-1"); len(c) != 0 {
		t.Fatalf("a host in no pool got the failover TTL check: %v", c)
	}

	// Someone serves the name with TTL 300.
	if out, err := e.dns.Nsupdate(e.ctx, dnstest.KeyOther,
		"update delete www.example.test. A\nupdate add www.example.test. 300 A 192.0.2.10\nupdate add www.example.test. 300 A 192.0.2.11"); err != nil {
		t.Fatalf("nsupdate: %v\n%s", err, out)
	}
	resp = preflight()
	c := dnsChecks(t, resp, "web-1")
	if len(c) != 1 || c[0].Status != "fail" || !strings.Contains(c[0].Detail, "TTL 5m0s, above its max_ttl 1m0s") ||
		!strings.Contains(c[0].Detail, "clients may hold the old answer for up to 5m0s") || resp.Ok {
		t.Fatalf("preflight with TTL 300: ok=%v dns=%v", resp.Ok, c)
	}
	if c := dnsChecks(t, resp, "dr-1"); len(c) != 1 || c[0].Status != "fail" {
		t.Fatalf("the secondary pool's host with TTL 300: %v", c)
	}
	audits := e.audit(t, "preflight")
	if len(audits) != 2 || audits[1].Outcome != "failed" {
		t.Fatalf("audit of the failing preflight: %v", audits)
	}

	resp = preflight("dns")
	if c := dnsChecks(t, resp, "web-1"); len(c) != 1 || c[0].Status != "skip" || !strings.Contains(c[0].Detail, "www.example.test.") {
		t.Fatalf("--skip-check dns: %v", c)
	}
}
