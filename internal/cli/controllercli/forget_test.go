package controllercli_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// cliRun runs golive-controller against addr and returns its exit code,
// stdout and stderr.
func cliRun(t *testing.T, addr string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := controllercli.Main(t.Context(), append([]string{"--addr", addr, "--as", "carol"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestAgentsForget(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	a := testenv.StartAgent(t, "web-9", "", nil, c.GRPCAddr())
	testenv.WaitFor(t, 10*time.Second, "agent connected", a.Connected)
	if code, _, stderr := cliRun(t, c.GRPCAddr(), "agents", "forget", "web-9"); code != 1 || !strings.Contains(stderr, "is connected") {
		t.Fatalf("forget of a connected agent: exit %d, %s", code, stderr)
	}

	a.Stop()
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "test")
	testenv.WaitFor(t, 20*time.Second, "agent lost", func() bool {
		resp, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(resp.Agents) == 1 && resp.Agents[0].State == "lost"
	})
	code, stdout, stderr := cliRun(t, c.GRPCAddr(), "agents", "forget", "web-9", "--reason", "decommissioned")
	if code != 0 || !strings.Contains(stdout, "agent web-9 forgotten") {
		t.Fatalf("forget: exit %d: %s%s", code, stdout, stderr)
	}
	if _, stdout, _ := cliRun(t, c.GRPCAddr(), "agents"); strings.Contains(stdout, "web-9") {
		t.Errorf("agents still lists web-9:\n%s", stdout)
	}
	if _, stdout, _ := cliRun(t, c.GRPCAddr(), "audit", "--action", "forget_agent"); !strings.Contains(stdout, "carol") || !strings.Contains(stdout, "host=web-9") || !strings.Contains(stdout, "decommissioned") {
		t.Errorf("audit lacks the forget:\n%s", stdout)
	}
	if code, _, stderr := cliRun(t, c.GRPCAddr(), "agents", "forget", "web-9"); code != 1 || !strings.Contains(stderr, "no agent web-9") {
		t.Errorf("forget twice: exit %d, %s", code, stderr)
	}
}
