package traffic

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
)

// sampleApp is cmd/sampleapp, built once per test binary.
var sampleApp struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func sampleAppBin(t *testing.T) string {
	t.Helper()
	sampleApp.once.Do(func() {
		sampleApp.dir, sampleApp.err = os.MkdirTemp("", "traffic-sampleapp")
		if sampleApp.err != nil {
			return
		}
		sampleApp.bin = filepath.Join(sampleApp.dir, "bin", "sampleapp")
		out, err := exec.Command("go", "build", "-o", sampleApp.bin, "github.com/golive/golive/cmd/sampleapp").CombinedOutput()
		if err != nil {
			sampleApp.err = fmt.Errorf("go build sampleapp: %v\n%s", err, out)
		}
	})
	if sampleApp.err != nil {
		t.Fatal(sampleApp.err)
	}
	return sampleApp.bin
}

// startApp runs the sample app on a kernel-chosen loopback port with env
// (SAMPLE_VERSION, SAMPLE_FAIL_RATE, SAMPLE_LATENCY) and returns the port.
func startApp(t *testing.T, env ...string) int {
	t.Helper()
	cmd := exec.Command(sampleAppBin(t), "--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env, cmd.Stderr = t.TempDir(), env, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("sample app banner: %v", err)
	}
	_, after, ok := strings.Cut(line, " listening on ")
	if !ok {
		t.Fatalf("sample app banner %q", line)
	}
	_, port, err := net.SplitHostPort(strings.Fields(after)[0])
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	go func() { bufio.NewReader(stdout).WriteTo(discard{}) }()
	return p
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// nginxJSON is a real nginx writing the golive JSON access log.
type nginxJSON struct {
	bin, dir, conf string
	port           int
	log            string
}

func (n *nginxJSON) args(extra ...string) []string {
	return append([]string{"-p", n.dir + "/", "-c", n.conf, "-e", filepath.Join(n.dir, "error.log")}, extra...)
}

func (n *nginxJSON) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path)
}

// reopen is `nginx -s reopen`.
func (n *nginxJSON) reopen(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(n.bin, n.args("-s", "reopen")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reopen: %v\n%s", err, out)
	}
}

var testLogFormat = regexp.MustCompile(`log_format golive '[^']*';`)

// startNginxJSON starts nginx in front of the slots with split tr, its
// access log in LogFormat (the test configuration of routertest with the
// documented log_format).
func startNginxJSON(t *testing.T, ports router.Ports, tr router.Traffic) *nginxJSON {
	t.Helper()
	n := &nginxJSON{bin: routertest.LookPath(t, "nginx"), dir: t.TempDir()}
	n.conf = filepath.Join(n.dir, "nginx.conf")
	n.log = filepath.Join(n.dir, "access.log")
	if err := os.MkdirAll(filepath.Join(n.dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	upstream := router.UpstreamName("app")
	upstreamFile := filepath.Join(n.dir, "upstream.conf")
	if err := os.WriteFile(upstreamFile, router.NginxUpstream(upstream, ports, tr, "1"), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n.port = routertest.FreePort(t)
		conf := routertest.NginxConfig(n.dir, n.port, upstream, upstreamFile)
		if !testLogFormat.MatchString(conf) {
			t.Fatalf("routertest.NginxConfig has no log_format golive line to replace:\n%s", conf)
		}
		conf = testLogFormat.ReplaceAllLiteralString(conf, LogFormat)
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = n.start(t); lastErr == nil {
			return n
		}
	}
	t.Fatal(lastErr)
	return nil
}

func (n *nginxJSON) start(t *testing.T) error {
	cmd := exec.Command(n.bin, n.args("-g", "daemon off;")...)
	out, err := os.Create(filepath.Join(n.dir, "stderr.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
			return fmt.Errorf("nginx exited:\n%s", b)
		default:
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.port), time.Second); err == nil {
			c.Close()
			t.Cleanup(stop)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	return fmt.Errorf("nginx did not listen on %d", n.port)
}

// run runs fn in a goroutine until the test ends.
func run(t *testing.T, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fn(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// setup is one service's two slots (blue runs v2, green greenEnv) behind
// router kind, half of the traffic each, and the windows the agent's
// reader fills for them. It returns the router's URL once the reader
// observes.
type setup struct {
	url         string
	blue, green *Window
	haproxy     *routertest.HAProxy
	nginx       *nginxJSON
	follower    *Follower
	reader      *HAProxyReader
}

func newSetup(t *testing.T, kind string, greenEnv ...string) *setup {
	t.Helper()
	ports := router.Ports{Blue: startApp(t, "SAMPLE_VERSION=v2"), Green: startApp(t, greenEnv...)}
	s := &setup{blue: NewWindow(WindowOptions{Size: 5 * time.Minute}), green: NewWindow(WindowOptions{Size: 5 * time.Minute})}
	switch kind {
	case "haproxy":
		s.haproxy = routertest.StartHAProxy(t, "app", ports)
		r, err := router.NewHAProxy(router.HAProxyConfig{Socket: s.haproxy.Socket, Backend: "app"})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Switch(t.Context(), router.Green, 50); err != nil {
			t.Fatal(err)
		}
		s.reader, err = NewHAProxyReader(HAProxyConfig{Socket: s.haproxy.Socket, Interval: 100 * time.Millisecond, Logger: testLogger(t),
			Servers: []Server{{Backend: "app", Server: "blue", Window: s.blue}, {Backend: "app", Server: "green", Window: s.green}}})
		if err != nil {
			t.Fatal(err)
		}
		run(t, s.reader.Run)
		waitFor(t, 10*time.Second, "a first read of the counters", func() (bool, string) {
			at, err := s.reader.LastRead()
			return !at.IsZero(), fmt.Sprint(err)
		})
		s.url = s.haproxy.URL("/")
	case "nginx":
		s.nginx = startNginxJSON(t, ports, router.Traffic{Blue: 50, Green: 50})
		var err error
		s.follower, err = NewFollower(FollowerConfig{Path: s.nginx.log, Poll: 20 * time.Millisecond, DrainQuiet: time.Second, Logger: testLogger(t),
			Routes: map[int]*Window{ports.Blue: s.blue, ports.Green: s.green}})
		if err != nil {
			t.Fatal(err)
		}
		run(t, s.follower.Run)
		waitFor(t, 10*time.Second, "the access log opened", func() (bool, string) {
			st := s.follower.Stats()
			return st.Opens == 1, st.LastError
		})
		s.url = s.nginx.url("/")
	}
	return s
}

// load offers rate requests/s to url for d and returns how many got an
// answer and how many of those were 5xx.
func load(t *testing.T, url string, rate float64, d time.Duration) (answered, failed uint64) {
	t.Helper()
	g, err := loadgen.New(loadgen.Options{URL: url, Rate: rate, Duration: d, Timeout: 3 * time.Second, Concurrency: 128})
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Records {
		if r.Status != 0 {
			answered++
		}
		if r.Status >= 500 {
			failed++
		}
		if r.Class != loadgen.ClassOK && r.Class != loadgen.Class5xx {
			t.Errorf("request %d: %s %s", r.Seq, r.Class, r.Err)
		}
	}
	return answered, failed
}

// waitTotal waits until the two windows hold want requests together.
func (s *setup) waitTotal(t *testing.T, want uint64) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d requests counted", want), func() (bool, string) {
		b, g := s.blue.Snapshot(), s.green.Snapshot()
		return b.Requests+g.Requests == want, fmt.Sprintf("blue %+v green %+v", b, g)
	})
}

// TestRealTraffic: v4 (every 20th request to / fails) in green shows about
// 5% errors for green and none for blue (v2); v5 (300 ms more on /) shows
// at least 300 ms for green; through a real HAProxy and a real nginx, each
// request counted once.
func TestRealTraffic(t *testing.T) {
	for _, kind := range []string{"haproxy", "nginx"} {
		t.Run(kind+"/v4 errors", func(t *testing.T) {
			s := newSetup(t, kind, "SAMPLE_VERSION=v4", "SAMPLE_FAIL_RATE=0.05")
			answered, failed := load(t, s.url, 100, 3*time.Second)
			s.waitTotal(t, answered)
			b, g := s.blue.Snapshot(), s.green.Snapshot()
			t.Logf("blue %d requests %d errors, green %d requests %d errors (%.1f%%); the client saw %d of %d fail",
				b.Requests, b.Errors, g.Requests, g.Errors, 100*g.ErrorRatio(), failed, answered)
			if b.Errors != 0 {
				t.Errorf("blue (v2) shows %d errors, want 0", b.Errors)
			}
			if b.Requests < 50 || g.Requests < 50 {
				t.Fatalf("split too uneven to judge: blue %d green %d", b.Requests, g.Requests)
			}
			if r := g.ErrorRatio(); r < 0.03 || r > 0.07 {
				t.Errorf("green (v4) error ratio %.3f, want about 0.05", r)
			}
			if b.Errors+g.Errors != failed {
				t.Errorf("windows count %d errors, the client saw %d", b.Errors+g.Errors, failed)
			}
		})
		t.Run(kind+"/v5 latency", func(t *testing.T) {
			s := newSetup(t, kind, "SAMPLE_VERSION=v5", "SAMPLE_LATENCY=300ms")
			answered, _ := load(t, s.url, 60, 3*time.Second)
			s.waitTotal(t, answered)
			b, g := s.blue.Snapshot(), s.green.Snapshot()
			t.Logf("blue avg %v p99 %v, green avg %v p99 %v (has p99: %t)", b.AvgLatency, b.P99Latency, g.AvgLatency, g.P99Latency, g.HasP99)
			if g.AvgLatency < 300*time.Millisecond || g.LatencyKnown == 0 {
				t.Errorf("green (v5) average latency %v over %d requests, want >= 300ms", g.AvgLatency, g.LatencyKnown)
			}
			if b.AvgLatency >= 100*time.Millisecond {
				t.Errorf("blue (v2) average latency %v, want < 100ms", b.AvgLatency)
			}
			if kind == "nginx" && (!g.HasP99 || g.P99Latency < 300*time.Millisecond) {
				t.Errorf("green p99 %v (has %t), want >= 300ms", g.P99Latency, g.HasP99)
			}
			if kind == "haproxy" && g.HasP99 {
				t.Errorf("haproxy gives no per-request latency, yet p99 %v", g.P99Latency)
			}
		})
	}
}

// TestHAProxyCounterReset: "clear counters all" between two bursts (the
// counters go back to 0) loses nothing and invents nothing.
func TestHAProxyCounterReset(t *testing.T) {
	s := newSetup(t, "haproxy", "SAMPLE_VERSION=v2")
	a1, _ := load(t, s.url, 100, time.Second)
	s.waitTotal(t, a1)
	if out := strings.TrimSpace(s.haproxy.Command(t, "clear counters all")); out != "" {
		t.Fatalf("clear counters all: %s", out)
	}
	a2, _ := load(t, s.url, 100, time.Second)
	s.waitTotal(t, a1+a2)
	// And stays there: no bogus delta from the lower counters later.
	time.Sleep(300 * time.Millisecond)
	if b, g := s.blue.Snapshot(), s.green.Snapshot(); b.Requests+g.Requests != a1+a2 || b.Errors+g.Errors != 0 {
		t.Fatalf("after the reset: %d requests %d errors, want %d and 0", b.Requests+g.Requests, b.Errors+g.Errors, a1+a2)
	}
}

// TestNginxLogRotation: the access log renamed under load, then
// `nginx -s reopen`: every request is counted exactly once (lines nginx
// wrote to the renamed file before reopening included).
func TestNginxLogRotation(t *testing.T) {
	s := newSetup(t, "nginx", "SAMPLE_VERSION=v2")
	var answered uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		answered, _ = load(t, s.url, 150, 3*time.Second)
	}()
	waitFor(t, 10*time.Second, "traffic in the log", func() (bool, string) {
		return s.follower.Stats().Counted > 100, fmt.Sprint(s.follower.Stats())
	})
	if err := os.Rename(s.nginx.log, s.nginx.log+".1"); err != nil {
		t.Fatal(err)
	}
	// nginx keeps writing to the renamed file until it reopens.
	before := s.follower.Stats().Counted
	waitFor(t, 10*time.Second, "lines written to the renamed file", func() (bool, string) {
		return s.follower.Stats().Counted > before+50, fmt.Sprint(s.follower.Stats())
	})
	s.nginx.reopen(t)
	waitFor(t, 10*time.Second, "the new file opened", func() (bool, string) {
		st := s.follower.Stats()
		return st.Opens == 2, fmt.Sprint(st)
	})
	<-done
	s.waitTotal(t, answered)
	// Once the renamed file is closed (quiet for DrainQuiet), the count
	// has not moved: nothing was read twice.
	time.Sleep(1500 * time.Millisecond)
	st := s.follower.Stats()
	if b, g := s.blue.Snapshot(), s.green.Snapshot(); b.Requests+g.Requests != answered || st.Bad != 0 || st.Counted != answered {
		t.Fatalf("counted %d (follower %+v), want %d and no bad line", b.Requests+g.Requests, st, answered)
	}
	if fi, err := os.Stat(s.nginx.log); err != nil || fi.Size() == 0 {
		t.Fatalf("nginx did not write the new log: %v", err)
	}
}
