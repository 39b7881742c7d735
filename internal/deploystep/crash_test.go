package deploystep

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

// helperEnv carries a helperPlan to TestHelperProcess.
const helperEnv = "GOLIVE_DEPLOYSTEP_HELPER"

// previousBackup, as a helper command's RestoreBackupID, stands for the
// backup the command before it took.
const previousBackup = "@previous-backup"

// helperPlan is what the crashing helper process does: run cmds in order,
// arming fault point Fault before the last one.
type helperPlan struct {
	State string    `json:"state"`
	Port  int       `json:"port"`
	Cmds  []Command `json:"cmds"`
	Fault string    `json:"fault"`
	// DB, when set, gives the service a database and a migration.
	DB *dbPlan `json:"db,omitempty"`
	// BG, when set, makes the service blue-green behind its router.
	BG *bgPlan `json:"bg,omitempty"`
}

// TestHelperProcess is not a test: it is the agent stand-in that the crash
// tests run, built with -tags faultpoints, and that SIGKILLs itself.
func TestHelperProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		t.Skip("helper process only")
	}
	var p helperPlan
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		t.Fatal(err)
	}
	var r *Runner
	if p.BG != nil {
		r, _, _ = newBGRunner(t, p.State, *p.BG, hclog.NewNullLogger())
	} else {
		r = newRunnerWith(t, p.State, p.Port, hclog.NewNullLogger(), p.DB.apply)
	}
	var prev Result
	for i, cmd := range p.Cmds {
		if i == len(p.Cmds)-1 {
			t.Setenv(FaultPointEnv, p.Fault)
		}
		if cmd.RestoreBackupID == previousBackup && prev.Backup != nil {
			cmd.RestoreBackupID = prev.Backup.ID
		}
		res := r.Run(t.Context(), cmd, nil)
		prev = res
		fmt.Fprintf(os.Stderr, "helper: %s %s: %s %s\n", cmd.ID, cmd.Release, res.Outcome, res.Error)
	}
	t.Fatalf("fault point %q was not reached", p.Fault)
}

var (
	helperOnce sync.Once
	helperBin  string
	helperErr  error
)

// faultHelper builds this package's test binary with -tags faultpoints.
func faultHelper(t *testing.T) string {
	t.Helper()
	helperOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploystep-helper-")
		if err != nil {
			helperErr = err
			return
		}
		helperBin = filepath.Join(dir, "deploystep.test")
		out, err := exec.Command("go", "test", "-c", "-tags", "faultpoints", "-o", helperBin, ".").CombinedOutput()
		if err != nil {
			helperErr = fmt.Errorf("build fault helper: %v\n%s", err, out)
		}
	})
	if helperErr != nil {
		t.Fatal(helperErr)
	}
	return helperBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helperBin != "" {
		os.RemoveAll(filepath.Dir(helperBin))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// killOrphans SIGKILLs the service processes a killed helper left behind
// (execmgr runs them in their own process group, so they outlive it), found
// by their executable living under state, and waits for port to be free.
func killOrphans(t *testing.T, state string, port int) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, state+string(filepath.Separator)) {
			t.Logf("killing orphaned service process %d (%s)", pid, exe)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("port %d still in use", port)
}

func TestRecoverAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	srv := serveArtifacts(t)
	bin := faultHelper(t)
	tests := []struct {
		name        string
		give        string // release deployed (after v1) when the crash happens
		fault       string
		want        Outcome
		wantCurrent string
		wantPrev    string
	}{
		{"before unpack", "v2", "before_unpack", OutcomeFailed, "v1", ""},
		{"before swap", "v2", "before_swap", OutcomeRolledBack, "v1", ""},
		{"after swap", "v2", "after_swap", OutcomeSucceeded, "v2", "v1"},
		{"before health", "v2", "before_health", OutcomeSucceeded, "v2", "v1"},
		{"before finish", "v2", "before_finish", OutcomeSucceeded, "v2", "v1"},
		{"broken release before health", "v3", "before_health", OutcomeRolledBack, "v1", ""},
		{"while undoing swap", "v3", "undo_swap", OutcomeRolledBack, "v1", ""},
		{"while undoing a failed verify", "v2-badsha", "undo_fetch", OutcomeFailed, "v1", ""},
		// Without a database, backup and migrate are skipped but journaled.
		{"after migrate without a database", "v2", "after_migrate", OutcomeRolledBack, "v1", ""},
		{"before smoke", "v2", "before_smoke", OutcomeSucceeded, "v2", "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			state, port := t.TempDir(), freePort(t)
			give, badSHA := strings.CutSuffix(tt.give, "-badsha")
			last := deployCmd(srv, "crash", give)
			if badSHA {
				last.SHA256 = sha([]byte("not the artifact"))
			}
			plan, _ := json.Marshal(helperPlan{State: state, Port: port, Fault: tt.fault,
				Cmds: []Command{deployCmd(srv, "first", "v1"), last}})
			cmd := exec.Command(bin, "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die at %s: %v\n%s", tt.fault, err, out)
			}
			killOrphans(t, state, port)

			r := newRunner(t, state, port, testLogger(t))
			j, err := r.ReadJournal()
			if err != nil || j == nil || j.CommandID != "crash" {
				t.Fatalf("journal after crash: %+v, %v", j, err)
			}
			t.Logf("journal: stage %s, completed %v, rolling back %v", j.Stage, j.Completed, j.RollingBack)
			res, err := r.Recover(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if res == nil || res.Outcome != tt.want || !res.Recovered {
				t.Fatalf("Recover: %+v, want %s", res, tt.want)
			}
			t.Logf("recovered: %s failed stage %q: %s; stages %+v", res.Outcome, res.FailedStage, res.Error, res.Stages)
			noJournal(t, r)
			if c := current(t, r); c != tt.wantCurrent {
				t.Fatalf("current %q, want %q", c, tt.wantCurrent)
			}
			if p, err := r.Dir().Previous(); err != nil || p != tt.wantPrev {
				t.Fatalf("previous %q, %v, want %q", p, err, tt.wantPrev)
			}
			if got := answers(t, port); got != tt.wantCurrent {
				t.Fatalf("service answers %q, want %q", got, tt.wantCurrent)
			}
			if _, err := os.Stat(filepath.Join(r.Dir().Path(), "releases", give+".tmp")); err == nil {
				t.Errorf("staging dir left behind")
			}
			if ents, _ := os.ReadDir(filepath.Join(r.Dir().Path(), downloadsDir)); len(ents) != 0 {
				t.Errorf("downloads left: %v", ents)
			}
			// The interrupted command, sent again, returns the recovered result.
			again := r.Run(t.Context(), last, nil)
			if !again.Replayed || !again.Recovered || again.Outcome != tt.want {
				t.Fatalf("re-sent command: %+v", again)
			}
			// Nothing to recover a second time.
			if res, err := r.Recover(t.Context()); res != nil || err != nil {
				t.Fatalf("second Recover: %+v, %v", res, err)
			}
		})
	}
}

func TestFaultPointNames(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range FaultPoints {
		if seen[n] {
			t.Errorf("duplicate fault point %q", n)
		}
		seen[n] = true
	}
	for _, n := range []string{"before_fetch", "before_backup", "after_backup", "before_migrate", "after_migrate", "after_swap",
		"before_health", "before_smoke", "after_smoke", "undo_swap", "undo_restart", "before_finish"} {
		if !seen[n] {
			t.Errorf("fault point %q missing from %v", n, FaultPoints)
		}
	}
}
