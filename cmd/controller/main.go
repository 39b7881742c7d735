// Command golive-controller is the golive controller daemon (`serve`) and the
// operator's command line (everything else).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/golive/golive/internal/cli/controllercli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := controllercli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
