package agentconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest config that validates.
const minimal = `host_id = "h1"
service "app" {
  port = 8080
  exec { command = ["bin/app", "--port", "{port}"] }
  health { url = "http://127.0.0.1:{port}/healthz" }
}
`

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "agent.hcl")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.StateDir != DefaultStateDir {
		t.Errorf("StateDir = %q, want %q", c.StateDir, DefaultStateDir)
	}
	wantArt := Artifacts{MaxBytes: 2 << 30, MaxUnpackedBytes: 8 << 30, MaxFiles: 100000, Retries: 3}
	if c.Artifacts != wantArt {
		t.Errorf("Artifacts = %+v, want %+v", c.Artifacts, wantArt)
	}
	if c.Controller.Address != DefaultControllerAddress {
		t.Errorf("Controller.Address = %q", c.Controller.Address)
	}
	if c.SignaturesRequired() {
		t.Error("SignaturesRequired with no trusted keys")
	}
	s := c.Service("app")
	if s == nil {
		t.Fatal("service app missing")
	}
	tests := []struct {
		name string
		give any
		want any
	}{
		{"swap_mode", s.SwapMode, SwapRestart},
		{"manager", s.Manager, ManagerExec},
		{"keep_releases", s.KeepReleases, 5},
		{"exec.stop_timeout", s.Exec.StopTimeout, 10 * time.Second},
		{"health", s.Health, Health{
			URL: "http://127.0.0.1:{port}/healthz", ExpectStatus: 200, Timeout: 2 * time.Second,
			Interval: time.Second, Successes: 3, Deadline: 30 * time.Second, Window: time.Minute,
		}},
		{"hooks.timeout", s.Hooks.Timeout, 30 * time.Second},
		{"database", s.Database, (*Database)(nil)},
		{"migrate", s.Migrate, (*Migrate)(nil)},
		{"blue_green", s.BlueGreen, (*BlueGreen)(nil)},
		{"preflight", s.Preflight, Preflight{TLSPort: 443, CertExpiryDays: 14, MinFreeDiskFactor: 3, MaxBackupAge: 24 * time.Hour}},
		{"log file", c.LogFile(s), "/var/lib/golive/services/app/service.log"},
		{"backup dir", c.BackupDir(s), "/var/lib/golive/services/app/backups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.give, tt.want) {
				t.Errorf("got %#v, want %#v", tt.give, tt.want)
			}
		})
	}
}

func TestDefaultHostIDIsHostname(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname:", err)
	}
	c, err := Parse([]byte(""), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.HostID != host {
		t.Errorf("HostID = %q, want hostname %q", c.HostID, host)
	}
}

func TestSubBlockDefaults(t *testing.T) {
	c := mustParse(t, `host_id = "h1"
service "db" {
  port = 8080
  exec {
    command  = ["bin/app"]
    env_file = "/etc/app/env"
  }
  health { url = "http://127.0.0.1:{port}/" }
  database {}
  migrate { command = ["bin/migrate"] }
  smoke "home" { path = "/" }
}
service "bg" {
  swap_mode = "blue-green"
  exec { command = ["bin/app"] }
  health { url = "http://127.0.0.1:{port}/" }
  blue_green {
    blue_port = 9001
    green_port = 9002
    router {
      kind = "nginx"
      upstream_file = "/etc/nginx/bg.conf"
    }
  }
}
`)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	db := c.Service("db")
	if want := (&Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL", KeepBackups: 10}); !reflect.DeepEqual(db.Database, want) {
		t.Errorf("Database = %+v, want %+v", db.Database, want)
	}
	if got := db.DatabaseEnvFile(); got != "/etc/app/env" {
		t.Errorf("DatabaseEnvFile = %q, want exec.env_file", got)
	}
	if got := db.SecretsEnvFile(); got != "/etc/app/env" {
		t.Errorf("SecretsEnvFile = %q, want exec.env_file", got)
	}
	if db.Migrate.Timeout != 10*time.Minute {
		t.Errorf("Migrate.Timeout = %s", db.Migrate.Timeout)
	}
	sm := db.Smoke[0]
	if sm.Method != "GET" || sm.ExpectStatus != 200 || sm.MaxLatency != 0 {
		t.Errorf("smoke defaults = %+v", sm)
	}
	bg := c.Service("bg").BlueGreen
	want := &BlueGreen{
		BluePort: 9001, GreenPort: 9002, KeepWarm: 15 * time.Minute, DrainTimeout: 30 * time.Second,
		Router: Router{Kind: RouterNginx, UpstreamFile: "/etc/nginx/bg.conf", Reload: []string{"nginx", "-s", "reload"}},
	}
	if !reflect.DeepEqual(bg, want) {
		t.Errorf("BlueGreen = %+v, want %+v", bg, want)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		give string
		want func(t *testing.T, c *Config)
	}{
		{
			name: "empty service list",
			give: `host_id = "h1"`,
			want: func(t *testing.T, c *Config) {
				if len(c.Services) != 0 {
					t.Errorf("Services = %v", c.Services)
				}
			},
		},
		{
			name: "real traffic: nginx access log, haproxy server, metrics path",
			give: `host_id = "h1"
service "web" {
  swap_mode = "blue-green"
  metrics_path = "/metrics"
  exec { command = ["bin/app", "--port", "{port}"] }
  health { url = "http://127.0.0.1:{port}/healthz" }
  blue_green {
    blue_port = 8081
    green_port = 8082
    router {
      kind = "nginx"
      upstream_file = "/etc/nginx/golive/web.conf"
      access_log = "/var/log/nginx/golive.json.log"
    }
  }
}
service "api" {
  port = 9000
  exec { command = ["bin/app", "--port", "{port}"] }
  health { url = "http://127.0.0.1:{port}/healthz" }
  traffic {
    source = "haproxy"
    admin_socket = "/run/haproxy/admin.sock"
    backend = "api"
    server = "api-1"
  }
}`,
			want: func(t *testing.T, c *Config) {
				if err := c.Validate(); err != nil {
					t.Fatal(err)
				}
				web, api := c.Service("web"), c.Service("api")
				if web.MetricsPath != "/metrics" || web.BlueGreen.Router.AccessLog != "/var/log/nginx/golive.json.log" || web.Traffic != nil {
					t.Errorf("web: metrics_path %q, access_log %q, traffic %+v", web.MetricsPath, web.BlueGreen.Router.AccessLog, web.Traffic)
				}
				want := Traffic{Source: TrafficHAProxy, AdminSocket: "/run/haproxy/admin.sock", Backend: "api", Server: "api-1"}
				if api.Traffic == nil || *api.Traffic != want || api.MetricsPath != "" {
					t.Errorf("api: traffic %+v, want %+v; metrics_path %q", api.Traffic, want, api.MetricsPath)
				}
			},
		},
		{
			name: "sizes and retries",
			give: `host_id = "h1"
artifacts {
  max_bytes = "512MiB"
  max_unpacked_bytes = "1GB"
  max_files = 10
  retries = 0
}`,
			want: func(t *testing.T, c *Config) {
				want := Artifacts{MaxBytes: 512 << 20, MaxUnpackedBytes: 1e9, MaxFiles: 10, Retries: 0}
				if c.Artifacts != want {
					t.Errorf("Artifacts = %+v, want %+v", c.Artifacts, want)
				}
			},
		},
		{
			name: "labels and trusted keys",
			give: `host_id = "web-1.eu"
labels = { role = "web", zone = "a" }
trusted_keys = ["/etc/golive/keys/a.pub", "/etc/golive/keys/b.pub"]`,
			want: func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c.Labels, map[string]string{"role": "web", "zone": "a"}) {
					t.Errorf("Labels = %v", c.Labels)
				}
				if !c.SignaturesRequired() || len(c.TrustedKeys) != 2 {
					t.Errorf("TrustedKeys = %v", c.TrustedKeys)
				}
			},
		},
		{
			name: "systemd restart",
			give: `host_id = "h1"
service "app" {
  manager = "systemd"
  unit = "app.service"
  health { url = "http://127.0.0.1:8080/healthz" }
}`,
			want: func(t *testing.T, c *Config) {
				s := c.Services[0]
				if s.UnitName("") != "app.service" || s.Exec != nil || s.Ports() != nil {
					t.Errorf("service = %+v", s)
				}
			},
		},
		{
			name: "haproxy blue-green",
			give: `host_id = "h1"
service "api" {
  swap_mode = "blue-green"
  manager = "systemd"
  unit = "api@"
  health { url = "https://localhost:{port}/healthz" }
  blue_green {
    blue_port = 8081
    green_port = 8082
    router {
      kind = "haproxy"
      admin_socket = "/run/haproxy/admin.sock"
      backend = "api"
    }
  }
}`,
			want: func(t *testing.T, c *Config) {
				s := c.Services[0]
				if got := s.UnitName(SlotGreen); got != "api@green.service" {
					t.Errorf("UnitName(green) = %q", got)
				}
				if p, ok := s.SlotPort(SlotBlue); !ok || p != 8081 {
					t.Errorf("SlotPort(blue) = %d, %v", p, ok)
				}
				if got := s.Ports(); !reflect.DeepEqual(got, []int{8081, 8082}) {
					t.Errorf("Ports = %v", got)
				}
				if s.BlueGreen.Router.Reload != nil {
					t.Errorf("haproxy got an nginx reload default: %v", s.BlueGreen.Router.Reload)
				}
			},
		},
		{
			name: "numbers as strings and bare byte counts",
			give: `host_id = "h1"
artifacts { max_bytes = 1048576 }
service "app" {
  port = "8080"
  exec { command = ["/opt/app/bin/app"] }
  health { url = "http://127.0.0.1:{port}/" }
}`,
			want: func(t *testing.T, c *Config) {
				if c.Artifacts.MaxBytes != 1<<20 || c.Services[0].Port != 8080 {
					t.Errorf("MaxBytes = %d, Port = %d", c.Artifacts.MaxBytes, c.Services[0].Port)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.give)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			tt.want(t, c)
		})
	}
}

// TestParseErrors covers what Parse itself refuses: syntax, schema, types,
// durations and sizes. Each want is the whole error text.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{
			name: "syntax",
			give: "host_id = \"h1\"\nservice \"app\" {\n",
			want: `agent.hcl:2: Unclosed configuration block: There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file.`,
		},
		{
			name: "unknown attribute",
			give: "host_id = \"h1\"\nhostid = \"h2\"\n",
			want: `agent.hcl:2: Unsupported argument: An argument named "hostid" is not expected here.`,
		},
		{
			name: "unknown block",
			give: "host_id = \"h1\"\n\nservce \"app\" {}\n",
			want: `agent.hcl:3: Unsupported block type: Blocks of type "servce" are not expected here. Did you mean "service"?`,
		},
		{
			name: "unknown attribute in nested block",
			give: "service \"app\" {\n  health {\n    url = \"http://x/\"\n    retries = 3\n  }\n}\n",
			want: `agent.hcl:4: Unsupported argument: An argument named "retries" is not expected here.`,
		},
		{
			name: "duplicate block",
			give: "service \"app\" {\n  health {}\n  health {}\n}\n",
			want: `agent.hcl:3: Duplicate health block: Only one health block is allowed. Another was defined at agent.hcl:2,3-9.`,
		},
		{
			name: "missing service label",
			give: "service {\n}\n",
			want: `agent.hcl:1: Missing name for service: All service blocks must have 1 labels (name).`,
		},
		{
			name: "invalid duration",
			give: "service \"app\" {\n  health {\n    url = \"http://127.0.0.1:{port}/healthz\"\n    timeout = \"2x\"\n  }\n}\n",
			want: `agent.hcl:4: service "app": health.timeout: invalid duration "2x" (want e.g. "500ms", "30s", "10m", "720h")`,
		},
		{
			name: "duration without unit",
			give: "service \"app\" {\n  hooks { timeout = 30 }\n}\n",
			want: `agent.hcl:2: service "app": hooks.timeout: invalid duration "30" (want e.g. "500ms", "30s", "10m", "720h")`,
		},
		{
			name: "invalid size",
			give: "artifacts {\n  max_bytes = \"2XB\"\n}\n",
			want: `agent.hcl:2: artifacts.max_bytes: invalid size "2XB" (want e.g. "512MiB", "2GiB", "1GB")`,
		},
		{
			name: "wrong type",
			give: "service \"app\" {\n  exec { command = \"bin/app\" }\n}\n",
			want: `agent.hcl:2: service "app": exec.command: want a list of strings, got string`,
		},
		{
			name: "fractional int",
			give: "service \"app\" {\n  port = 80.5\n}\n",
			want: `agent.hcl:2: service "app": port: want a whole number, got 80.5`,
		},
		{
			name: "huge number literal",
			give: "host_id = \"h1\"\nartifacts {\n  max_files = 1e9999999\n}\n",
			want: `agent.hcl:3: Number out of range: Numbers must be within the range of a 64-bit float.`,
		},
		{
			name: "huge computed number",
			give: "host_id = 1e300 * 1e300\n",
			want: `agent.hcl:1: host_id: number out of range`,
		},
		{
			name: "variables not allowed",
			give: "host_id = var.host\n",
			want: `agent.hcl:1: host_id: Variables not allowed: Variables may not be used here.`,
		},
		{
			name: "smoke field",
			give: "service \"app\" {\n  smoke \"home\" {\n    max_latency = \"fast\"\n  }\n}\n",
			want: `agent.hcl:3: service "app": smoke "home".max_latency: invalid duration "fast" (want e.g. "500ms", "30s", "10m", "720h")`,
		},
		{
			name: "every error at once, in line order",
			give: "artifacts { max_bytes = \"lots\" }\nbogus = 1\nservice \"app\" {\n  port = \"http\"\n}\n",
			want: `agent.hcl:1: artifacts.max_bytes: invalid size "lots" (want e.g. "512MiB", "2GiB", "1GB")
agent.hcl:2: Unsupported argument: An argument named "bogus" is not expected here.
agent.hcl:4: service "app": port: want a whole number, got string`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.give), "agent.hcl")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Errorf("error %T is not Errors", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("host_id = \"h1\"\nservice \"app\" {\n  keep_releases = 1\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), bad+`:3: service "app": keep_releases: must be at least 2`) {
		t.Errorf("Validate = %v, want the full path and line", err)
	}

	big := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", maxFileSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want a size error", err)
	}

	if _, err := Load(filepath.Join(dir, "missing.hcl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestFlagOverrides(t *testing.T) {
	c := mustParse(t, "host_id = \"bad host\"\nstate_dir = \"relative\"\n")
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "agent.hcl:1: host_id:") || !strings.Contains(err.Error(), "agent.hcl:2: state_dir:") {
		t.Fatalf("Validate = %v, want positioned host_id and state_dir errors", err)
	}
	c.SetHostID("also bad")
	c.SetStateDir("still/relative")
	want := `host_id: "also bad" must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} (it must also match the agent's certificate name)
state_dir: "still/relative" must be an absolute path`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate after flags:\n got: %v\nwant: %s", err, want)
	}
	c.SetHostID("web-1")
	c.SetStateDir("/srv/golive")
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestHelpers(t *testing.T) {
	c := mustParse(t, `host_id = "h1"
state_dir = "/srv/golive"
service "app" {
  port = 8080
  exec {
    command = ["bin/app", "--listen=:{port}", "{port}"]
    env = { ADDR = "127.0.0.1:{port}", MODE = "prod" }
  }
  health { url = "http://127.0.0.1:{port}/healthz?x=1" }
  smoke "home" { path = "/index.html?q=a" }
}`)
	s := c.Service("app")
	tests := []struct {
		name string
		give any
		want any
	}{
		{"HealthURL", s.HealthURL(9000), "http://127.0.0.1:9000/healthz?x=1"},
		{"Command", s.Command(9000), []string{"bin/app", "--listen=:9000", "9000"}},
		{"Env", s.Env(9000), map[string]string{"ADDR": "127.0.0.1:9000", "MODE": "prod"}},
		{"SmokeURL", s.SmokeURL(s.Smoke[0], 9000), "http://127.0.0.1:9000/index.html?q=a"},
		{"Ports", s.Ports(), []int{8080}},
		{"ServiceDir", c.ServiceDir("app"), "/srv/golive/services/app"},
		{"LogFile", c.LogFile(s), "/srv/golive/services/app/service.log"},
		{"BackupDir", c.BackupDir(s), "/srv/golive/services/app/backups"},
		{"missing service", c.Service("nope"), (*Service)(nil)},
		{"ExpandPort", ExpandPort("{port}-{port}", 1), "1-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.give, tt.want) {
				t.Errorf("got %#v, want %#v", tt.give, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		give    string
		want    int64
		wantErr bool
	}{
		{give: "0", want: 0},
		{give: "512", want: 512},
		{give: "512B", want: 512},
		{give: "64KiB", want: 64 << 10},
		{give: "1.5GiB", want: 3 << 29},
		{give: "2GiB", want: 2 << 30},
		{give: "2gib", want: 2 << 30},
		{give: "1GB", want: 1e9},
		{give: "3 MB", want: 3e6},
		{give: "1TiB", want: 1 << 40},
		{give: "", wantErr: true},
		{give: "GiB", wantErr: true},
		{give: "-1GiB", wantErr: true},
		{give: "2XB", wantErr: true},
		{give: "1.2.3MB", wantErr: true},
		{give: "99999999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseSize(tt.give)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSize(%q) error = %v, wantErr %v", tt.give, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.give, got, tt.want)
			}
		})
	}
}

func TestExampleFile(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "examples", "agent.hcl")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate:\n%v", err)
	}
	if c.HostID != "web-1" || len(c.Services) != 2 || !c.SignaturesRequired() {
		t.Errorf("unexpected example: host %q, %d services", c.HostID, len(c.Services))
	}
	app, api := c.Service("app"), c.Service("api")
	if app == nil || api == nil {
		t.Fatal("example lacks service app or api")
	}
	if app.Database == nil || app.Migrate == nil || len(app.Smoke) != 2 || app.Health.Timeout != 2*time.Second {
		t.Errorf("app = %+v", app)
	}
	if api.SwapMode != SwapBlueGreen || api.BlueGreen.Router.Kind != RouterNginx || api.UnitName(SlotBlue) != "api@blue.service" {
		t.Errorf("api = %+v", api)
	}
}
