package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFileName is the lock file in the agent's state dir. While an agent
// runs it holds an exclusive flock(2) on it, and the file holds its pid.
const LockFileName = "agent.lock"

// StateLock is an agent's hold on its state dir: two agents on one state
// dir would run the same steps, journals and services twice.
type StateLock struct {
	f *os.File
}

// StateDirLockedError: another process holds the state dir.
type StateDirLockedError struct {
	Dir, LockFile string
	// PID is the holder's pid as its lock file says (0: unreadable).
	PID int
}

func (e *StateDirLockedError) Error() string {
	holder := "pid unknown"
	if e.PID > 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("--state-dir %s is held by another golive-agent (%s, lock file %s): stop that agent first, or give this one its own --state-dir",
		e.Dir, holder, e.LockFile)
}

// LockStateDir takes the agent's exclusive lock on dir (created if needed)
// and writes this process's pid into the lock file. It fails with a
// *StateDirLockedError naming the holder's pid when another agent holds
// it. The lock goes with the process (flock), so an agent killed -9
// leaves no stale lock; the pid left in the file is then rewritten by the
// next holder.
func LockStateDir(dir string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--state-dir: lock file: %w", err)
	}
	if err := flock(f); err != nil {
		defer f.Close()
		if errors.Is(err, errLocked) {
			b, _ := io.ReadAll(io.LimitReader(f, 64))
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return nil, &StateDirLockedError{Dir: dir, LockFile: path, PID: pid}
		}
		return nil, fmt.Errorf("--state-dir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("--state-dir: write pid to %s: %w", path, err)
	}
	return &StateLock{f: f}, nil
}

// Unlock releases the lock (the file stays, with the old pid).
func (l *StateLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
