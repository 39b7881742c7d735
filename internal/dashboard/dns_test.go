package dashboard_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestBrowserDNSPanel: the dashboard of a controller managing a real BIND
// zone shows the failover record in its DNS panel and follows it live (no
// reload): the primary pool judged (its hosts have no agent: bad checks
// count), then an operator's dns failover (serving green, the secondary,
// pinned, the last switch by whom and why).
func TestBrowserDNSPanel(t *testing.T) {
	bctx := browser(t)
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
  hosts     = ["web-1", "web-2"]
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
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	cfg.DNSConfig = filepath.Join(dir, "dns.hcl")
	c := testenv.StartController(t, cfg)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	const row = `#dns tr[data-dns="www.example.test."]`
	run(t, bctx, 60*time.Second, "open the dashboard; the DNS panel shows the record on its primary",
		chromedp.Navigate(c.DashboardURL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-active="blue"][data-pinned="false"]`)),
		eval(`window.notReloaded = true`))
	run(t, bctx, 60*time.Second, "the primary judged live: no agent, bad checks counting",
		chromedp.WaitVisible(chromedp.CSS(row+`:not([data-bad="0"])`)))
	if txt := value(t, bctx, "the row's text", chromedp.Text(chromedp.CSS(row))); !strings.Contains(txt, "no agent") ||
		!strings.Contains(txt, "blue (primary)") || !strings.Contains(txt, "never") {
		t.Fatalf("the DNS row before a switch: %q", txt)
	}

	if _, err := ctl.DnsFailover(ctx, &golivev1.DnsFailoverRequest{Name: "www.example.test", To: "green", Reason: "blue datacenter on fire"}); err != nil {
		t.Fatal(err)
	}
	run(t, bctx, 30*time.Second, "the operator's failover shows live",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-active="green"][data-pinned="true"]`)))
	txt := value(t, bctx, "the last switch", chromedp.Text(chromedp.CSS(row+` td.last-switch`)))
	if !strings.Contains(txt, "ago by alice: blue datacenter on fire") {
		t.Fatalf("the last switch cell: %q", txt)
	}
	if txt := value(t, bctx, "the row's text", chromedp.Text(chromedp.CSS(row))); !strings.Contains(txt, "green (secondary)") || !strings.Contains(txt, "pinned") {
		t.Fatalf("the DNS row after the failover: %q", txt)
	}
	assertNotReloaded(t, bctx)
}
