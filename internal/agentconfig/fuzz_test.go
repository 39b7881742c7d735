package agentconfig

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and must
// return either a config (which Validate then accepts or refuses with
// Errors) or Errors, every one of them naming a position or a field.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "agent.hcl"))
	if err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		string(example),
		minimal,
		"",
		"host_id = \"h1\"\n",
		"service \"app\" {\n",
		"service {}\n",
		"service \"a\" {}\nservice \"a\" {}\n",
		"artifacts { max_bytes = \"2XB\" }\n",
		"artifacts { max_bytes = 1e400 }\n",
		"artifacts { max_files = 1e30 }\n",
		"host_id = \"${1e9999999}\"\n",
		"host_id = 1e300 * 1e300 * 1e300\n",
		"service \"app\" { health { timeout = \"2x\" } }\n",
		"service \"app\" { port = null }\n",
		"service \"app\" { exec { command = [null] } }\n",
		"service \"app\" { exec { env = { A = null } } }\n",
		"service \"app\" { exec { command = [for x in [\"a\"] : x] } }\n",
		"labels = { a = [\"x\"] }\n",
		"host_id = upper(\"x\")\n",
		"host_id = \"${var.x}\"\n",
		"trusted_keys = \"/k.pub\"\n",
		"service \"app\" { smoke \"x\" { headers = { \"\" = \"\" } } }\n",
		"service \"app\" { blue_green { router { kind = 1 } } }\n",
		"service \"app\" { preflight { min_free_disk_factor = -0.0 } }\n",
		"service \"app\" { metrics_path = \"/m\\u0000\" }\n",
		"service \"app\" { port = 1\n traffic { source = \"nginx\"\n access_log = \"/l\" } }\n",
		"service \"app\" { traffic { source = \"haproxy\"\n backend = \"\" } }\n",
		"service \"app\" { blue_green { router { kind = \"nginx\"\n access_log = 1 } } }\n",
		"service \"app\" { port = 8080\n scale { min = 1\n max = 4\n target_rps = 50 } }\n",
		"service \"app\" { port = 8080\n scale { max = 4\n ports = \"8080-8083\"\n target_cpu = 0.5\n router { kind = \"haproxy\" } } }\n",
		"service \"app\" { scale { max = 1e30\n ports = \"9-\"\n query = 1 } }\n",
		"service \"app\" { port = 65535\n scale { min = -1\n max = 9999999\n tolerance = 2 } }\n",
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
		// A valid config's helpers must not panic either.
		for _, s := range c.Services {
			for _, p := range s.Ports() {
				_ = s.HealthURL(p)
				_ = s.Command(p)
				_ = s.Env(p)
				for _, sm := range s.Smoke {
					_ = s.SmokeURL(sm, p)
				}
			}
			_ = c.LogFile(s)
			_ = c.BackupDir(s)
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
