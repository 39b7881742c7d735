// Package promtest starts a throwaway Prometheus server for tests: the
// Debian package's `prometheus` binary on a free loopback port, with its
// config and TSDB in t.TempDir, optionally backfilled first with
// `promtool tsdb create-blocks-from openmetrics` so queries over the past
// answer deterministically. Stop (also run by t.Cleanup) ends it with
// SIGTERM and waits.
//
// A missing prometheus or promtool skips the test, except under CI=true
// where it fails.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds a server's start (replaying blocks on a loaded
// machine); stopTimeout its graceful stop before SIGKILL.
const (
	startTimeout = 90 * time.Second
	stopTimeout  = 30 * time.Second
)

// Binary finds name on PATH, or skips t (fails it under CI=true).
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (%v): CI must run the Prometheus tests; install the Debian package prometheus", name, err)
		}
		t.Skipf("%s not found (%v); skipping (it fails under CI=true; apt-get install prometheus)", name, err)
	}
	return p
}

// Options configure a server.
type Options struct {
	// Config is prometheus.yml's text; empty means a config with no
	// scrape jobs (queries over backfilled data only).
	Config string
	// OpenMetrics, if set, is backfilled into the TSDB before the start.
	OpenMetrics string
}

// Server is a running Prometheus.
type Server struct {
	URL     string // http://127.0.0.1:<port>
	Dir     string
	DataDir string

	t        testing.TB
	cmd      *exec.Cmd
	log      *syncBuffer
	waitErr  error
	done     chan struct{}
	stopOnce sync.Once
}

// Start backfills (if asked) and starts a server, and waits until it is
// ready. Cleanup stops it.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t, "prometheus")
	dir := t.TempDir()
	s := &Server{Dir: dir, DataDir: filepath.Join(dir, "data"), t: t}
	if err := os.MkdirAll(s.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if opts.OpenMetrics != "" {
		Backfill(t, s.DataDir, opts.OpenMetrics)
	}
	cfg := opts.Config
	if cfg == "" {
		cfg = "global:\n  scrape_interval: 1m\n"
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.start(bin, cfgFile, addr); err != nil {
			// Another process may have taken the port between our probe
			// and Prometheus's bind: try another.
			lastErr = err
			if strings.Contains(err.Error(), "address already in use") {
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		return s
	}
	t.Fatalf("start prometheus: %v", lastErr)
	return nil
}

func (s *Server) start(bin, cfgFile, addr string) error {
	s.log = &syncBuffer{}
	s.cmd = exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+s.DataDir,
		"--storage.tsdb.retention.time=30d",
		"--web.listen-address="+addr,
		"--web.enable-lifecycle",
		"--log.level=info",
	)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	s.done = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	s.URL = "http://" + addr
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		select {
		case <-s.done:
			return fmt.Errorf("prometheus exited before it was ready (%v):\n%s", s.waitErr, s.log.String())
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("prometheus not ready after %s:\n%s", startTimeout, s.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if ok, _ := get(ctx, s.URL+"/-/ready"); ok {
			return nil
		}
	}
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Stop ends the server (SIGTERM, then SIGKILL after stopTimeout) and waits
// for it. Safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			s.kill()
		}
		client.CloseIdleConnections()
		if s.t.Failed() {
			s.t.Logf("prometheus log:\n%s", s.log.String())
		}
	})
}

// Log is the server's output so far.
func (s *Server) Log() string { return s.log.String() }

// Reload asks the server to re-read its config file (--web.enable-lifecycle).
func (s *Server) Reload(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("reload: %s: %s", resp.Status, b)
	}
	return nil
}

// Target is one active target of /api/v1/targets.
type Target struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	ScrapeURL        string            `json:"scrapeUrl"`
	Health           string            `json:"health"`
	LastError        string            `json:"lastError"`
}

// Targets lists the server's active targets.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/targets?state=active", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			ActiveTargets []Target `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("decode /api/v1/targets: %w", err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("/api/v1/targets: status %q", body.Status)
	}
	return body.Data.ActiveTargets, nil
}

// WaitFor polls cond (every 100ms) until it returns true or timeout
// passes, then fails t with the last reason cond gave.
func WaitFor(t testing.TB, timeout time.Duration, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not a stand-in for the condition
	}
}

// Backfill writes openMetrics to a file and turns it into TSDB blocks in
// dataDir with promtool (the text must end with "# EOF").
func Backfill(t testing.TB, dataDir, openMetrics string) {
	t.Helper()
	promtool := Binary(t, "promtool")
	in := filepath.Join(t.TempDir(), "backfill.om")
	if err := os.WriteFile(in, []byte(openMetrics), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", in, dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
}

func get(ctx context.Context, url string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// client is the tests' HTTP client; Stop closes its idle connections so
// goleak finds no stray connection goroutines.
var client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", err
	}
	return addr, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
