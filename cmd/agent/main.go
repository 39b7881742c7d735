// Command golive-agent is the golive agent daemon (`run`) on each production
// host, and `check` for its config.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/golive/golive/internal/cli/agentcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
