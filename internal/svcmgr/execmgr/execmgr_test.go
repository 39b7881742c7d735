package execmgr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/golive/golive/internal/svcmgr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// release makes a release dir holding bin/run.sh with the given body.
func release(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "run.sh"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "app"
	}
	if cfg.Command == nil {
		cfg.Command = []string{"bin/run.sh"}
	}
	if cfg.StartGrace == 0 {
		cfg.StartGrace = 100 * time.Millisecond
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: tWriter{t}, Level: hclog.Debug})
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestStartStopEnvLogAndGroup(t *testing.T) {
	dir := release(t, `echo "args: $*"
echo "cwd: $(pwd)"
echo "env: FOO=$FOO BAR=$BAR PORT=$PORT REL=$GOLIVE_RELEASE_DIR HOME=$HOME"
echo oops >&2
sleep 1000 &
echo $! > child.pid
echo ready > ready
wait
`)
	envFile := filepath.Join(dir, "app.env")
	if err := os.WriteFile(envFile, []byte("# c\nFOO=\"from file\"\nBAR=overridden\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "logs", "app.log")
	m := newManager(t, Config{
		Command: []string{"bin/run.sh", "--listen=127.0.0.1:{port}", "{release_dir}/x"},
		EnvFile: "app.env", LogFile: logFile,
	})
	ctx := t.Context()
	spec := svcmgr.Spec{ReleaseDir: dir, Port: 18080, Env: map[string]string{"BAR": "extra"}}
	if err := m.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("second Start = %v", err)
	}
	waitFor(t, "ready file", func() bool { return exists(filepath.Join(dir, "ready")) })
	if !m.Running() || m.PID() == 0 {
		t.Fatalf("Running = %v, PID = %d", m.Running(), m.PID())
	}
	leader, child := m.PID(), readPID(t, filepath.Join(dir, "child.pid"))

	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Running() || alive(leader) {
		t.Fatalf("after Stop: running=%v leader alive=%v", m.Running(), alive(leader))
	}
	// The child got the group's signal; its exit completes asynchronously.
	waitFor(t, "child in the process group to die", func() bool { return !alive(child) })
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("second Stop = %v", err)
	}

	out, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"args: --listen=127.0.0.1:18080 " + dir + "/x",
		"cwd: " + dir,
		"env: FOO=from file BAR=extra PORT=18080 REL=" + dir + " HOME=\n",
		"oops",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestStartFailedWithinGrace(t *testing.T) {
	dir := release(t, "echo boom >&2\nexit 3\n")
	m := newManager(t, Config{LogFile: "app.log", StartGrace: 2 * time.Second})
	start := time.Now()
	err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: dir})
	if !errors.Is(err, svcmgr.ErrStartFailed) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Start = %v, want ErrStartFailed with exit status 3", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("Start waited the whole grace period after the exit")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "app.log")) {
		t.Errorf("error does not point at the log: %v", err)
	}
	if m.Running() {
		t.Fatal("Running after failed start")
	}
	// A failed start leaves the manager startable.
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: dir}); !errors.Is(err, svcmgr.ErrStartFailed) {
		t.Fatalf("second Start = %v", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	m := newManager(t, Config{Command: []string{"bin/nope"}})
	err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: t.TempDir()})
	if !errors.Is(err, svcmgr.ErrStartFailed) || !strings.Contains(err.Error(), "bin/nope") {
		t.Fatalf("Start = %v", err)
	}
}

func TestCrashRestartWithBackoff(t *testing.T) {
	dir := release(t, "echo x >> starts\nsleep 0.3\nexit 1\n")
	m := newManager(t, Config{BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: dir}); err != nil {
		t.Fatal(err)
	}
	starts := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "starts"))
		return strings.Count(string(b), "x")
	}
	waitFor(t, "three starts", func() bool { return starts() >= 3 && m.Restarts() >= 2 })
	if err := m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	n := starts()
	if m.Running() {
		t.Fatal("Running after Stop")
	}
	// Stop ends supervision: no relaunch after it (backoff max is 100ms).
	time.Sleep(300 * time.Millisecond)
	if starts() != n {
		t.Fatalf("relaunched after Stop: %d -> %d starts", n, starts())
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	dir := release(t, "trap '' TERM\necho ready > ready\nwhile :; do sleep 0.05; done\n")
	m := newManager(t, Config{StopTimeout: 300 * time.Millisecond})
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: dir}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready file", func() bool { return exists(filepath.Join(dir, "ready")) })
	pid := m.PID()
	start := time.Now()
	if err := m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Stop took %s, before the stop timeout", d)
	}
	if alive(pid) {
		t.Fatal("process survived Stop")
	}
}

func TestStopContextKillsAtOnce(t *testing.T) {
	dir := release(t, "trap '' TERM\necho ready > ready\nwhile :; do sleep 0.05; done\n")
	m := newManager(t, Config{StopTimeout: time.Minute})
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: dir}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready file", func() bool { return exists(filepath.Join(dir, "ready")) })
	pid := m.PID()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := m.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want deadline exceeded", err)
	}
	if alive(pid) {
		t.Fatal("process survived Stop")
	}
}

func TestRestartAppliesNewSpecAndClose(t *testing.T) {
	dir := release(t, "echo \"port=$PORT\" >> ports\nexec sleep 1000\n")
	m := newManager(t, Config{})
	ctx := t.Context()
	if err := m.Start(ctx, svcmgr.Spec{ReleaseDir: dir, Port: 1001}); err != nil {
		t.Fatal(err)
	}
	first := m.PID()
	if err := m.Restart(ctx, svcmgr.Spec{ReleaseDir: dir, Port: 1002}); err != nil {
		t.Fatal(err)
	}
	if m.PID() == first || alive(first) {
		t.Fatalf("old process %d still there after Restart", first)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "ports"))
	if string(b) != "port=1001\nport=1002\n" {
		t.Fatalf("ports = %q", b)
	}
	second := m.PID()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(second) {
		t.Fatal("process survived Close")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := m.Start(ctx, svcmgr.Spec{ReleaseDir: dir}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		give    Config
		wantErr string
	}{
		{give: Config{Name: "a", Command: []string{"x"}}},
		{give: Config{Command: []string{"x"}}, wantErr: "name is required"},
		{give: Config{Name: "a"}, wantErr: "command is required"},
		{give: Config{Name: "a", Command: []string{"x"}, BackoffMin: 2, BackoffMax: 1}, wantErr: "backoff_min"},
		{give: Config{Name: "a", Command: []string{"x"}, PIDFile: "run/a.pid"}, wantErr: "pid_file"},
	}
	for _, tt := range tests {
		err := tt.give.Validate()
		if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.give, err, tt.wantErr)
		}
	}
}
