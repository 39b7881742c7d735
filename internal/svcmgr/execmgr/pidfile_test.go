package execmgr

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golive/golive/internal/svcmgr"
)

// helperEnv carries a helperPlan to TestHelperProcess.
const helperEnv = "GOLIVE_EXECMGR_HELPER"

// helperPlan is what the agent stand-in starts before it is SIGKILLed.
type helperPlan struct {
	PIDFile    string `json:"pid_file"`
	ReleaseDir string `json:"release_dir"`
	Port       int    `json:"port"`
}

// TestHelperProcess is not a test: it is the agent stand-in that starts the
// service and is then SIGKILLed by orphan, leaving the service running.
func TestHelperProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		t.Skip("helper process only")
	}
	var p helperPlan
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Name: "app", Command: []string{"bin/run.sh"}, PIDFile: p.PIDFile, StartGrace: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context(), svcmgr.Spec{ReleaseDir: p.ReleaseDir, Port: p.Port}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("started %d\n", m.PID())
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

// orphan starts the service of dir through a helper process that it then
// SIGKILLs, and returns the orphaned service's pid.
func orphan(t *testing.T, pidFile, dir string, port int) int {
	t.Helper()
	plan, _ := json.Marshal(helperPlan{PIDFile: pidFile, ReleaseDir: dir, Port: port})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
	cmd.Stderr = tWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for pid == 0 && sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "started "); ok {
			pid, _ = strconv.Atoi(n)
		} else {
			t.Logf("helper: %s", sc.Text())
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if pid == 0 {
		t.Fatal("helper did not start the service")
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) }) // if the test fails
	if !alive(pid) {
		t.Fatalf("orphaned service %d is not running", pid)
	}
	return pid
}

func readRecord(t *testing.T, path string) pidRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec pidRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	return rec
}

// A new Manager with the same pidfile deals with a service a killed agent
// left running.
func TestOrphanLeftByKilledAgent(t *testing.T) {
	tests := []struct {
		name string
		// act is what the new agent does with the orphan.
		act       func(t *testing.T, m *Manager, spec svcmgr.Spec) error
		wantOld   bool // the orphan still runs afterwards
		wantAdopt bool
	}{
		{name: "adopt", wantOld: true, wantAdopt: true, act: func(t *testing.T, m *Manager, spec svcmgr.Spec) error {
			ok, err := m.Adopt(t.Context(), spec)
			if err == nil && !ok {
				err = errors.New("Adopt = false")
			}
			return err
		}},
		{name: "adopt with another port stops it", act: func(t *testing.T, m *Manager, spec svcmgr.Spec) error {
			spec.Port++
			ok, err := m.Adopt(t.Context(), spec)
			if err == nil && ok {
				err = errors.New("Adopt = true")
			}
			return err
		}},
		{name: "start replaces it", act: func(t *testing.T, m *Manager, spec svcmgr.Spec) error {
			return m.Start(t.Context(), spec)
		}},
		{name: "restart replaces it", act: func(t *testing.T, m *Manager, spec svcmgr.Spec) error {
			return m.Restart(t.Context(), spec)
		}},
		{name: "stop stops it", act: func(t *testing.T, m *Manager, spec svcmgr.Spec) error {
			return m.Stop(t.Context())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := release(t, "echo \"port=$PORT\" >> ports\nexec sleep 1000\n")
			pidFile := filepath.Join(t.TempDir(), "run", "app.pid")
			spec := svcmgr.Spec{ReleaseDir: dir, Port: 8123}
			old := orphan(t, pidFile, dir, spec.Port)
			rec := readRecord(t, pidFile)
			st, err := readProcStat(old)
			if err != nil || rec.PID != old || rec.StartTicks != st.startTicks || rec.ReleaseDir != dir || rec.Port != spec.Port {
				t.Fatalf("pid file %+v, /proc %+v %v, want pid %d", rec, st, err, old)
			}

			m := newManager(t, Config{PIDFile: pidFile, StopTimeout: 2 * time.Second})
			if err := tt.act(t, m, spec); err != nil {
				t.Fatal(err)
			}
			if alive(old) != tt.wantOld {
				t.Fatalf("orphan alive = %v, want %v", alive(old), tt.wantOld)
			}
			if tt.wantAdopt && m.PID() != old {
				t.Fatalf("PID = %d, want the orphan %d", m.PID(), old)
			}
			if m.Running() {
				if got := readRecord(t, pidFile).PID; got != m.PID() {
					t.Fatalf("pid file names %d, manager runs %d", got, m.PID())
				}
			} else if exists(pidFile) {
				t.Fatal("pid file left after the orphan was stopped")
			}
			if err := m.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if alive(old) || exists(pidFile) {
				t.Fatalf("after Stop: orphan alive %v, pid file exists %v", alive(old), exists(pidFile))
			}
		})
	}
}

// An adopted process is supervised: when it dies it is relaunched. Its exit
// is seen through a pidfd, or by polling /proc without one.
func TestAdoptedProcessIsSupervised(t *testing.T) {
	t.Run("pidfd", testAdoptedProcessIsSupervised)
	t.Run("polling", func(t *testing.T) {
		pidfdOpen = func(int, int) (int, error) { return -1, syscall.ENOSYS }
		t.Cleanup(func() { pidfdOpen = unix.PidfdOpen })
		testAdoptedProcessIsSupervised(t)
	})
}

func testAdoptedProcessIsSupervised(t *testing.T) {
	dir := release(t, "echo \"port=$PORT\" >> ports\nexec sleep 1000\n")
	pidFile := filepath.Join(t.TempDir(), "app.pid")
	spec := svcmgr.Spec{ReleaseDir: dir, Port: 8124}
	old := orphan(t, pidFile, dir, spec.Port)
	m := newManager(t, Config{PIDFile: pidFile, BackoffMin: 20 * time.Millisecond})
	if ok, err := m.Adopt(t.Context(), spec); err != nil || !ok {
		t.Fatalf("Adopt = %v, %v", ok, err)
	}
	if ok, err := m.Adopt(t.Context(), spec); err == nil || ok {
		t.Fatalf("second Adopt = %v, %v, want an error", ok, err)
	}
	if err := m.Start(t.Context(), spec); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("Start after Adopt = %v", err)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a relaunch", func() bool { return m.Restarts() == 1 && m.Running() && m.PID() != old })
	if got := readRecord(t, pidFile).PID; got != m.PID() {
		t.Fatalf("pid file names %d, manager runs %d", got, m.PID())
	}
	// The relaunch used the Spec given to Adopt.
	waitFor(t, "the relaunched process to start", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "ports"))
		return string(b) == "port=8124\nport=8124\n"
	})
	relaunched := m.PID()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(relaunched) || exists(pidFile) {
		t.Fatalf("after Close: alive %v, pid file exists %v", alive(relaunched), exists(pidFile))
	}
}

// A pidfile that does not name a live process of ours is ignored and
// removed, and nothing is signalled.
func TestStalePIDFileIgnored(t *testing.T) {
	// bystander is a live process in its own group that is not ours.
	bystander := exec.Command("sleep", "1000")
	bystander.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bystander.Process.Kill()
		_ = bystander.Wait()
	})
	bst, err := readProcStat(bystander.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	record := func(rec pidRecord) string {
		b, _ := json.Marshal(rec)
		return string(b)
	}
	tests := []struct {
		name string
		give string
	}{
		{"dead pid", record(pidRecord{PID: dead.Process.Pid, StartTicks: 1})},
		{"pid reused", record(pidRecord{PID: bystander.Process.Pid, StartTicks: bst.startTicks + 1})},
		{"other boot", record(pidRecord{PID: bystander.Process.Pid, StartTicks: bst.startTicks, BootID: "not-this-boot"})},
		{"garbage", "12 34\n"},
		{"zero pid", record(pidRecord{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := release(t, "exec sleep 1000\n")
			pidFile := filepath.Join(t.TempDir(), "app.pid")
			if err := os.WriteFile(pidFile, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			m := newManager(t, Config{PIDFile: pidFile})
			spec := svcmgr.Spec{ReleaseDir: dir}
			if ok, err := m.Adopt(t.Context(), spec); ok || err != nil {
				t.Fatalf("Adopt = %v, %v", ok, err)
			}
			if exists(pidFile) {
				t.Fatal("stale pid file not removed")
			}
			if err := os.WriteFile(pidFile, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := m.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pidFile, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := m.Start(t.Context(), spec); err != nil {
				t.Fatal(err)
			}
			if got := readRecord(t, pidFile).PID; got != m.PID() {
				t.Fatalf("pid file names %d, manager runs %d", got, m.PID())
			}
			if err := m.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !alive(bystander.Process.Pid) {
				t.Fatal("a process that is not ours was killed")
			}
		})
	}
}

func TestPIDFileDefault(t *testing.T) {
	tests := []struct {
		give Config
		want string
	}{
		{give: Config{Name: "billing api", LogFile: "/var/log/golive/billing.log"}, want: "/var/log/golive/billing_api.pid"},
		{give: Config{Name: "a", LogFile: "/l/a.log", PIDFile: "/run/a.pid"}, want: "/run/a.pid"},
		{give: Config{Name: "a", LogFile: "logs/a.log"}, want: ""},
	}
	for _, tt := range tests {
		tt.give.Command = []string{"x"}
		m, err := New(tt.give)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.PIDFile(); got != tt.want {
			t.Errorf("PIDFile for %+v = %q, want %q", tt.give, got, tt.want)
		}
	}
}
