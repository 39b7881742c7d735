package agentcli_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/golive/golive/internal/cli/agentcli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"golive-agent": func() {
			// As cmd/agent: SIGINT and SIGTERM stop the daemon cleanly.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
			stop()
			os.Exit(code)
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script", Cmds: map[string]func(*testscript.TestScript, bool, []string){
		"waitlock":     waitLock,
		"checklockpid": checkLockPID,
		"rc":           exitCode,
	}})
}

// waitLock FILE waits (up to 20 s) until FILE is flock-ed by another
// process that wrote its pid into it: a running agent holds its state dir.
func waitLock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitlock FILE")
	}
	path := ts.MkAbs(args[0])
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pid, held := lockHolder(path); held && pid > 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: not locked by a running agent after 20s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkLockPID FILE checks that the pid the refusal named (the last
// stderr) is the pid in FILE and belongs to a live process.
func checkLockPID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: checklockpid FILE")
	}
	pid, held := lockHolder(ts.MkAbs(args[0]))
	if !held || pid <= 0 {
		ts.Fatalf("lock not held (pid %d)", pid)
	}
	if !strings.Contains(ts.ReadFile("stderr"), "(pid "+strconv.Itoa(pid)+",") {
		ts.Fatalf("stderr does not name pid %d: %s", pid, ts.ReadFile("stderr"))
	}
	if err := syscall.Kill(pid, 0); err != nil {
		ts.Fatalf("pid %d: %v", pid, err)
	}
}

// lockHolder reports the pid in a lock file and whether another process
// holds its flock.
func lockHolder(path string) (int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return pid, false
	}
	return pid, true
}

// exitCode N CMD ARGS... runs CMD and checks that it exits N (stdout and
// stderr are kept for the next checks).
func exitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: rc N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("rc %q: want an exit code", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}
