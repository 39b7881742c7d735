package rolloutbench

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/bench/benchkit"
)

// buildBinaries builds the controller and the agent from the module root
// into a temporary directory.
func buildBinaries(t *testing.T) (controller, agent string) {
	t.Helper()
	root, err := benchkit.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{
		{"golive-controller", "./cmd/controller"},
		{"golive-agent", "./cmd/agent"},
	} {
		if err := benchkit.BuildBinary(t.Context(), root, filepath.Join(dir, b.out), b.pkg, nil); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "golive-controller"), filepath.Join(dir, "golive-agent")
}

func TestRunFiveHosts(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctl, agent := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	dir := t.TempDir()
	res, err := Run(ctx, Options{Hosts: 5, ControllerBin: ctl, AgentBin: agent, HeartbeatInterval: time.Second,
		Timeout: 60 * time.Second, WorkDir: dir, Log: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.RolloutState != "succeeded" || res.Rollout <= 0 || res.Waves != 3 {
		t.Errorf("v2: %s after %v in %d waves, want succeeded in 3 (canary, 2 of 25%%)", res.RolloutState, res.Rollout, res.Waves)
	}
	if res.FailingHost != "web-005" || res.FailState != "rolled_back" || res.Touched != 5 || res.ServeOld <= 0 {
		t.Errorf("v3: failing %s, %s (%s), %d touched, served v2 after %v; want web-005, rolled_back, 5, > 0",
			res.FailingHost, res.FailState, res.FailReason, res.Touched, res.ServeOld)
	}
	if !strings.Contains(res.FailReason, "web-005") {
		t.Errorf("v3 rolled back for %q, want the failing host named", res.FailReason)
	}
	if res.Leftovers != 0 {
		t.Errorf("%d processes were left behind by the agents", res.Leftovers)
	}
	if n := killUnder(dir); n != 0 {
		t.Errorf("%d processes still running in the run's directory", n)
	}
	var table bytes.Buffer
	if err := PrintTable(&table, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	for _, want := range []string{"rollout <= 10 s", "serve old s", "v3 waves"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		give Options
	}{
		{give: Options{Hosts: 1}},
		{give: Options{Hosts: 1000}},
		{give: Options{Timeout: -time.Second}},
		{give: Options{HeartbeatInterval: -time.Second}},
	}
	for _, tt := range tests {
		if err := tt.give.defaults(); err == nil {
			t.Errorf("%+v: no error", tt.give)
		}
	}
}
