package dnsconfig

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and must
// return either a config (which Validate accepts or refuses with Errors that
// name a field) or Errors, every one naming a position or a field.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.hcl")
	if err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		string(example),
		"",
		"zone \"example.test\" {\n",
		"zone {}\n",
		"zone \"a\" {}\nzone \"a\" {}\n",
		"zone \".\" { server = \"[::1]:53\" key_name = \"k\" key_file = \"/k\" }\n",
		"zone \"x\" { server = \":\" }\n",
		"zone \"x\" { timeout = 1e400 }\n",
		"zone \"x\" { key_algorithm = null }\n",
		"pool \"p\" { addresses = [null] }\n",
		"pool \"p\" { addresses = \"192.0.2.1\" }\n",
		"pool \"p\" { selector = { \"\" = \"\" } }\n",
		"pool \"p\" { hosts = [for h in [\"a\"] : h] addresses = [\"fe80::1%eth0\"] }\n",
		"failover \"a\" { ttl = 1e15 max_ttl = -0.0 }\n",
		"failover \"a\" { ttl = \"-5s\" }\n",
		"failover \"a\" { primary = a.b.c secondary = var.x }\n",
		"failover \"a\" { primary = upper(\"x\") }\n",
		"failover \"a\" { check { threshold = 1e300 * 1e300 } }\n",
		"failover \"a\" { check { interval = \"${1e9999999}\" } }\n",
		"failover \"" + string(make([]byte, 300)) + "\" {}\n",
		"\x00\xff{{{",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse(src, "fuzz.hcl")
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config and an error: %v", err)
			}
			checkErrors(t, err, true)
			return
		}
		if c == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if err := c.Validate(); err != nil {
			checkErrors(t, err, false)
			return
		}
		for _, fo := range c.Failovers {
			z, p, s := c.Zone(fo.Zone), c.Pool(fo.Primary), c.Pool(fo.Secondary)
			if z == nil || p == nil || s == nil {
				t.Fatalf("a valid failover %q refers to a missing zone or pool", fo.Name)
			}
			if len(p.Values(fo.Type)) == 0 || len(s.Values(fo.Type)) == 0 || fo.TTL > fo.MaxTTL || fo.Check.Threshold < 2 {
				t.Fatalf("a valid failover breaks an invariant: %+v", fo)
			}
			_ = c.ZoneFor(fo.Name)
		}
	})
}

func checkErrors(t *testing.T, err error, fromParse bool) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error %T is not a non-empty Errors: %v", err, err)
	}
	for _, e := range es {
		if e.Msg == "" {
			t.Errorf("empty message in %q", err)
		}
		if fromParse && e.Range.Filename == "" && e.Field == "" {
			t.Errorf("parse error with neither position nor field: %q", e)
		}
		if !fromParse && e.Field == "" {
			t.Errorf("validation error without a field: %q", e)
		}
	}
}
