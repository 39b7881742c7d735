// Command sampleapp is the tiny HTTP service golive deploys in its tests and
// demo. It answers / and /version with its version, /healthz with "ok",
// /metrics with its request counts and latencies (Prometheus), and can be
// told to fail its health check, crash at start, answer 500 on a fraction
// of the requests to / or add latency to them, so broken releases can be
// built from the same source (see app.go).
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
