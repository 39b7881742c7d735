package controllercli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestStatusAndWatchShowDNS: with a failover record moved by an operator,
// status (text and JSON) and watch (on a pipe) show the serving pool, the
// primary's health, the bad checks, the pin and the last switch (when, by
// whom, why), as does watch --dns without a rollout; the rollout's own preflight carries the failover TTL check
// for its host in the primary pool.
func TestStatusAndWatchShowDNS(t *testing.T) {
	s := dnstest.Start(t, dnstest.BIND)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "golive.key"), []byte(s.Secrets[dnstest.KeyGolive]), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`zone "example.test" {
  server   = %q
  key_name = "golive"
  key_file = "golive.key"
}
pool "blue" {
  hosts     = ["web-1"]
  addresses = ["192.0.2.10", "192.0.2.11"]
}
pool "green" {
  hosts     = ["dr-1"]
  addresses = ["198.51.100.10"]
}
failover "www.example.test" {
  zone      = "example.test"
  primary   = blue
  secondary = green
  check {
    interval  = "1s"
    threshold = 3
  }
}
`, s.Addr)
	if err := os.WriteFile(filepath.Join(dir, "dns.hcl"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	rel, sums := testenv.Releases(t)
	cfg := testenv.ControllerConfig(t)
	cfg.ArtifactsDir = rel
	cfg.DNSConfig = filepath.Join(dir, "dns.hcl")
	c := testenv.StartController(t, cfg)
	addr := c.GRPCAddr()
	startSampleAgent(t, "web-1", addr)
	ctl, ctx := testenv.Control(t, addr, "test")
	testenv.WaitFor(t, 20*time.Second, "the agent connected", func() bool {
		st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	})
	mustCLI := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := cliRun(t, addr, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
		return stdout
	}

	out := mustCLI("status")
	for _, want := range []string{"dns www.example.test. A: serving blue (primary)", "bad checks 0/3", "last switch: never"} {
		if !strings.Contains(out, want) {
			t.Errorf("status before any switch lacks %q:\n%s", want, out)
		}
	}
	mustCLI("dns", "failover", "www.example.test", "--to", "green", "--reason", "blue datacenter on fire")
	out = mustCLI("status")
	for _, want := range []string{"dns www.example.test. A: serving green (secondary); primary blue", "PINNED by an operator",
		"ago) by carol: blue datacenter on fire"} {
		if !strings.Contains(out, want) {
			t.Errorf("status after dns failover lacks %q:\n%s", want, out)
		}
	}
	if out := mustCLI("dns", "show", "www.example.test"); !strings.Contains(out, "by carol: blue datacenter on fire") {
		t.Errorf("dns show after dns failover lacks who and why:\n%s", out)
	}
	var st struct {
		DNS []struct {
			Name     string `json:"name"`
			Failover struct {
				Active       string `json:"active"`
				Pinned       bool   `json:"pinned"`
				LastSwitchBy string `json:"last_switch_by"`
				LastSwitch   string `json:"last_switch"`
			} `json:"failover"`
		} `json:"dns"`
	}
	if err := json.Unmarshal([]byte(mustCLI("status", "-o", "json")), &st); err != nil || len(st.DNS) != 1 ||
		st.DNS[0].Failover.Active != "green" || !st.DNS[0].Failover.Pinned || st.DNS[0].Failover.LastSwitchBy != "carol" || st.DNS[0].Failover.LastSwitch == "" {
		t.Fatalf("status -o json: %+v (%v)", st, err)
	}

	// watch --dns follows the records without a rollout, until Ctrl-C.
	var stdout, stderr syncBuffer
	wctx, cancel := context.WithCancel(t.Context())
	code := make(chan int, 1)
	go func() { code <- controllercli.Main(wctx, []string{"--addr", addr, "watch", "--dns"}, &stdout, &stderr) }()
	testenv.WaitFor(t, 20*time.Second, "watch --dns shows the record on green", func() bool {
		return strings.Contains(stdout.String(), " dns=www.example.test:green(secondary),bad=") && strings.Contains(stdout.String(), ",pinned")
	})
	cancel()
	if got := <-code; got != 130 {
		t.Errorf("watch --dns after Ctrl-C: exit %d, want 130 (%s)", got, stderr.String())
	}

	// A rollout; watch on a pipe shows DNS beside it.
	mustCLI("authorize", "start automation now", "--ttl", "30m", "--reason", "dns watch test")
	out = mustCLI("deploy", "--service", "app", "--release", "v1", "--canary", "1", "--min-healthy", "1s",
		"--skip-check", "previous-release", "--artifact", "http://"+c.MetricsAddr()+"/artifacts/sampleapp-v1.tar.gz", "--sha256", sums["v1"])
	m := startedID.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("deploy said %q", out)
	}
	id := m[1]
	testenv.WaitFor(t, 60*time.Second, "the rollout ended", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		return err == nil && (r.Rollout.State == "succeeded" || r.Rollout.State == "failed" || r.Rollout.State == "rolled_back")
	})
	r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var ttl *golivev1.CheckResult
	for _, h := range r.Rollout.Preflight {
		for _, ch := range h.Checks {
			if ch.Name == "dns" && strings.Contains(ch.Detail, "Failover name www.example.test.") {
				ttl = ch
			}
		}
	}
	if ttl == nil || ttl.Status != "pass" || !strings.Contains(ttl.Detail, "TTL 30s") {
		t.Errorf("the rollout's preflight has no passing failover TTL check for web-1: %v", r.Rollout.Preflight)
	}

	out = mustCLI("watch", id)
	if !strings.Contains(out, " dns=www.example.test:green(secondary),bad=") || !strings.Contains(out, ",pinned") {
		t.Errorf("watch on a pipe lacks the DNS state:\n%s", out)
	}
}
