package controllercli_test

import (
	"context"
	"os"
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
		Dir: "testdata/script",
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
