package agentconfig

import (
	"strings"
	"testing"
	"time"
)

func TestScaleValid(t *testing.T) {
	c := mustParse(t, svc(port, exec, health, `  scale {
    min = 1
    max = 4
    target_rps = 50
  }`))
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	sc := c.Services[0].Scale
	if sc.Min != 1 || sc.Max != 4 || sc.TargetRPS != 50 || sc.Tolerance != 0.1 || sc.Interval != 15*time.Second ||
		sc.ScaleDownWindow != 300*time.Second || sc.Router.Kind != RouterNone {
		t.Fatalf("scale %+v", sc)
	}
	if got := c.Services[0].InstancePort(8080, 3); got != 8083 {
		t.Fatalf("instance 3 port %d", got)
	}
	c = mustParse(t, svc(port, exec, health, `  scale {
    max = 3
    query = "sum(rate(x[1m]))"
    target_value = 10
    ports = "8080-8083"
    router {
      kind = "nginx"
      upstream_file = "/etc/nginx/golive/app.conf"
    }
  }`))
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if sc := c.Services[0].Scale; sc.PortsFrom != 8080 || sc.PortsTo != 8083 || len(sc.Router.Reload) == 0 {
		t.Fatalf("scale %+v", sc)
	}
}

func TestScaleErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string // a part of the error
	}{
		{"min", svc(port, exec, health, `  scale {
 min = 0
 max = 2
 target_rps = 5
}`), `scale.min: must be at least 1, got 0`},
		{"max below min", svc(port, exec, health, `  scale {
 min = 3
 max = 2
 target_rps = 5
}`), `scale.max: must be at least min (3), got 2`},
		{"no target", svc(port, exec, health, `  scale { max = 2 }`), `set exactly one target`},
		{"two targets", svc(port, exec, health, `  scale {
 max = 2
 target_rps = 5
 target_cpu = 0.5
}`), `set exactly one target`},
		{"query without value", svc(port, exec, health, `  scale {
 max = 2
 query = "up"
}`), `scale.target_value: must be positive with query`},
		{"small range", svc(port, exec, health, `  scale {
 max = 4
 target_rps = 5
 ports = "8080-8082"
}`), `scale.ports: holds 3 ports (8080-8082): it needs at least max = 4`},
		{"bad range", svc(port, exec, health, `  scale {
 max = 2
 target_rps = 5
 ports = "80x"
}`), `is not a port range`},
		{"range not at port", svc(port, exec, health, `  scale {
 max = 2
 target_rps = 5
 ports = "9000-9001"
}`), `scale.ports: must start at port (8080)`},
		{"nginx router without file", svc(port, exec, health, `  scale {
 max = 2
 target_rps = 5
 router { kind = "nginx" }
}`), `scale.router.upstream_file: is required with kind = "nginx"`},
		{"blue-green", "host_id = \"h1\"\nservice \"app\" {\n swap_mode = \"blue-green\"\n" + exec + "\n" + health +
			"\n blue_green {\n blue_port = 8081\n green_port = 8091\n }\n scale {\n max = 2\n target_rps = 5\n }\n}\n", `scale: block is only supported with swap_mode = "restart"`},
		{"overlap", svc(port, exec, health, `  scale {
 max = 4
 target_rps = 5
}`) + "service \"b\" {\n port = 8082\n" + exec + "\n" + health + "\n}\n", `port 8082 is used by service "app" too`},
		{"overlap blue-green slot", svc(port, exec, health, `  scale {
 max = 4
 target_rps = 5
}`) + "service \"b\" {\n swap_mode = \"blue-green\"\n" + exec + "\n" + health + "\n blue_green {\n blue_port = 8083\n green_port = 8093\n }\n}\n", `port 8083 is used by service`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.give), "agent.hcl")
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
