package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// version is set at build time: -ldflags "-X main.version=v2".
var version = "dev"

// config is resolved from, in increasing precedence: defaults, environment
// (PORT, SAMPLE_VERSION, SAMPLE_FAIL_HEALTH, SAMPLE_CRASH_ON_START), marker
// files (FAIL_HEALTH, CRASH in the working directory or next to the binary),
// then flags.
type config struct {
	listen      string
	version     string
	failHealth  bool
	crashOnBoot bool
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	cfg := config{listen: "127.0.0.1:8080", version: version}
	if v := getenv("SAMPLE_VERSION"); v != "" {
		cfg.version = v
	}
	if p := getenv("PORT"); p != "" {
		cfg.listen = net.JoinHostPort("127.0.0.1", p)
	}
	cfg.failHealth = getenv("SAMPLE_FAIL_HEALTH") == "1" || markerExists("FAIL_HEALTH")
	cfg.crashOnBoot = getenv("SAMPLE_CRASH_ON_START") == "1" || markerExists("CRASH")

	fs := flag.NewFlagSet("sampleapp", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on, e.g. 127.0.0.1:8080 (overrides --port and PORT)")
	port := fs.Int("port", 0, "port to listen on at 127.0.0.1 (overrides PORT)")
	fs.StringVar(&cfg.version, "version", cfg.version, "version string to report (overrides SAMPLE_VERSION and the built-in one)")
	fs.BoolVar(&cfg.failHealth, "fail-health", cfg.failHealth, "make /healthz answer 500")
	fs.BoolVar(&cfg.crashOnBoot, "crash-on-start", cfg.crashOnBoot, "exit 1 at start")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case *listen != "":
		cfg.listen = *listen
	case *port != 0:
		if *port < 0 || *port > 65535 {
			return cfg, fmt.Errorf("--port %d out of range", *port)
		}
		cfg.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	}
	return cfg, nil
}

// markerExists looks for name in the working directory, next to the binary
// and in the binary's parent (the release root when it is bin/sampleapp).
func markerExists(name string) bool {
	dirs := []string{"."}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe), filepath.Dir(filepath.Dir(exe)))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return true
		}
	}
	return false
}

func handler(cfg config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sampleapp %s\n", cfg.version)
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, cfg.version)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if cfg.failHealth {
			http.Error(w, "unhealthy (fail-health set)", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// run serves until ctx ends (SIGTERM), then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	if cfg.crashOnBoot {
		return errors.New("crashing on start as configured (SAMPLE_CRASH_ON_START or CRASH marker)")
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: handler(cfg), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "sampleapp %s listening on %s (fail_health=%t)\n", cfg.version, ln.Addr(), cfg.failHealth)
	// Ready only once the listener is up; a no-op outside systemd.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintln(stdout, "sd_notify:", err)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	fmt.Fprintln(stdout, "sampleapp stopped")
	return nil
}
