package controllercli_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/testenv"
)

// TestPreflightScripts runs testdata/preflight/*.txt, each against its own
// controller and two in-process agents running service "app", which
// requires the secret API_KEY: web-1's env file sets it, web-2's does not.
func TestPreflightScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:  "testdata/preflight",
		Cmds: map[string]func(*testscript.TestScript, bool, []string){"rc": exitCode},
		Setup: func(env *testscript.Env) error {
			c := testenv.StartController(t, testenv.ControllerConfig(t))
			env.Defer(c.Stop)
			var agents []*testenv.Agent
			for _, h := range []struct {
				id     string
				secret bool
			}{{"web-1", true}, {"web-2", false}} {
				state := t.TempDir()
				d, err := releasedir.Open(state, "app")
				if err != nil {
					return err
				}
				envFile := filepath.Join(state, "app.env")
				body := "OTHER=1\n"
				if h.secret {
					body += "API_KEY=script-canary-value\n"
				}
				if err := os.WriteFile(envFile, []byte(body), 0o600); err != nil {
					return err
				}
				cfg := agentconfig.DefaultService("app")
				cfg.Exec = &agentconfig.Exec{EnvFile: envFile}
				cfg.Preflight.RequiredSecrets = []string{"API_KEY"}
				a := testenv.StartAgent(t, h.id, state, []agent.Service{{Name: "app", SwapMode: "restart", Dir: d, Config: cfg, StateDir: state}}, c.GRPCAddr())
				env.Defer(a.Stop)
				agents = append(agents, a)
			}
			testenv.WaitFor(t, 10*time.Second, "agents connected", func() bool { return agents[0].Connected() && agents[1].Connected() })
			env.Setenv("GOLIVE_ADDR", c.GRPCAddr())
			return nil
		},
	})
}
