// Package routertest starts real nginx and HAProxy servers for tests, on
// free loopback ports with their configuration, logs and sockets in a temp
// dir, stopped when the test ends; and small HTTP backends that say which
// slot they are.
//
// A missing nginx or haproxy binary skips the test, except under CI=true
// where it fails (.ci/run installs both). Programs without a testing.TB (the
// blue-green benchmark) use FindBinary, LaunchNginx and LaunchHAProxy and
// stop the servers themselves.
package routertest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/router"
)

// FindBinary finds binary name on PATH or in /usr/sbin or /usr/local/sbin.
func FindBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
			return filepath.Join(dir, name), nil
		}
	}
	return "", fmt.Errorf("%s not installed: %w", name, err)
}

// LookPath finds binary name with FindBinary, skipping the test when it is
// missing (failing under CI=true).
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := FindBinary(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", name, err)
		}
		t.Skip(err)
	}
	return p
}

// Backend is a loopback HTTP server standing for one slot. It answers
// every path with "slot=<name>\n" and an X-Backend header, and, on /slow,
// after sleeping the duration in the "d" query parameter (default 1s).
type Backend struct {
	Slot router.Slot
	Port int
	// Served counts finished requests.
	Served atomic.Int64

	inFlight atomic.Int64
	srv      *http.Server
	mu       sync.Mutex
	finished []time.Time // end of each /slow request
}

// StartBackend starts a backend for slot, closed at the end of the test.
func StartBackend(t testing.TB, slot router.Slot) *Backend {
	t.Helper()
	b := &Backend{Slot: slot}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Port = l.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	b.srv = srv
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return b
}

// Restart serves again on the same port after Stop.
func (b *Backend) Restart(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(b.Port))
	if err != nil {
		t.Fatalf("restart backend %s: %v", b.Slot, err)
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	srv := b.srv
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// Stop shuts the backend down as a service does on SIGTERM: it stops
// listening, closes idle connections and waits for requests in flight.
func (b *Backend) Stop(ctx context.Context) error { return b.srv.Shutdown(ctx) }

// Body is what the backend of slot answers.
func Body(slot router.Slot) string { return "slot=" + string(slot) + "\n" }

// ServeHTTP implements http.Handler.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	if r.URL.Path == "/slow" {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			d = time.Second
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		defer func() {
			b.mu.Lock()
			b.finished = append(b.finished, time.Now())
			b.mu.Unlock()
		}()
	}
	w.Header().Set("X-Backend", string(b.Slot))
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprint(w, Body(b.Slot))
	b.Served.Add(1)
}

// InFlight is how many requests the backend is handling now.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// SlowFinished lists when each /slow request finished, in order.
func (b *Backend) SlowFinished() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.finished...)
}

// FreePort asks the kernel for a free loopback port.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// server is a foreground nginx or haproxy child process.
type server struct {
	name string
	quit syscall.Signal // graceful stop
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
	once sync.Once
}

// start runs argv in the foreground, with output in logFile, and waits
// until port accepts connections. It fails if the process exits first
// (typically: the port was taken meanwhile) or does not listen within 20s.
func start(name string, quit syscall.Signal, argv []string, port int, logFile string) (*server, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, quit: quit, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited: %v\n%s", name, s.err, s.logText())
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s did not listen on port %d within 20s\n%s", name, port, s.logText())
}

func (s *server) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// stop sends the stop signal, then SIGKILL to the process group after 10s;
// it reports whether the kill was needed. Only the first call acts.
func (s *server) stop() (killed bool) {
	s.once.Do(func() {
		syscall.Kill(s.cmd.Process.Pid, s.quit)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			killed = true
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
	return killed
}

// stopErr is stop as an error for the Stop methods.
func (s *server) stopErr() error {
	if s.stop() {
		return fmt.Errorf("%s did not stop within 10s: killed it", s.name)
	}
	return nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRetrying picks a free port, writes the config for it and starts
// the server, retrying when the port was taken in between.
func startRetrying(name string, quit syscall.Signal, try func(port int) (argv []string, logFile string, err error)) (*server, int, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, 0, err
		}
		argv, logFile, err := try(port)
		if err != nil {
			return nil, 0, err
		}
		s, err := start(name, quit, argv, port, logFile)
		if err == nil {
			return s, port, nil
		}
		lastErr = err
	}
	return nil, 0, fmt.Errorf("start %s: %w", name, lastErr)
}

// Nginx is a running nginx proxying to a golive upstream file.
type Nginx struct {
	Bin  string
	Dir  string // prefix: config, pid, logs, temp files
	Conf string
	Port int
	// Upstream is the upstream's name; UpstreamFile the include golive
	// rewrites.
	Upstream     string
	UpstreamFile string
	srv          *server
}

// NginxConfig is the test configuration: the server block of
// deploy/examples/nginx/golive-app.conf on a test port, in a main
// configuration that keeps every path in dir.
func NginxConfig(dir string, port int, upstream, upstreamFile string) string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers would run as nobody and could not enter the 0700 temp dir.
		user = "user root;\n"
	}
	tmp := filepath.Join(dir, "tmp")
	return fmt.Sprintf(`%sworker_processes 2;
pid %s/nginx.pid;
error_log %s/error.log notice;
events { worker_connections 4096; }
http {
    log_format golive '$msec pid=$pid conn=$connection req=$connection_requests upstream=$upstream_addr status=$status';
    access_log %s/access.log golive;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;

    include %s;

    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://%s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
            add_header X-Golive-Generation $%s_generation always;
            add_header X-Golive-Upstream $upstream_addr always;
        }
    }
}
`, user, dir, dir, dir, tmp, tmp, tmp, tmp, tmp, upstreamFile, port, upstream, upstream)
}

// StartNginx starts nginx in front of the two ports, sending all traffic to
// blue at first (see LaunchNginx), stopped when the test ends.
func StartNginx(t testing.TB, upstream string, ports router.Ports) *Nginx {
	t.Helper()
	bin := LookPath(t, "nginx")
	n, err := LaunchNginx(bin, t.TempDir(), upstream, ports)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Log(err)
		}
	})
	return n
}

// LaunchNginx starts nginx binary bin on a free loopback port with its
// configuration, logs and temp files in dir, in front of the two ports,
// sending all traffic to blue at first: the upstream file is written with
// router.NginxUpstream before nginx starts. The caller stops it with Stop;
// it is for programs (benchmarks) where StartNginx's testing.TB is absent.
func LaunchNginx(bin, dir, upstream string, ports router.Ports) (*Nginx, error) {
	n := &Nginx{Bin: bin, Dir: dir, Upstream: upstream}
	n.Conf = filepath.Join(n.Dir, "nginx.conf")
	n.UpstreamFile = filepath.Join(n.Dir, "upstream.conf")
	if err := os.MkdirAll(filepath.Join(n.Dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.UpstreamFile, router.NginxUpstream(upstream, ports, router.Traffic{Blue: 100}, "initial"), 0o644); err != nil {
		return nil, err
	}
	var err error
	n.srv, n.Port, err = startRetrying("nginx", syscall.SIGQUIT, func(port int) ([]string, string, error) {
		if err := os.WriteFile(n.Conf, []byte(NginxConfig(n.Dir, port, upstream, n.UpstreamFile)), 0o644); err != nil {
			return nil, "", err
		}
		return append(n.args(), "-g", "daemon off;"), filepath.Join(n.Dir, "stderr.log"), nil
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Stop stops nginx gracefully (SIGQUIT), killing it after 10s. Only the
// first call acts.
func (n *Nginx) Stop() error { return n.srv.stopErr() }

func (n *Nginx) args() []string {
	return []string{n.Bin, "-p", n.Dir + "/", "-c", n.Conf, "-e", filepath.Join(n.Dir, "error.log")}
}

// ReloadCommand is the argv that reloads this nginx.
func (n *Nginx) ReloadCommand() []string { return append(n.args(), "-s", "reload") }

// URL is the address of path through nginx.
func (n *Nginx) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", n.Port, path) }

// ErrorLog is nginx's error log so far.
func (n *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "error.log"))
	return string(b)
}

// HAProxy is a running HAProxy with a backend whose servers "blue" and
// "green" are the two slots.
type HAProxy struct {
	Bin     string
	Dir     string
	Conf    string
	Port    int
	Socket  string
	Backend string
	srv     *server
}

// HAProxyConfig is the test configuration: the one of
// deploy/examples/haproxy/golive-app.cfg on a test port, the admin socket
// in dir. Blue takes all traffic at start (green has weight 0).
func HAProxyConfig(dir string, port int, backend string, ports router.Ports, o HAProxyOptions) string {
	check := ""
	if o.HealthCheck {
		check = " check inter 100ms fall 1 rise 1"
	}
	return fmt.Sprintf(`global
    stats socket %s/admin.sock mode 600 level admin
    log stderr format iso local0 info
defaults
    mode http
    log global
    option httplog
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
frontend fe
    bind 127.0.0.1:%d
    default_backend %s
backend %s
    http-response set-header X-Golive-Server %%s
    option httpchk GET /
    server blue 127.0.0.1:%d weight 100%s
    server green 127.0.0.1:%d weight 0%s
`, dir, port, backend, backend, ports.Blue, check, ports.Green, check)
}

// HAProxyOptions vary the test configuration.
type HAProxyOptions struct {
	// HealthCheck checks both servers every 100 ms (GET /): a slot
	// that does not answer takes no traffic.
	HealthCheck bool
}

// StartHAProxy starts HAProxy in front of the two ports.
func StartHAProxy(t testing.TB, backend string, ports router.Ports) *HAProxy {
	return StartHAProxyWith(t, backend, ports, HAProxyOptions{})
}

// StartHAProxyWith starts HAProxy in front of the two ports with options.
func StartHAProxyWith(t testing.TB, backend string, ports router.Ports, o HAProxyOptions) *HAProxy {
	t.Helper()
	bin := LookPath(t, "haproxy")
	h, err := LaunchHAProxy(bin, t.TempDir(), backend, ports, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Log(err)
		}
	})
	return h
}

// LaunchHAProxy starts HAProxy binary bin on a free loopback port with its
// configuration and admin socket in dir, in front of the two ports, and
// waits for the admin socket. The caller stops it with Stop; it is for
// programs (benchmarks) where StartHAProxyWith's testing.TB is absent.
func LaunchHAProxy(bin, dir, backend string, ports router.Ports, o HAProxyOptions) (*HAProxy, error) {
	h := &HAProxy{Bin: bin, Dir: dir, Backend: backend}
	h.Conf = filepath.Join(h.Dir, "haproxy.cfg")
	h.Socket = filepath.Join(h.Dir, "admin.sock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	h.srv, h.Port, err = startRetrying("haproxy", syscall.SIGTERM, func(port int) ([]string, string, error) {
		if err := os.WriteFile(h.Conf, []byte(HAProxyConfig(h.Dir, port, backend, ports, o)), 0o644); err != nil {
			return nil, "", err
		}
		return []string{bin, "-db", "-f", h.Conf}, filepath.Join(h.Dir, "haproxy.log"), nil
	})
	if err != nil {
		return nil, err
	}
	// The frontend may listen before the admin socket exists.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", h.Socket)
		if err == nil {
			c.Close()
			return h, nil
		}
		if time.Now().After(deadline) {
			h.Stop()
			return nil, fmt.Errorf("haproxy admin socket %s: %v\n%s", h.Socket, err, h.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop stops HAProxy (SIGTERM), killing it after 10s. Only the first call
// acts.
func (h *HAProxy) Stop() error { return h.srv.stopErr() }

// URL is the address of path through HAProxy.
func (h *HAProxy) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", h.Port, path) }

// Log is HAProxy's output so far.
func (h *HAProxy) Log() string { return h.srv.logText() }

// Command runs a runtime API command on the admin socket and returns its
// output.
func (h *HAProxy) Command(t testing.TB, cmd string) string {
	t.Helper()
	c, err := net.Dial("unix", h.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
