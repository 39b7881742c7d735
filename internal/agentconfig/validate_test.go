package agentconfig

import (
	"errors"
	"strings"
	"testing"
)

// svc wraps body lines into a config with one service "app" that starts on
// line 2, so the body's first line is line 3.
func svc(body ...string) string {
	return "host_id = \"h1\"\nservice \"app\" {\n" + strings.Join(body, "\n") + "\n}\n"
}

// Lines of a valid restart service, to combine with the line under test.
const (
	port   = `  port = 8080`
	exec   = `  exec { command = ["bin/app"] }`
	health = `  health { url = "http://127.0.0.1:{port}/healthz" }`
)

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string // the whole error text
	}{
		{
			name: "host id",
			give: "host_id = \"-web\"\n",
			want: `agent.hcl:1: host_id: "-web" must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} (it must also match the agent's certificate name)`,
		},
		{
			name: "label key",
			give: "host_id = \"h1\"\nlabels = { \"bad key\" = \"x\" }\n",
			want: `agent.hcl:2: labels: key "bad key" must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}`,
		},
		{
			name: "relative trusted key",
			give: "host_id = \"h1\"\ntrusted_keys = [\"keys/release.pub\"]\n",
			want: `agent.hcl:2: trusted_keys: key file "keys/release.pub" must be an absolute path`,
		},
		{
			name: "partial mTLS",
			give: "host_id = \"h1\"\ncontroller {\n  address = \"c:7400\"\n  cert_file = \"/etc/golive/agent.pem\"\n}\n",
			want: `agent.hcl:2: controller: set all of ca_file, cert_file and key_file (mTLS), or none (loopback dev mode)`,
		},
		{
			name: "controller address",
			give: "host_id = \"h1\"\ncontroller {\n  address = \"controller\"\n}\n",
			want: `agent.hcl:3: controller.address: "controller" is not host:port`,
		},
		{
			name: "artifacts",
			give: "host_id = \"h1\"\nartifacts {\n  max_bytes = \"0\"\n  retries = -1\n}\n",
			want: `agent.hcl:3: artifacts.max_bytes: must be positive
agent.hcl:4: artifacts.retries: must be between 0 and 100, got -1`,
		},
		{
			name: "service name",
			give: "host_id = \"h1\"\nservice \"my app\" {\n" + port + "\n" + exec + "\n" + health + "\n}\n",
			want: `agent.hcl:2: service "my app": name must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}`,
		},
		{
			name: "duplicate service",
			give: svc(port, exec, health) + "service \"app\" {\n" + port + "\n" + exec + "\n" + health + "\n}\n",
			want: `agent.hcl:7: service "app": duplicate service name (first defined at agent.hcl:2)`,
		},
		{
			name: "swap mode enum",
			give: svc(`  swap_mode = "rolling"`, port, exec, health),
			want: `agent.hcl:3: service "app": swap_mode: must be "restart" or "blue-green", got "rolling"`,
		},
		{
			name: "manager enum",
			give: svc(`  manager = "docker"`, port, exec, health),
			want: `agent.hcl:3: service "app": manager: must be "exec" or "systemd", got "docker"`,
		},
		{
			name: "exec manager needs a command",
			give: svc(port, health),
			want: `agent.hcl:2: service "app": exec.command: is required with manager = "exec"`,
		},
		{
			name: "exec block without command points at the block",
			give: svc(port, `  exec { env_file = "/etc/app/env" }`, health),
			want: `agent.hcl:4: service "app": exec.command: is required with manager = "exec"`,
		},
		{
			name: "command leaves the release",
			give: svc(port, `  exec { command = ["../../bin/sh"] }`, health),
			want: `agent.hcl:4: service "app": exec.command: program "../../bin/sh" leaves the release dir`,
		},
		{
			name: "systemd manager needs a unit",
			give: svc(`  manager = "systemd"`, port, health),
			want: `agent.hcl:2: service "app": unit: is required with manager = "systemd"`,
		},
		{
			name: "systemd with exec command",
			give: svc(`  manager = "systemd"`, `  unit = "app.service"`, port, exec, health),
			want: `agent.hcl:6: service "app": exec.command: is not used with manager = "systemd": the unit says what runs`,
		},
		{
			name: "restart unit is a template",
			give: svc(`  manager = "systemd"`, `  unit = "app@"`, port, health),
			want: `agent.hcl:4: service "app": unit: "app@" is a template prefix; with swap_mode = "restart" name the unit (e.g. "app.service")`,
		},
		{
			name: "port range",
			give: svc(`  port = 70000`, exec, health),
			want: `agent.hcl:3: service "app": port: must be a port between 1 and 65535, got 70000`,
		},
		{
			name: "explicit zero port",
			give: svc(`  port = 0`, exec, `  health { url = "http://127.0.0.1:8080/" }`),
			want: `agent.hcl:3: service "app": port: must be a port between 1 and 65535, got 0`,
		},
		{
			name: "placeholder without a port",
			give: svc(exec, health),
			want: `agent.hcl:4: service "app": port: is required: {port} is used in health.url or exec`,
		},
		{
			name: "keep releases",
			give: svc(`  keep_releases = 1`, port, exec, health),
			want: `agent.hcl:3: service "app": keep_releases: must be at least 2 (the live release and one to roll back to), got 1`,
		},
		{
			name: "health block required",
			give: svc(port, exec),
			want: `agent.hcl:2: service "app": health.url: is required`,
		},
		{
			name: "health url required points at the block",
			give: svc(port, exec, `  health {`, `    timeout = "1s"`, `  }`),
			want: `agent.hcl:5: service "app": health.url: is required`,
		},
		{
			name: "health url scheme",
			give: svc(port, exec, `  health { url = "127.0.0.1:{port}/healthz" }`),
			want: `agent.hcl:5: service "app": health.url: "127.0.0.1:{port}/healthz" must be an http:// or https:// URL`,
		},
		{
			name: "unknown placeholder",
			give: svc(port, exec, `  health { url = "http://{host}:{port}/" }`),
			want: `agent.hcl:5: service "app": health.url: unknown placeholder "{host}" (only {port} is expanded)`,
		},
		{
			name: "health numbers and durations",
			give: svc(port, exec, `  health {`, `    url = "http://127.0.0.1:{port}/"`, `    successes = 0`, `    expect_status = 1000`, `    interval = "-1s"`, `    deadline = "1s"`, `  }`),
			want: `agent.hcl:7: service "app": health.successes: must be at least 1, got 0
agent.hcl:8: service "app": health.expect_status: must be an HTTP status between 100 and 599, got 1000
agent.hcl:9: service "app": health.interval: must be a positive duration, got -1s
agent.hcl:10: service "app": health.deadline: (1s) must be at least health.timeout (2s)`,
		},
		{
			name: "zero duration",
			give: svc(port, exec, health, `  hooks { timeout = "0s" }`),
			want: `agent.hcl:6: service "app": hooks.timeout: must be a positive duration, got 0s`,
		},
		{
			name: "empty hook",
			give: svc(port, exec, health, `  hooks { pre_swap = [] }`),
			want: `agent.hcl:6: service "app": hooks.pre_swap: must not be empty`,
		},
		{
			name: "migrate needs a database",
			give: svc(port, exec, health, `  migrate { command = ["bin/migrate"] }`),
			want: `agent.hcl:6: service "app": migrate: needs a database block: a backup is taken before every migration`,
		},
		{
			name: "database needs an env file",
			give: svc(port, exec, health, `  database {`, `    kind = "mysql"`, `  }`),
			want: `agent.hcl:6: service "app": database.env_file: is required (or set exec.env_file): the DSN is read from it
agent.hcl:7: service "app": database.kind: must be "postgres", got "mysql"`,
		},
		{
			name: "blue-green needs its block",
			give: svc(`  swap_mode = "blue-green"`, exec, health),
			want: `agent.hcl:2: service "app": blue_green: block is required with swap_mode = "blue-green"`,
		},
		{
			name: "blue-green ports distinct",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8081`, `  }`),
			want: `agent.hcl:8: service "app": blue_green.green_port: must differ from blue_port (8081)`,
		},
		{
			name: "blue-green port missing",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `  }`),
			want: `agent.hcl:6: service "app": blue_green.green_port: must be a port between 1 and 65535, got 0`,
		},
		{
			name: "blue-green with a port",
			give: svc(`  swap_mode = "blue-green"`, port, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `  }`),
			want: `agent.hcl:4: service "app": port: is not used with swap_mode = "blue-green": slots listen on blue_green.blue_port and green_port`,
		},
		{
			name: "blue_green block in restart mode",
			give: svc(port, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `  }`),
			want: `agent.hcl:6: service "app": blue_green: block is only used with swap_mode = "blue-green"`,
		},
		{
			name: "blue-green systemd unit must be a template",
			give: svc(`  swap_mode = "blue-green"`, `  manager = "systemd"`, `  unit = "app.service"`, health,
				`  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `  }`),
			want: `agent.hcl:5: service "app": unit: must be a template prefix ending in "@" with swap_mode = "blue-green" (e.g. "app@": slots run as app@blue and app@green), got "app.service"`,
		},
		{
			name: "router kind enum",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `    router { kind = "traefik" }`, `  }`),
			want: `agent.hcl:9: service "app": blue_green.router.kind: must be "nginx", "haproxy" or "none", got "traefik"`,
		},
		{
			name: "nginx router needs an upstream file",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `    router {`, `      kind = "nginx"`, `      backend = "app"`, `    }`, `  }`),
			want: `agent.hcl:9: service "app": blue_green.router.upstream_file: is required with kind = "nginx"
agent.hcl:11: service "app": blue_green.router.backend: is not used with router kind "nginx"`,
		},
		{
			name: "haproxy router",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `    router {`, `      kind = "haproxy"`, `      admin_socket = "run/haproxy.sock"`, `    }`, `  }`),
			want: `agent.hcl:9: service "app": blue_green.router.backend: is required with kind = "haproxy"
agent.hcl:11: service "app": blue_green.router.admin_socket: "run/haproxy.sock" must be an absolute path`,
		},
		{
			name: "access log only with nginx, absolute",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `    router {`, `      kind = "haproxy"`, `      admin_socket = "/run/haproxy.sock"`, `      backend = "app"`, `      access_log = "/var/log/nginx/golive.json.log"`, `    }`, `  }`,
				`  metrics_path = "metrics"`),
			want: `agent.hcl:13: service "app": blue_green.router.access_log: is not used with router kind "haproxy"
agent.hcl:16: service "app": metrics_path: must be a URL path starting with "/" (e.g. "/metrics"), got "metrics"`,
		},
		{
			name: "nginx access log path",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `    router {`, `      kind = "nginx"`, `      upstream_file = "/etc/nginx/golive/app.conf"`, `      access_log = "golive.json.log"`, `    }`, `  }`),
			want: `agent.hcl:12: service "app": blue_green.router.access_log: "golive.json.log" must be an absolute path`,
		},
		{
			name: "traffic block: haproxy needs backend and server",
			give: svc(port, exec, health, `  traffic {`, `    source = "haproxy"`, `    admin_socket = "/run/haproxy/admin.sock"`, `    server = "app 1"`, `    access_log = "/var/log/x.log"`, `  }`),
			want: `agent.hcl:6: service "app": traffic.backend: is required with source = "haproxy"
agent.hcl:9: service "app": traffic.server: "app 1" must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}
agent.hcl:10: service "app": traffic.access_log: is not used with source "haproxy"`,
		},
		{
			name: "traffic block: nginx needs an access log and a port",
			give: svc(exec, `  health { url = "http://127.0.0.1:9000/healthz" }`, `  traffic { source = "nginx" }`),
			want: `agent.hcl:5: service "app": traffic.access_log: is required with source = "nginx"
agent.hcl:5: service "app": port: is required with traffic source = "nginx": the service's requests are those to 127.0.0.1:<port>`,
		},
		{
			name: "traffic block: source enum",
			give: svc(port, exec, health, `  traffic { source = "envoy" }`),
			want: `agent.hcl:6: service "app": traffic.source: must be "nginx" or "haproxy", got "envoy"`,
		},
		{
			name: "traffic block: not with blue-green",
			give: svc(`  swap_mode = "blue-green"`, exec, health, `  blue_green {`, `    blue_port = 8081`, `    green_port = 8082`, `  }`, `  traffic { source = "nginx" }`),
			want: `agent.hcl:10: service "app": traffic: block is only used with swap_mode = "restart": a blue-green service's traffic is read through blue_green.router (access_log for nginx, admin_socket for haproxy)`,
		},
		{
			name: "preflight",
			give: svc(port, exec, health, `  preflight {`, `    domain = "not a domain"`, `    required_secrets = ["STRIPE-KEY"]`, `    min_free_disk_factor = 0`, `  }`),
			want: `agent.hcl:7: service "app": preflight.domain: "not a domain" is not a DNS name
agent.hcl:8: service "app": preflight.required_secrets: need an env file to look in: set preflight.env_file or exec.env_file
agent.hcl:8: service "app": preflight.required_secrets: "STRIPE-KEY" is not a valid environment variable name
agent.hcl:9: service "app": preflight.min_free_disk_factor: must be positive, got 0`,
		},
		{
			name: "smoke checks",
			give: svc(port, exec, health, `  smoke "home" {`, `    method = "get"`, `    path = "home"`, `    max_latency = "0s"`, `  }`, `  smoke "home" { path = "/" }`),
			want: `agent.hcl:7: service "app": smoke "home".method: "get" is not an upper-case HTTP method such as GET
agent.hcl:8: service "app": smoke "home".path: must start with "/", got "home"
agent.hcl:9: service "app": smoke "home".max_latency: must be a positive duration, got 0s
agent.hcl:11: service "app": smoke "home": duplicate smoke check name (first defined at agent.hcl:6)`,
		},
		{
			name: "smoke path missing points at the block",
			give: svc(port, exec, health, `  smoke "home" {}`),
			want: `agent.hcl:6: service "app": smoke "home".path: must start with "/", got ""`,
		},
		{
			name: "env names",
			give: svc(port, `  exec {`, `    command = ["bin/app"]`, `    env = { "A-B" = "1" }`, `    log_file = "app.log"`, `  }`, health),
			want: `agent.hcl:6: service "app": exec.env: "A-B" is not a valid environment variable name
agent.hcl:7: service "app": exec.log_file: "app.log" must be an absolute path`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.give)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want:\n%s", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors", err)
			}
			for _, e := range es {
				if e.Field == "" {
					t.Errorf("error without a field: %v", e)
				}
			}
		})
	}
}

// TestValidateProgrammatic checks a config built in Go (no file): errors
// name the field and carry no position.
func TestValidateProgrammatic(t *testing.T) {
	c := Default()
	c.HostID = "h1"
	s := DefaultService("app")
	s.Port = 8080
	s.Exec = &Exec{Command: []string{"bin/app"}, StopTimeout: 0}
	s.Health.URL = "http://127.0.0.1:{port}/"
	c.Services = []*Service{s}
	want := `service "app": exec.stop_timeout: must be a positive duration, got 0s`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate:\n got: %v\nwant: %s", err, want)
	}
	s.Exec.StopTimeout = 1
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
