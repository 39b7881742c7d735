package main

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{name: "defaults", want: config{listen: "127.0.0.1:8080", version: "dev"}},
		{name: "PORT env", env: map[string]string{"PORT": "9001"}, want: config{listen: "127.0.0.1:9001", version: "dev"}},
		{name: "--port beats PORT", args: []string{"--port", "9002"}, env: map[string]string{"PORT": "9001"}, want: config{listen: "127.0.0.1:9002", version: "dev"}},
		{name: "--listen beats --port", args: []string{"--listen", "[::1]:7", "--port", "9002"}, want: config{listen: "[::1]:7", version: "dev"}},
		{name: "env version and failures", env: map[string]string{"SAMPLE_VERSION": "v9", "SAMPLE_FAIL_HEALTH": "1", "SAMPLE_CRASH_ON_START": "1"},
			want: config{listen: "127.0.0.1:8080", version: "v9", failHealth: true, crashOnBoot: true}},
		{name: "--version beats env", args: []string{"--version=v3"}, env: map[string]string{"SAMPLE_VERSION": "v9"}, want: config{listen: "127.0.0.1:8080", version: "v3"}},
		{name: "bad port", args: []string{"--port", "70000"}, wantErr: "out of range"},
		{name: "stray args", args: []string{"serve"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// build compiles sampleapp with version baked in, into dir/bin/sampleapp.
func build(t *testing.T, version string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bin", "sampleapp")
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type app struct {
	cmd  *exec.Cmd
	addr string
	out  *bufio.Reader
}

// start runs bin in dir on a kernel-chosen port and waits for its banner.
func start(t *testing.T, bin, dir string, env ...string) *app {
	t.Helper()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env, cmd.Stderr = dir, append([]string{"PATH=" + os.Getenv("PATH")}, env...), os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	a := &app{cmd: cmd, out: bufio.NewReader(stdout)}
	line, err := a.out.ReadString('\n') // blocks until the listener is up or the process exits
	if err != nil {
		t.Fatalf("reading banner: %v", err)
	}
	_, after, ok := strings.Cut(line, " listening on ")
	if !ok {
		t.Fatalf("banner = %q", line)
	}
	a.addr = strings.Fields(after)[0]
	return a
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	// No keep-alives: each request reaches the current process.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBinary(t *testing.T) {
	bin := build(t, "v2")

	t.Run("serves and stops on SIGTERM", func(t *testing.T) {
		a := start(t, bin, t.TempDir())
		for path, want := range map[string]string{"/": "sampleapp v2\n", "/version": "v2\n", "/healthz": "ok\n"} {
			if code, body := get(t, "http://"+a.addr+path); code != 200 || body != want {
				t.Errorf("GET %s = %d %q, want 200 %q", path, code, body, want)
			}
		}
		if code, _ := get(t, "http://"+a.addr+"/nope"); code != 404 {
			t.Errorf("GET /nope = %d", code)
		}
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(a.out)
		if err := a.cmd.Wait(); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		if !strings.Contains(string(rest), "sampleapp stopped") {
			t.Fatalf("output after SIGTERM = %q", rest)
		}
	})

	t.Run("FAIL_HEALTH marker and SAMPLE_VERSION", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "FAIL_HEALTH"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		a := start(t, bin, dir, "SAMPLE_VERSION=v3")
		if code, _ := get(t, "http://"+a.addr+"/healthz"); code != 500 {
			t.Errorf("healthz = %d, want 500", code)
		}
		if _, body := get(t, "http://"+a.addr+"/"); body != "sampleapp v3\n" {
			t.Errorf("/ = %q", body)
		}
	})

	t.Run("SAMPLE_FAIL_HEALTH env", func(t *testing.T) {
		a := start(t, bin, t.TempDir(), "SAMPLE_FAIL_HEALTH=1")
		if code, _ := get(t, "http://"+a.addr+"/healthz"); code != 500 {
			t.Errorf("healthz = %d, want 500", code)
		}
	})

	crash := func(t *testing.T, dir string, env ...string) {
		t.Helper()
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0")
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "crashing on start") {
			t.Fatalf("err = %v, output %q", err, out)
		}
	}
	t.Run("SAMPLE_CRASH_ON_START", func(t *testing.T) { crash(t, t.TempDir(), "SAMPLE_CRASH_ON_START=1") })
	t.Run("CRASH marker next to the binary", func(t *testing.T) {
		root := filepath.Dir(filepath.Dir(bin)) // release root holding bin/sampleapp
		if err := os.WriteFile(filepath.Join(root, "CRASH"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(root, "CRASH"))
		crash(t, t.TempDir())
	})
}

func TestFailer(t *testing.T) {
	tests := []struct {
		give float64
		n    int
		want int
	}{
		{give: 0, n: 100, want: 0},
		{give: 0.05, n: 100, want: 5},
		{give: 0.05, n: 1000, want: 50},
		{give: 0.001, n: 10000, want: 10},
		{give: 1, n: 7, want: 7},
	}
	for _, tt := range tests {
		f := &failer{rate: tt.give}
		got := 0
		for range tt.n {
			if f.next() {
				got++
			}
		}
		if got != tt.want {
			t.Errorf("rate %g over %d requests: %d failed, want %d", tt.give, tt.n, got, tt.want)
		}
	}
}

func TestFailRateLatencyAndMetrics(t *testing.T) {
	bin := build(t, "v4")
	root := filepath.Dir(filepath.Dir(bin))
	for name, content := range map[string]string{"FAIL_RATE": "0.05\n", "LATENCY": "30ms\n"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := start(t, bin, t.TempDir())
	failed := 0
	for i := 1; i <= 40; i++ {
		begin := time.Now()
		code, _ := get(t, "http://"+a.addr+"/")
		if d := time.Since(begin); d < 30*time.Millisecond {
			t.Fatalf("request %d took %v, want >= 30ms (LATENCY)", i, d)
		}
		if code == 500 {
			failed++
			if i%20 != 0 {
				t.Errorf("request %d failed; want only every 20th", i)
			}
		}
	}
	if failed != 2 {
		t.Errorf("%d of 40 requests failed, want 2", failed)
	}
	if code, _ := get(t, "http://"+a.addr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200 whatever FAIL_RATE says", code)
	}
	_, body := get(t, "http://"+a.addr+"/metrics")
	for _, want := range []string{
		`sampleapp_http_requests_total{code="200",path="/"} 38`,
		`sampleapp_http_requests_total{code="500",path="/"} 2`,
		`sampleapp_http_requests_total{code="200",path="/healthz"} 1`,
		`sampleapp_http_request_duration_seconds_count{path="/"} 40`,
		`sampleapp_http_request_duration_seconds_bucket{path="/",le="0.025"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestBadMarkers(t *testing.T) {
	tests := []struct{ env, want string }{
		{env: "SAMPLE_FAIL_RATE=1.5", want: "FAIL_RATE"},
		{env: "SAMPLE_FAIL_RATE=x", want: "FAIL_RATE"},
		{env: "SAMPLE_LATENCY=soon", want: "LATENCY"},
	}
	for _, tt := range tests {
		k, v, _ := strings.Cut(tt.env, "=")
		_, err := parseConfig(nil, func(key string) string {
			if key == k {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}
