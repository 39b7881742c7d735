package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/golive/golive/internal/svcmgr"
)

func TestValidateUnitName(t *testing.T) {
	tests := []struct {
		give    string
		wantErr string
	}{
		{give: "app.service"},
		{give: "golive-app@blue.service"},
		{give: `golive-app@srv-x\x2d1.service`},
		{give: "my_app:1.2.service"},
		{give: "", wantErr: "empty"},
		{give: "app", wantErr: "only .service"},
		{give: "app.timer", wantErr: "only .service"},
		{give: ".service", wantErr: "empty name"},
		{give: "golive-app@.service", wantErr: "is a template"},
		{give: "bad name.service", wantErr: "invalid character ' '"},
		{give: "a/b.service", wantErr: "invalid character '/'"},
		{give: `a\b.service`, wantErr: `invalid character '\\'`},
		{give: strings.Repeat("a", 250) + ".service", wantErr: "over systemd's 255"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			err := ValidateUnitName(tt.give)
			if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateUnitName(%q) = %v, want %q", tt.give, err, tt.wantErr)
			}
		})
	}
	if _, err := New(Config{Unit: "app.service", Mode: "isolate"}); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("New with mode isolate = %v", err)
	}
	if _, err := New(Config{Unit: "app@.service"}); err == nil || !strings.Contains(err.Error(), "unit") {
		t.Fatalf("New with template = %v", err)
	}
}

// TestNoSystemBus uses the real go-systemd dialer against a socket path that
// does not exist, as on a host without systemd.
func TestNoSystemBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "absent"))
	m, err := New(Config{Unit: "golive-app@blue.service"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"start":   func() error { return m.Start(ctx, svcmgr.Spec{ReleaseDir: "/srv/r1"}) },
		"stop":    func() error { return m.Stop(ctx) },
		"restart": func() error { return m.Restart(ctx, svcmgr.Spec{ReleaseDir: "/srv/r1"}) },
	} {
		err := call()
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s = %v, want ErrUnavailable", name, err)
		}
		if !strings.Contains(err.Error(), name+" golive-app@blue.service") || !strings.Contains(err.Error(), "absent") {
			t.Errorf("%s error lacks the unit or the cause: %v", name, err)
		}
	}
	if m.Running() {
		t.Fatal("Running without systemd")
	}
}

// TestBusHangsUp dials a loopback unix socket that closes every connection,
// as a broken or restarting bus would.
func TestBusHangsUp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bus")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+sock)
	m, err := New(Config{Unit: "app.service"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := m.Stop(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Stop = %v, want ErrUnavailable", err)
	}
}

// fakeConn stands in for the D-Bus connection to test job-result handling;
// it is not a model of systemd.
type fakeConn struct {
	mu        sync.Mutex
	result    string // sent on the job channel; "" sends nothing
	enqueue   error
	state     string
	calls     []string
	connected bool
	closed    int
	envAtJob  string
	envFile   string
}

func (f *fakeConn) do(verb, name string, ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, verb+" "+name)
	if f.envFile != "" {
		b, _ := os.ReadFile(f.envFile)
		f.envAtJob = string(b)
	}
	if f.enqueue != nil {
		return 0, f.enqueue
	}
	if f.result != "" {
		ch <- f.result
	}
	return 42, nil
}

func (f *fakeConn) StartUnitContext(_ context.Context, name, _ string, ch chan<- string) (int, error) {
	return f.do("start", name, ch)
}

func (f *fakeConn) StopUnitContext(_ context.Context, name, _ string, ch chan<- string) (int, error) {
	return f.do("stop", name, ch)
}

func (f *fakeConn) RestartUnitContext(_ context.Context, name, _ string, ch chan<- string) (int, error) {
	return f.do("restart", name, ch)
}

func (f *fakeConn) GetUnitPropertyContext(_ context.Context, _, prop string) (*sdbus.Property, error) {
	p := sdbus.PropDescription(f.state)
	p.Name = prop
	return &p, nil
}

func (f *fakeConn) Connected() bool { return f.connected }
func (f *fakeConn) Close()          { f.closed++ }

func withFake(t *testing.T, cfg Config, f *fakeConn) (*Manager, *int) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dials := new(int)
	m.dial = func(context.Context) (conn, error) {
		*dials++
		f.connected = true
		return f, nil
	}
	return m, dials
}

func TestJobResults(t *testing.T) {
	tests := []struct {
		name          string
		give          string // job result
		verb          string
		wantErr       string
		wantStartFail bool
	}{
		{name: "start done", give: "done", verb: "start"},
		{name: "restart done", give: "done", verb: "restart"},
		{name: "stop done", give: "done", verb: "stop"},
		{name: "start failed", give: "failed", verb: "start", wantErr: `result "failed"`, wantStartFail: true},
		{name: "restart timeout", give: "timeout", verb: "restart", wantErr: `result "timeout"`, wantStartFail: true},
		{name: "stop canceled", give: "canceled", verb: "stop", wantErr: `result "canceled"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeConn{result: tt.give}
			m, _ := withFake(t, Config{Unit: "golive-app@green.service"}, f)
			spec := svcmgr.Spec{ReleaseDir: "/srv/r2", Port: 9001}
			var err error
			switch tt.verb {
			case "start":
				err = m.Start(t.Context(), spec)
			case "restart":
				err = m.Restart(t.Context(), spec)
			case "stop":
				err = m.Stop(t.Context())
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "golive-app@green.service") {
				t.Fatalf("err = %v, want %q naming the unit", err, tt.wantErr)
			}
			if got := errors.Is(err, svcmgr.ErrStartFailed); got != tt.wantStartFail {
				t.Fatalf("errors.Is(ErrStartFailed) = %v, want %v (%v)", got, tt.wantStartFail, err)
			}
			if len(f.calls) != 1 || f.calls[0] != tt.verb+" golive-app@green.service" {
				t.Fatalf("calls = %q", f.calls)
			}
		})
	}
}

func TestJobContextAndEnqueueErrors(t *testing.T) {
	f := &fakeConn{} // never reports a result
	m, _ := withFake(t, Config{Unit: "app.service"}, f)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := m.Start(ctx, svcmgr.Spec{ReleaseDir: "/srv/r"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Start = %v", err)
	}
	f.enqueue = errors.New("Unit app.service not found.")
	err = m.Stop(t.Context())
	if err == nil || !strings.Contains(err.Error(), "enqueue job: Unit app.service not found.") {
		t.Fatalf("Stop = %v", err)
	}
}

func TestEnvFileWrittenBeforeJob(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "blue.env")
	f := &fakeConn{result: "done", envFile: envFile}
	m, _ := withFake(t, Config{Unit: "golive-app@blue.service", EnvFile: envFile}, f)
	spec := svcmgr.Spec{ReleaseDir: "/srv/app/releases/v2", Port: 8081, Env: map[string]string{"MODE": "demo"}}
	if err := m.Restart(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	got, err := svcmgr.ParseEnvFile(strings.NewReader(f.envAtJob))
	if err != nil {
		t.Fatal(err)
	}
	if got["PORT"] != "8081" || got["GOLIVE_RELEASE_DIR"] != "/srv/app/releases/v2" || got["MODE"] != "demo" {
		t.Fatalf("env at job time = %q", got)
	}
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: "relative"}); err == nil || len(f.calls) != 1 {
		t.Fatalf("bad spec: err = %v, calls = %q", err, f.calls)
	}
}

func TestRunningAndReconnect(t *testing.T) {
	f := &fakeConn{state: "active"}
	m, dials := withFake(t, Config{Unit: "app.service"}, f)
	if !m.Running() {
		t.Fatal("active unit not Running")
	}
	f.state = "failed"
	if m.Running() {
		t.Fatal("failed unit Running")
	}
	if *dials != 1 {
		t.Fatalf("dials = %d, want 1 (connection reused)", *dials)
	}
	f.connected = false // systemd re-executed
	f.state = "reloading"
	if !m.Running() {
		t.Fatal("reloading unit not Running")
	}
	if *dials != 2 || f.closed != 1 {
		t.Fatalf("dials = %d closed = %d, want a reconnect", *dials, f.closed)
	}
	if err := m.Close(); err != nil || f.closed != 2 {
		t.Fatalf("Close = %v, closed = %d", err, f.closed)
	}
}
