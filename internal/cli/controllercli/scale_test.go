package controllercli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/golive/golive/internal/testenv"
)

// TestScaleCommands: bad command lines exit 2; against a controller with
// no scaled service, status says so (text and JSON) and set is refused
// naming why.
func TestScaleCommands(t *testing.T) {
	for _, args := range [][]string{{"scale", "set"}, {"scale", "set", "--service", "web"}, {"scale", "set", "--service", "web", "--instances", "0"},
		{"scale", "status", "extra"}} {
		if code, _, stderr := cliRun(t, "127.0.0.1:1", args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d (%s), want 2 with a message", args, code, stderr)
		}
	}
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	if code, stdout, stderr := cliRun(t, c.GRPCAddr(), "scale", "status"); code != 0 || !strings.Contains(stdout, "no scaled service") {
		t.Fatalf("scale status: exit %d: %s%s", code, stdout, stderr)
	}
	code, stdout, stderr := cliRun(t, c.GRPCAddr(), "scale", "status", "-o", "json")
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil {
		t.Fatalf("scale status -o json: exit %d: %s%s", code, stdout, stderr)
	}
	if code, _, stderr := cliRun(t, c.GRPCAddr(), "scale", "set", "--service", "web", "--instances", "2"); code != 1 || !strings.Contains(stderr, "no host runs service \"web\" with a scale block") {
		t.Fatalf("scale set of a service no host runs: exit %d: %s", code, stderr)
	}
}
