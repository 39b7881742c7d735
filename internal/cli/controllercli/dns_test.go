package controllercli_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/testenv"
)

func TestDNSExampleConfigParses(t *testing.T) {
	path := filepath.Join("..", "..", "..", "deploy", "examples", "dns.hcl")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dnsconfig.Parse(src, path)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestDNSCommands runs dns show, set, failover and history against a
// controller managing a real BIND zone.
func TestDNSCommands(t *testing.T) {
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
}
`, s.Addr)
	if err := os.WriteFile(filepath.Join(dir, "dns.hcl"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.ControllerConfig(t)
	cfg.DNSConfig = filepath.Join(dir, "dns.hcl")
	c := testenv.StartController(t, cfg)
	golive := func(wantCode int, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		code := controllercli.Main(t.Context(), append([]string{"--addr", c.GRPCAddr(), "--as", "alice"}, args...), &out, &out)
		if code != wantCode {
			t.Fatalf("golive-controller %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, wantCode, out.String())
		}
		return out.String()
	}
	out := golive(0, "dns", "show", "www.example.test")
	for _, want := range []string{"www.example.test. A", "serves:    192.0.2.10 192.0.2.11  ttl 30s", "failover:  active blue"} {
		if !strings.Contains(out, want) {
			t.Errorf("dns show lacks %q:\n%s", want, out)
		}
	}
	out = golive(1, "dns", "set", "api.example.test", "--value", "203.0.113.7")
	if !strings.Contains(out, "authorize") {
		t.Errorf("dns set without approval does not say to authorize:\n%s", out)
	}
	out = golive(0, "dns", "failover", "www.example.test", "--to", "green", "--reason", "drill")
	if !strings.Contains(out, "now points at pool green: 198.51.100.10") || !strings.Contains(out, "pinned") {
		t.Errorf("dns failover:\n%s", out)
	}
	golive(0, "authorize", "start automation now", "--ttl", "10m", "--reason", "dns")
	out = golive(0, "dns", "set", "api.example.test", "--value", "203.0.113.7,203.0.113.8", "--ttl", "20s")
	if !strings.Contains(out, "serves:    203.0.113.7 203.0.113.8  ttl 20s") {
		t.Errorf("dns set:\n%s", out)
	}
	out = golive(0, "dns", "history", "www.example.test")
	if !strings.Contains(out, "failover  confirmed") || !strings.Contains(out, "blue -> green") || !strings.Contains(out, "drill") {
		t.Errorf("dns history:\n%s", out)
	}
	out = golive(0, "-o", "json", "dns", "show")
	if !strings.Contains(out, `"name": "api.example.test."`) || !strings.Contains(out, `"served_ttl": "20s"`) {
		t.Errorf("dns show -o json:\n%s", out)
	}
}
