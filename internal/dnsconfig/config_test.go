package dnsconfig

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=" // base64

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadExample(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dns.hcl")
	writeFile(t, path, string(src), 0o600)
	writeFile(t, filepath.Join(dir, "golive.key"), testSecret+"\n", 0o600)

	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	z := c.Zone("EXAMPLE.test")
	if z == nil || z.Server != "127.0.0.1:5353" || z.Key.Name != "golive." || z.Key.Algorithm != HMACSHA256 ||
		z.Timeout != 3*time.Second || z.Key.File != filepath.Join(dir, "golive.key") || z.Key.Secret.Base64() != testSecret {
		t.Fatalf("zone = %+v", z)
	}
	if got := c.ZoneFor("www.example.test"); got != z {
		t.Fatalf("ZoneFor = %v", got)
	}
	blue := c.Pool("blue")
	if got := strings.Join(blue.Values(TypeA), ","); got != "192.0.2.10,192.0.2.11" {
		t.Errorf("blue A = %s", got)
	}
	if got := strings.Join(blue.Values(TypeAAAA), ","); got != "2001:db8::10" {
		t.Errorf("blue AAAA = %s", got)
	}
	if g := c.Pool("green"); g.Selector["role"] != "web" || len(g.Hosts) != 0 {
		t.Errorf("green = %+v", g)
	}
	if len(c.Failovers) != 2 {
		t.Fatalf("failovers = %d", len(c.Failovers))
	}
	f := c.Failovers[0]
	want := Failover{Name: "www.example.test.", Zone: "example.test.", Type: TypeA, TTL: 30 * time.Second,
		Primary: "blue", Secondary: "green", Check: Check{Interval: time.Second, Threshold: 3},
		Failback: FailbackAuto, HoldDown: 5 * time.Minute, MaxTTL: time.Minute}
	f.pos, want.pos = nil, nil
	if !reflect.DeepEqual(*f, want) {
		t.Errorf("failover = %+v\nwant       %+v", *f, want)
	}
	d := c.Failovers[1]
	if d.Type != TypeAAAA || d.TTL != DefaultTTL || d.Check.Threshold != DefaultThreshold || d.Failback != FailbackManual {
		t.Errorf("defaults = %+v", d)
	}
}

func TestKeyFileFormats(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		give    string
		mode    os.FileMode
		wantErr string
	}{
		{name: "base64", give: testSecret + "\n", mode: 0o600},
		{name: "tsig-keygen", give: "key \"golive\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + testSecret + "\";\n};\n", mode: 0o640},
		{name: "two keys", give: "key \"other\" { algorithm hmac-sha256; secret \"b3RoZXI=\"; };\nkey \"golive.\" { algorithm hmac-sha256; secret \"" + testSecret + "\"; };\n", mode: 0o600},
		{name: "wrong algorithm", give: "key \"golive\" { algorithm hmac-sha512; secret \"" + testSecret + "\"; };", mode: 0o600, wantErr: `key "golive." has algorithm hmac-sha512, the config says hmac-sha256`},
		{name: "no such key", give: "key \"other\" { algorithm hmac-sha256; secret \"" + testSecret + "\"; };", mode: 0o600, wantErr: `no key clause for key "golive."`},
		{name: "not base64", give: "not base64 !!", mode: 0o600, wantErr: "neither a base64 secret nor a BIND key clause"},
		{name: "empty", give: "", mode: 0o600, wantErr: "neither a base64 secret"},
		{name: "world readable", give: testSecret, mode: 0o644, wantErr: "readable by every user: chmod 600 it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".key")
			writeFile(t, key, tt.give, tt.mode)
			if err := os.Chmod(key, tt.mode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "dns.hcl")
			writeFile(t, path, "zone \"example.test\" {\n  server = \"127.0.0.1\"\n  key_name = \"golive\"\n  key_file = \""+key+"\"\n}\n", 0o600)
			c, err := Load(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Zones[0].Key.Secret.Base64(); got != testSecret {
					t.Fatalf("secret = %q", got)
				}
				if c.Zones[0].Server != "127.0.0.1:53" {
					t.Fatalf("server = %q", c.Zones[0].Server)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "dns.hcl:4: zone \"example.test.\": key_file: ") {
				t.Fatalf("error = %v, want dns.hcl:4 ... %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	const zone = "zone \"example.test\" {\n  server = \"127.0.0.1:53\"\n  key_name = \"k\"\n  key_file = \"/k\"\n}\n"                                        // lines 1-5
	const pools = "pool \"a\" {\n  hosts = [\"h1\"]\n  addresses = [\"192.0.2.1\"]\n}\npool \"b\" {\n  hosts = [\"h2\"]\n  addresses = [\"192.0.2.2\"]\n}\n" // lines 6-13
	tests := []struct {
		name string
		give string
		want []string // substrings of the error, each "file:line: field: msg"
	}{
		{name: "syntax", give: "zone \"x\" {\n", want: []string{"dns.hcl:1: "}},
		{name: "unknown attribute", give: "zone \"example.test\" {\n  key_secret = \"x\"\n}\n", want: []string{`dns.hcl:2: Unsupported argument`}},
		{name: "zone fields", give: "zone \"example.test\" {\n  server = \"127.0.0.1:99999\"\n  key_algorithm = \"hmac-md5\"\n  timeout = \"2m\"\n}\n",
			want: []string{
				`dns.hcl:2: zone "example.test.": server: port "99999" is not 1-65535`,
				`dns.hcl:3: zone "example.test.": key_algorithm: "hmac-md5" is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512`,
				`dns.hcl:4: zone "example.test.": timeout: must be more than 0 and at most 1m`,
				`dns.hcl:1: zone "example.test.": key_name: required`,
				`dns.hcl:1: zone "example.test.": key_file: required`,
			}},
		{name: "bad zone name", give: "zone \"exa mple\" {\n  server = \"h:53\"\n  key_name = \"k\"\n  key_file = \"/k\"\n}\n", want: []string{`dns.hcl:1: zone "exa mple.": name: "exa mple.": labels are letters`}},
		{name: "pool fields", give: "pool \"p\" {\n  hosts = [\"a\", \"a\"]\n  selector = { role = \"web\" }\n  addresses = [\"192.0.2.1\", \"192.0.2.1\"]\n}\npool \"q\" {\n}\n",
			want: []string{
				`dns.hcl:2: pool "p": hosts: host "a" listed twice`,
				`dns.hcl:3: pool "p": selector: set hosts or selector, not both`,
				`dns.hcl:4: pool "p": addresses: 192.0.2.1 listed twice`,
				`dns.hcl:6: pool "q": hosts: set hosts or selector`,
				`dns.hcl:6: pool "q": addresses: required`,
			}},
		{name: "failover refs", give: zone + pools + "failover \"www.other.test\" {\n  zone = \"example.test\"\n  primary = a\n  secondary = c\n  type = \"AAAA\"\n}\n",
			want: []string{
				`dns.hcl:15: failover "www.other.test.": zone: www.other.test. is not in zone example.test.`,
				`dns.hcl:16: failover "www.other.test.": primary: pool "a" has no address for AAAA records`,
				`dns.hcl:17: failover "www.other.test.": secondary: no pool "c" is configured`,
			}},
		{name: "failover ranges", give: zone + pools + "failover \"www.example.test\" {\n  zone = \"nowhere.test\"\n  primary = a\n  secondary = a\n  ttl = 120\n  max_ttl = \"60s\"\n  check {\n    interval = \"1s\"\n    threshold = 1\n  }\n  failback = \"sometimes\"\n  hold_down = \"1s\"\n  type = \"MX\"\n}\n",
			want: []string{
				`dns.hcl:15: failover "www.example.test.": zone: no zone "nowhere.test." is configured`,
				`dns.hcl:17: failover "www.example.test.": secondary: must differ from primary`,
				`dns.hcl:18: failover "www.example.test.": ttl: 2m0s is more than max_ttl 1m0s`,
				`dns.hcl:22: failover "www.example.test.": check.threshold: must be 2 to 1000 (one bad check never switches a record)`,
				`dns.hcl:24: failover "www.example.test.": failback: "sometimes" is not "manual" or "auto"`,
				`dns.hcl:26: failover "www.example.test.": type: "MX" is not A or AAAA`,
			}},
		{name: "hold down shorter than threshold", give: zone + pools + "failover \"www.example.test\" {\n  zone = \"example.test\"\n  primary = a\n  secondary = b\n  check {\n    interval = \"10s\"\n    threshold = 3\n  }\n  hold_down = \"20s\"\n}\n",
			want: []string{`dns.hcl:22: failover "www.example.test.": hold_down: must be at least check.threshold × check.interval (30s)`}},
		{name: "ttl fraction and huge", give: zone + pools + "failover \"www.example.test\" {\n  zone = \"example.test\"\n  primary = a\n  secondary = b\n  ttl = \"1.5s\"\n}\n",
			want: []string{`dns.hcl:18: failover "www.example.test.": ttl: must be a whole number of seconds`}},
		{name: "parse errors", give: "zone \"example.test\" {\n  timeout = \"2x\"\n}\npool \"p\" {\n  addresses = [\"nope\"]\n}\nfailover \"x.example.test\" {\n  max_ttl = 1e300\n  ttl = -1\n  check {\n    threshold = 2.5\n  }\n}\n",
			want: []string{
				`dns.hcl:2: zone "example.test.": timeout: invalid duration "2x"`,
				`dns.hcl:5: pool "p": addresses: "nope" is not an IPv4 or IPv6 address`,
				`dns.hcl:8: failover "x.example.test.": max_ttl: number out of range`,
				`dns.hcl:9: failover "x.example.test.": ttl: -1 seconds is out of range`,
				`dns.hcl:11: failover "x.example.test.": check.threshold: want a whole number`,
			}},
		{name: "pool ref path", give: zone + pools + "failover \"www.example.test\" {\n  zone = \"example.test\"\n  primary = pool.a\n  secondary = b\n}\n",
			want: []string{`dns.hcl:16: failover "www.example.test.": primary: want a pool's name`}},
		{name: "duplicates", give: zone + zone + pools + pools, want: []string{`dns.hcl:6: zone "example.test.": name: zone defined twice`, `dns.hcl:19: pool "a": name: pool defined twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.give), "dns.hcl")
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("no error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
		})
	}
}

func TestValues(t *testing.T) {
	p := &Pool{Addresses: []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1").Unmap(), netip.MustParseAddr("2001:db8::1")}}
	if got := p.Values(TypeA); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("A = %v", got)
	}
}
