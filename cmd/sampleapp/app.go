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
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// version is set at build time: -ldflags "-X main.version=v2".
var version = "dev"

// config is resolved from, in increasing precedence: defaults, environment
// (PORT, SAMPLE_VERSION, SAMPLE_FAIL_HEALTH, SAMPLE_CRASH_ON_START,
// SAMPLE_FAIL_RATE, SAMPLE_LATENCY), marker files (FAIL_HEALTH, CRASH,
// FAIL_RATE holding a fraction such as 0.05, LATENCY holding a duration
// such as 300ms, in the working directory or next to the binary), then
// flags.
type config struct {
	listen      string
	version     string
	failHealth  bool
	crashOnBoot bool
	// failRate is the fraction of requests to / answered 500, spread
	// evenly by a counter (0.05: every 20th), so tests are deterministic.
	failRate float64
	// latency is added to every request to /.
	latency time.Duration
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
	failRate, latency := getenv("SAMPLE_FAIL_RATE"), getenv("SAMPLE_LATENCY")
	if v, ok := markerContent("FAIL_RATE"); ok {
		failRate = v
	}
	if v, ok := markerContent("LATENCY"); ok {
		latency = v
	}
	if failRate != "" {
		r, err := parseFailRate(failRate)
		if err != nil {
			return cfg, fmt.Errorf("FAIL_RATE: %w", err)
		}
		cfg.failRate = r
	}
	if latency != "" {
		d, err := time.ParseDuration(latency)
		if err != nil || d < 0 {
			return cfg, fmt.Errorf("LATENCY %q: want a duration such as 300ms", latency)
		}
		cfg.latency = d
	}

	fs := flag.NewFlagSet("sampleapp", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on, e.g. 127.0.0.1:8080 (overrides --port and PORT)")
	port := fs.Int("port", 0, "port to listen on at 127.0.0.1 (overrides PORT)")
	fs.StringVar(&cfg.version, "version", cfg.version, "version string to report (overrides SAMPLE_VERSION and the built-in one)")
	fs.BoolVar(&cfg.failHealth, "fail-health", cfg.failHealth, "make /healthz answer 500")
	fs.BoolVar(&cfg.crashOnBoot, "crash-on-start", cfg.crashOnBoot, "exit 1 at start")
	fs.Func("fail-rate", "answer 500 on this fraction of requests to / (e.g. 0.05: every 20th)", func(v string) error {
		r, err := parseFailRate(v)
		cfg.failRate = r
		return err
	})
	fs.DurationVar(&cfg.latency, "latency", cfg.latency, "add this latency to every request to / (e.g. 300ms)")
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

// parseFailRate reads a fraction in [0, 1].
func parseFailRate(v string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(r >= 0 && r <= 1) {
		return 0, fmt.Errorf("%q: want a fraction from 0 to 1 such as 0.05", v)
	}
	return r, nil
}

// markerContent reads marker file name (see markerExists), trimmed.
func markerContent(name string) (string, bool) {
	dirs := []string{"."}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe), filepath.Dir(filepath.Dir(exe)))
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return strings.TrimSpace(string(b)), true
		}
	}
	return "", false
}

// failer decides which requests fail: request n (from 1) fails when
// floor(n*rate) grows, so exactly floor(N*rate) of the first N fail, evenly
// spread.
type failer struct {
	rate float64
	n    atomic.Uint64
}

func (f *failer) next() bool {
	if f.rate <= 0 {
		return false
	}
	n := f.n.Add(1)
	return uint64(float64(n)*f.rate) > uint64(float64(n-1)*f.rate)
}

// metrics are the app's request counts on /metrics.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sampleapp_http_requests_total", Help: "HTTP requests answered, by status code and route."}, []string{"code", "path"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sampleapp_http_request_duration_seconds", Help: "Time to answer an HTTP request, by route.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .2, .3, .5, 1, 2.5, 5}}, []string{"path"}),
	}
	m.reg.MustRegister(m.requests, m.duration)
	return m
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument counts every request by status and route (the mux pattern,
// "other" for unrouted paths, so the label set stays small).
func (m *metrics) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		_, pattern := mux.Handler(r)
		path := strings.TrimPrefix(pattern, "GET ")
		if path == "" {
			path = "other"
		}
		path = strings.TrimSuffix(path, "{$}")
		mux.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		m.requests.WithLabelValues(strconv.Itoa(sw.code), path).Inc()
		m.duration.WithLabelValues(path).Observe(time.Since(start).Seconds())
	})
}

func handler(cfg config) http.Handler {
	mux := http.NewServeMux()
	m := newMetrics()
	fail := &failer{rate: cfg.failRate}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if cfg.latency > 0 {
			select {
			case <-time.After(cfg.latency):
			case <-r.Context().Done():
				return
			}
		}
		if fail.next() {
			http.Error(w, fmt.Sprintf("sampleapp %s: failing on purpose (fail rate %g)", cfg.version, cfg.failRate), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "sampleapp %s\n", cfg.version)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
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
	return m.instrument(mux)
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
	fmt.Fprintf(stdout, "sampleapp %s listening on %s (fail_health=%t fail_rate=%g latency=%s)\n", cfg.version, ln.Addr(), cfg.failHealth, cfg.failRate, cfg.latency)
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
