package controllercli_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"golive-controller": func() {
			os.Exit(controllercli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

// TestScripts runs testdata/script/*.txt, each against its own controller
// on an embedded etcd (GOLIVE_ADDR points at it; DEAD_ADDR at nothing).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:  "testdata/script",
		Cmds: map[string]func(*testscript.TestScript, bool, []string){"rc": exitCode},
		Setup: func(env *testscript.Env) error {
			cfg := testenv.ControllerConfig(t)
			cfg.MaxApprovalTTL = 2 * 60 * 60 * 1e9 // 2h
			c := testenv.StartController(t, cfg)
			env.Defer(c.Stop)
			env.Setenv("GOLIVE_ADDR", c.GRPCAddr())
			env.Setenv("DEAD_ADDR", etcdtest.FreeAddr(t))
			return nil
		},
	})
}

// exitCode N CMD ARGS... runs CMD and checks that it exits N (stdout and
// stderr are kept for the next checks).
func exitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: rc N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("rc %q: want an exit code", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}
