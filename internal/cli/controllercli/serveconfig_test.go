package controllercli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// serveWith returns the serve command of a fresh CLI with args parsed and
// the config file src (if any) applied, as RunE does.
func serveWith(t *testing.T, src string, args ...string) (*cobra.Command, error) {
	t.Helper()
	root := newControllerCmd(io.Discard, io.Discard)
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if src == "" {
		return serve, nil
	}
	path := filepath.Join(t.TempDir(), "controller.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return serve, applyServeConfig(serve, path)
}

func TestServeConfigPrecedence(t *testing.T) {
	const file = `
# what the package's /etc/golive/controller.hcl may say
listen           = "127.0.0.1:7500"
metrics_addr     = "127.0.0.1:7501"
max_approval_ttl = "2h"
etcd_endpoints   = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
webhook          = ["json=http://hooks.internal/a", "slack=http://hooks.internal/b"]
rate_limit       = 12.5
rate_burst       = 30
two_person_rule  = true
tls_ca           = "/etc/golive/pki/ca.pem"
log_level        = "debug"
`
	tests := []struct {
		name string
		src  string
		args []string
		want map[string]string // flag name -> value
	}{
		{
			name: "defaults",
			want: map[string]string{"listen": "127.0.0.1:7400", "max-approval-ttl": "12h0m0s", "rate-burst": "100", "two-person-rule": "false", "etcd-endpoints": "", "tls-ca": ""},
		},
		{
			name: "file over defaults",
			src:  file,
			want: map[string]string{
				"listen": "127.0.0.1:7500", "metrics-addr": "127.0.0.1:7501", "max-approval-ttl": "2h0m0s",
				"etcd-endpoints": "http://10.0.0.1:2379,http://10.0.0.2:2379", "webhook": "[json=http://hooks.internal/a,slack=http://hooks.internal/b]",
				"rate-limit": "12.5", "rate-burst": "30", "two-person-rule": "true", "tls-ca": "/etc/golive/pki/ca.pem", "log-level": "debug",
				// not in the file: still the default
				"data-dir": "golive-data", "heartbeat-interval": "5s",
			},
		},
		{
			name: "flags over file",
			src:  file,
			args: []string{"--listen", "127.0.0.1:7600", "--max-approval-ttl", "30m", "--webhook", "json=http://cli/x", "--two-person-rule=false", "--tls-ca", "/tmp/ca.pem"},
			want: map[string]string{
				"listen": "127.0.0.1:7600", "max-approval-ttl": "30m0s", "webhook": "[json=http://cli/x]",
				"two-person-rule": "false", "tls-ca": "/tmp/ca.pem",
				// not given as flags: from the file
				"metrics-addr": "127.0.0.1:7501", "rate-burst": "30",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serve, err := serveWith(t, tt.src, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				fl := serve.Flags().Lookup(name)
				if fl == nil {
					t.Fatalf("serve has no flag --%s", name)
				}
				if got := fl.Value.String(); got != want {
					t.Errorf("--%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestServeConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{name: "unknown key", src: "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n", want: []string{`controller.hcl:2,1-12: unknown setting "listen_addr"`, "known: ", "max_approval_ttl"}},
		{name: "flag spelling", src: `max-approval-ttl = "1h"`, want: []string{`unknown setting "max-approval-ttl"`}},
		{name: "config itself", src: `config = "/etc/other.hcl"`, want: []string{`unknown setting "config"`}},
		{name: "block", src: "tls {\n  ca = \"x\"\n}\n", want: []string{`unexpected block "tls"`}},
		{name: "bad duration", src: `max_approval_ttl = "soon"`, want: []string{"max_approval_ttl", `"soon"`}},
		{name: "list for a scalar", src: `listen = ["a", "b"]`, want: []string{"listen: want a single string, not a list"}},
		{name: "number for a bool", src: `two_person_rule = 3`, want: []string{"two_person_rule", "3"}},
		{name: "every error", src: "nope = 1\nnada = 2\n", want: []string{`"nope"`, `"nada"`}},
		{name: "syntax", src: `listen = `, want: []string{"controller.hcl:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := serveWith(t, tt.src)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The hook in serve: a bad file is a usage error (exit 2) before anything
// starts, and a missing file is named.
func TestServeConfigFileThroughMain(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "controller.hcl")
	if err := os.WriteFile(bad, []byte("listen_address = \"0.0.0.0:7400\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{bad, `unknown setting "listen_address"`},
		{filepath.Join(dir, "missing.hcl"), "missing.hcl: no such file"},
	} {
		var stderr bytes.Buffer
		code := Main(t.Context(), []string{"serve", "--config", tt.path, "--data-dir", dir}, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("serve --config %s: exit %d, stderr %q; want exit 2 naming %q", tt.path, code, stderr.String(), tt.want)
		}
	}
}

// The packaged /etc/golive/controller.hcl applies cleanly and validates.
func TestPackagedControllerConfig(t *testing.T) {
	src, err := os.ReadFile("../../../deploy/packaging/controller.hcl")
	if err != nil {
		t.Fatal(err)
	}
	serve, err := serveWith(t, string(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := serve.Flags().Lookup("listen").Value.String(); got != "127.0.0.1:7400" {
		t.Errorf("listen = %q", got)
	}
}
