// Command sampleapp is the tiny HTTP service golive deploys in its tests and
// demo. It answers / and /version with its version, /healthz with "ok", and
// can be told to fail its health check or crash at start, so a broken
// release can be built from the same source (see app.go).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sampleapp:", err)
		os.Exit(1)
	}
}
