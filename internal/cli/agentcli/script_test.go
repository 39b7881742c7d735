package agentcli_test

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/golive/golive/internal/cli/agentcli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"golive-agent": func() {
			os.Exit(agentcli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
