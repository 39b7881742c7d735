package execmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golive/golive/internal/atomicfile"

	"golang.org/x/sys/unix"
)

// pollInterval is how often a process that is not our child is checked
// when pidfd_open is unavailable.
const pollInterval = 500 * time.Millisecond

// pidfdOpen is unix.PidfdOpen; tests replace it to exercise the polling
// fallback.
var pidfdOpen = unix.PidfdOpen

// pidRecord is the pidfile's content. PID, StartTicks and BootID together
// name one process: a recycled pid has another start time, and start times
// restart at each boot.
type pidRecord struct {
	PID int `json:"pid"`
	// StartTicks is field 22 of /proc/<pid>/stat: when the process started,
	// in clock ticks since boot.
	StartTicks uint64 `json:"start_ticks"`
	BootID     string `json:"boot_id,omitempty"`
	// ReleaseDir and Port are the Spec the process was started with (not
	// its Env, which may hold secrets); Adopt only keeps a process that
	// runs the Spec it is given.
	ReleaseDir string `json:"release_dir"`
	Port       int    `json:"port"`
}

// procStat is what execmgr reads from /proc/<pid>/stat.
type procStat struct {
	state      byte
	pgrp       int
	startTicks uint64
}

// readProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after the last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	pgrp, err := strconv.Atoi(f[2]) // field 5
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: pgrp: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, startTicks: start}, nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// liveAs reports whether pid is still the process rec describes and has not
// exited (a zombie has).
func liveAs(rec pidRecord) bool {
	st, err := readProcStat(rec.PID)
	return err == nil && st.startTicks == rec.StartTicks && st.state != 'Z' && st.state != 'X'
}

// writePIDFile records the process just launched for spec. It must run
// before the process can be reaped, so /proc still describes it.
func (m *Manager) writePIDFile(pid int, releaseDir string, port int) error {
	st, err := readProcStat(pid)
	if err != nil {
		return err
	}
	data, err := json.Marshal(pidRecord{PID: pid, StartTicks: st.startTicks, BootID: bootID(), ReleaseDir: releaseDir, Port: port})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.cfg.PIDFile), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(m.cfg.PIDFile, append(data, '\n'), 0o644)
}

func (m *Manager) removePIDFile() {
	if m.cfg.PIDFile == "" {
		return
	}
	if err := os.Remove(m.cfg.PIDFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Error("remove pid file", "path", m.cfg.PIDFile, "error", err)
	}
}

// findOld returns the process the pidfile names if it is still running as
// recorded, watched so that its exit closes p.exited. A pidfile naming
// anything else (no process, a recycled pid, a zombie, another boot, a
// process that left its group) is stale: it is removed and nil returned.
func (m *Manager) findOld() (*proc, pidRecord) {
	if m.cfg.PIDFile == "" {
		return nil, pidRecord{}
	}
	b, err := os.ReadFile(m.cfg.PIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, pidRecord{}
	}
	var rec pidRecord
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err == nil && rec.PID <= 0 {
		err = fmt.Errorf("invalid pid %d", rec.PID)
	}
	if err != nil {
		m.log.Warn("ignoring unreadable pid file", "path", m.cfg.PIDFile, "error", err)
		m.removePIDFile()
		return nil, pidRecord{}
	}
	p, why := watchOld(rec)
	if p == nil {
		m.log.Info("ignoring stale pid file", "path", m.cfg.PIDFile, "pid", rec.PID, "reason", why)
		m.removePIDFile()
		return nil, pidRecord{}
	}
	return p, rec
}

// watchOld returns a proc for rec's process, which is not our child, and
// starts the goroutine that closes p.exited when it exits. That goroutine
// ends with the process, which supervise or terminate guarantee. It returns
// nil and the reason when rec does not describe a running process.
func watchOld(rec pidRecord) (*proc, string) {
	// Open the pidfd before checking: it pins the process, so a pid
	// recycled before the open fails the check instead of being watched.
	fd, err := pidfdOpen(rec.PID, 0)
	if err != nil {
		fd = -1 // no pidfd (old kernel, seccomp): poll /proc instead
	}
	closeFD := func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	st, err := readProcStat(rec.PID)
	switch {
	case err != nil:
		closeFD()
		return nil, "no such process"
	case st.startTicks != rec.StartTicks:
		closeFD()
		return nil, "pid reused by another process"
	case rec.BootID != "" && rec.BootID != bootID():
		closeFD()
		return nil, "recorded before the last boot"
	case st.state == 'Z' || st.state == 'X':
		closeFD()
		return nil, "process has exited"
	case st.pgrp != rec.PID:
		// Signals go to the group; one the process left cannot be used.
		closeFD()
		return nil, fmt.Sprintf("process moved to process group %d", st.pgrp)
	}
	p := &proc{pid: rec.PID, pgid: rec.PID, started: time.Now(), exited: make(chan struct{})}
	go func() {
		defer close(p.exited)
		p.err = errors.New("exited (started by a previous agent: exit status unknown)")
		if fd >= 0 {
			defer unix.Close(fd)
			for {
				// A pidfd polls readable once the process has exited.
				_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
				if err == nil {
					return
				}
				if !errors.Is(err, unix.EINTR) {
					break // fall back to polling
				}
			}
		}
		for liveAs(rec) {
			time.Sleep(pollInterval)
		}
	}()
	return p, ""
}
