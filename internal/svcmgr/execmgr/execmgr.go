// Package execmgr is the svcmgr.Manager in which the agent supervises the
// service process itself, without systemd.
//
// A Manager owns at most one supervisor goroutine, which owns the process:
//
//	           Start (process survives StartGrace)
//	stopped ─────────────────────────────────────▶ running
//	   │ ▲     Adopt (the pidfile names a live       │   ▲
//	   │ │     process of ours running the Spec)     │   │ backoff elapsed:
//	   │ │ Stop / Close: SIGTERM to the group,       │   │ relaunch
//	   │ │ SIGKILL after StopTimeout       exit/crash▼   │
//	   │ └────────────────────────────────────────── backoff
//	   └─────────────────────────────────────────────▶ running (adopted)
//
// Since the process runs in its own process group, it outlives an agent
// that is SIGKILLed or crashes. The pidfile (Config.PIDFile) lets the next
// agent find it: it records the pid with the process's start time (field 22
// of /proc/<pid>/stat) and the boot id, so a recycled pid is never taken for
// ours. A new Manager either adopts that process (Adopt: supervise it
// without restarting it, which is what an agent restart should do) or, in
// Start, Restart and Stop, stops its group first, so two copies never run
// and the port is free.
//
// Invariants:
//
//   - The process runs in its own process group (Setpgid); every signal goes
//     to the whole group, so children die with it, and leftover group members
//     are killed before a relaunch.
//   - Whenever a process launched by the Manager runs, the pidfile names it
//     (written atomically: temp file, fsync, rename, fsync of the directory).
//     A clean Stop or Close removes it. A pidfile that names no process, a
//     process with another start time or boot, or a zombie is stale: it is
//     ignored and removed, and nothing is signalled.
//   - An adopted process is not our child: its exit is observed through a
//     pidfd (pidfd_open + poll), or by polling /proc every 500ms where pidfd
//     is unavailable, and its exit status is unknown. Otherwise it is
//     supervised like one the Manager launched.
//   - Once Stop returns, the supervisor goroutine has exited and the process
//     group has been signalled and the leader reaped. If Stop's context ends
//     first, the group is SIGKILLed at once rather than left behind.
//   - Start returns an error wrapping svcmgr.ErrStartFailed if the process
//     exits within StartGrace; nothing is left running in that case.
//   - Crash restarts use exponential backoff from BackoffMin, doubling up to
//     BackoffMax; a process that ran longer than BackoffMax resets it.
//   - Environment values (from the env file or the Spec) are never logged.
//   - Close stops the service and waits for the supervisor; the Manager is
//     unusable afterwards.
package execmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/svcmgr"
)

var _ svcmgr.Manager = (*Manager)(nil)

// ErrClosed is returned by calls on a closed Manager.
var ErrClosed = errors.New("execmgr: manager closed")

// defaultPath is the PATH given to the service when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config describes the service command. Zero durations take the defaults
// documented on each field.
type Config struct {
	// Name identifies the service in logs and errors.
	Name string
	// Command is the argv. Placeholders {port} and {release_dir} are
	// expanded in every element. A relative argv[0] containing a slash
	// (bin/app, ./app) is resolved against the release dir; a bare name is
	// looked up in PATH.
	Command []string
	// EnvFile is an optional KEY=VALUE file (svcmgr.ParseEnvFile); a
	// relative path is resolved against the release dir. It is read on each
	// start, so edits apply on the next start or crash restart.
	EnvFile string
	// LogFile receives the process's stdout and stderr, appended; a relative
	// path is resolved against the release dir. Its directory is created.
	// Empty discards the output.
	LogFile string
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL
	// (default 10s).
	StopTimeout time.Duration
	// StartGrace is how long Start watches the new process; an exit within
	// it fails the start (default 1s).
	StartGrace time.Duration
	// BackoffMin and BackoffMax bound the crash-restart delay (defaults
	// 500ms and 30s).
	BackoffMin, BackoffMax time.Duration
	// PIDFile records the running process so that a later Manager (after
	// the agent crashed or was killed) finds it; it must be absolute. The
	// default is <Name>.pid beside LogFile when LogFile is absolute;
	// otherwise no pidfile is kept and a process orphaned by an agent crash
	// goes unnoticed.
	PIDFile string
	// Logger is the parent logger (default: hclog.NewNullLogger()).
	Logger hclog.Logger
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("execmgr config: name is required")
	case len(c.Command) == 0 || c.Command[0] == "":
		return errors.New("execmgr config: command is required")
	case c.StopTimeout < 0:
		return errors.New("execmgr config: stop_timeout must not be negative")
	case c.StartGrace < 0:
		return errors.New("execmgr config: start_grace must not be negative")
	case c.BackoffMin < 0 || c.BackoffMax < 0:
		return errors.New("execmgr config: backoff durations must not be negative")
	case c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax:
		return errors.New("execmgr config: backoff_min must not exceed backoff_max")
	case c.PIDFile != "" && !filepath.IsAbs(c.PIDFile):
		return fmt.Errorf("execmgr config: pid_file %q must be an absolute path", c.PIDFile)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.StartGrace == 0 {
		c.StartGrace = time.Second
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 500 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.BackoffMin > c.BackoffMax {
		c.BackoffMin = c.BackoffMax
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.PIDFile == "" && filepath.IsAbs(c.LogFile) {
		c.PIDFile = filepath.Join(filepath.Dir(c.LogFile), fileName(c.Name)+".pid")
	}
}

// fileName maps a service name to a safe file name.
func fileName(name string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
}

// Manager supervises one service process. Create it with New.
type Manager struct {
	cfg Config
	log hclog.Logger

	opMu   sync.Mutex // serialises Start, Stop, Restart, Close
	sup    *supervisor
	closed bool

	running  atomic.Bool
	pid      atomic.Int64
	restarts atomic.Int64
}

// supervisor is one Start's supervision loop; closing stop asks it to
// terminate the process, closing kill asks it to skip the SIGTERM grace.
type supervisor struct {
	stop, kill, done chan struct{}
}

// proc is one launched or adopted process; exited closes after the leader
// is reaped (launched) or has exited (adopted).
type proc struct {
	pid     int
	pgid    int
	started time.Time
	exited  chan struct{}
	err     error // Wait's result, readable after exited closes
}

// New returns a stopped Manager for cfg.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m := &Manager{cfg: cfg, log: cfg.Logger.Named("execmgr").With("service", cfg.Name)}
	if cfg.PIDFile == "" {
		m.log.Warn("no pid file (set PIDFile or an absolute LogFile): a service left running by a crashed agent will not be found")
	}
	return m, nil
}

// Running reports whether the supervised process is up right now; it is
// false while waiting to relaunch after a crash.
func (m *Manager) Running() bool { return m.running.Load() }

// PID returns the current process id, or 0 when none runs.
func (m *Manager) PID() int { return int(m.pid.Load()) }

// Restarts returns how many times the process was relaunched after exiting
// on its own since New.
func (m *Manager) Restarts() int { return int(m.restarts.Load()) }

// PIDFile returns the pidfile's path ("" when none is kept).
func (m *Manager) PIDFile() string { return m.cfg.PIDFile }

// Adopt takes over the process a previous agent left running, if the
// pidfile names one (see the package doc) and it was started with spec's
// release dir and port: the Manager then supervises it as if Start had
// launched it, without restarting it, and relaunches it with spec (Env
// included) if it exits. It returns true if it adopted a process.
//
// A process of ours that runs another release dir or port is stopped
// (SIGTERM, SIGKILL after StopTimeout or when ctx ends) and Adopt returns
// false; so does a missing or stale pidfile. After false the caller starts
// the service. Adopt fails if the Manager already supervises a process.
func (m *Manager) Adopt(ctx context.Context, spec svcmgr.Spec) (bool, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	if m.sup != nil {
		return false, fmt.Errorf("adopt %s: already started", m.cfg.Name)
	}
	if err := spec.Validate(); err != nil {
		return false, fmt.Errorf("adopt %s: %w", m.cfg.Name, err)
	}
	p, rec := m.findOld()
	if p == nil {
		return false, nil
	}
	if rec.ReleaseDir != spec.ReleaseDir || rec.Port != spec.Port {
		m.log.Warn("a previous agent's process runs another release; stopping it",
			"pid", rec.PID, "release_dir", rec.ReleaseDir, "port", rec.Port)
		return false, m.stopOld(ctx, p)
	}
	m.running.Store(true)
	m.pid.Store(int64(p.pid))
	sup := &supervisor{stop: make(chan struct{}), kill: make(chan struct{}), done: make(chan struct{})}
	m.sup = sup
	go m.supervise(sup, p, spec)
	m.log.Info("adopted the service process a previous agent started", "pid", p.pid, "release_dir", spec.ReleaseDir, "port", spec.Port)
	return true, nil
}

// stopOld terminates p, a process a previous agent started, like Stop does,
// and removes the pidfile.
func (m *Manager) stopOld(ctx context.Context, p *proc) error {
	m.terminate(p, ctx.Done(), false)
	m.removePIDFile()
	m.log.Info("stopped the service process a previous agent started", "pid", p.pid)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop %s: %w (process group killed)", m.cfg.Name, err)
	}
	return nil
}

// Start launches the service and watches it for StartGrace. See
// svcmgr.Manager.
func (m *Manager) Start(ctx context.Context, spec svcmgr.Spec) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.startLocked(ctx, spec)
}

// Stop terminates the process group: SIGTERM, then SIGKILL after StopTimeout
// (or at once when ctx ends). It returns after the supervisor has exited.
// With no process supervised, it stops the one a previous agent left
// running, if the pidfile names one.
func (m *Manager) Stop(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.stopLocked(ctx)
}

// Restart stops the running process, if any, then starts spec.
func (m *Manager) Restart(ctx context.Context, spec svcmgr.Spec) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.stopLocked(ctx); err != nil {
		return fmt.Errorf("restart %s: %w", m.cfg.Name, err)
	}
	return m.startLocked(ctx, spec)
}

// Close stops the service (bounded by StopTimeout) and waits for the
// supervisor goroutine. It is idempotent.
func (m *Manager) Close() error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.stopLocked(context.Background())
}

func (m *Manager) startLocked(ctx context.Context, spec svcmgr.Spec) error {
	if m.closed {
		return ErrClosed
	}
	if m.sup != nil {
		return fmt.Errorf("start %s: already started; use Restart", m.cfg.Name)
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("start %s: %w", m.cfg.Name, err)
	}
	// A copy left by a previous agent would hold the port.
	if old, _ := m.findOld(); old != nil {
		m.log.Warn("stopping the service process a previous agent left running", "pid", old.pid)
		if err := m.stopOld(ctx, old); err != nil {
			return err
		}
	}
	p, err := m.launch(spec)
	if err != nil {
		return fmt.Errorf("start %s: %w: %w", m.cfg.Name, svcmgr.ErrStartFailed, err)
	}
	grace := time.NewTimer(m.cfg.StartGrace)
	defer grace.Stop()
	select {
	case <-p.exited:
		killGroup(p.pgid, syscall.SIGKILL)
		m.running.Store(false)
		m.pid.Store(0)
		m.removePIDFile()
		return fmt.Errorf("start %s: %w: process exited within %s: %v%s",
			m.cfg.Name, svcmgr.ErrStartFailed, m.cfg.StartGrace, p.err, m.logHint(spec))
	case <-ctx.Done():
		m.terminate(p, nil, true)
		m.removePIDFile()
		return fmt.Errorf("start %s: %w", m.cfg.Name, ctx.Err())
	case <-grace.C:
	}
	sup := &supervisor{stop: make(chan struct{}), kill: make(chan struct{}), done: make(chan struct{})}
	m.sup = sup
	go m.supervise(sup, p, spec)
	m.log.Info("service started", "pid", p.pid, "release_dir", spec.ReleaseDir, "port", spec.Port)
	return nil
}

func (m *Manager) stopLocked(ctx context.Context) error {
	sup := m.sup
	if sup == nil {
		if old, _ := m.findOld(); old != nil {
			return m.stopOld(ctx, old)
		}
		return nil
	}
	m.sup = nil
	close(sup.stop)
	var err error
	select {
	case <-sup.done:
	case <-ctx.Done():
		err = fmt.Errorf("stop %s: %w (process group killed)", m.cfg.Name, ctx.Err())
		close(sup.kill)
		<-sup.done // SIGKILL cannot be ignored: this is short
	}
	m.removePIDFile()
	m.log.Info("service stopped")
	return err
}

// supervise owns p until stop closes, relaunching it with backoff when it
// exits on its own.
func (m *Manager) supervise(sup *supervisor, p *proc, spec svcmgr.Spec) {
	defer close(sup.done)
	backoff := m.cfg.BackoffMin
	for {
		if p != nil {
			select {
			case <-sup.stop:
				m.terminate(p, sup.kill, false)
				return
			case <-p.exited:
			}
			// Leftover children of the group would hold the port.
			killGroup(p.pgid, syscall.SIGKILL)
			m.running.Store(false)
			m.pid.Store(0)
			ran := time.Since(p.started)
			if ran > m.cfg.BackoffMax {
				backoff = m.cfg.BackoffMin
			}
			m.log.Warn("service exited; restarting", "error", p.err, "ran", ran.Round(time.Millisecond), "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-sup.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, m.cfg.BackoffMax)
		m.restarts.Add(1)
		var err error
		p, err = m.launch(spec)
		if err != nil {
			m.log.Error("relaunch failed", "error", err, "backoff", backoff)
			p = nil
		}
	}
}

// terminate stops p's group: SIGTERM, then SIGKILL after StopTimeout, when
// kill closes, or immediately if now is set. It returns once p is reaped.
func (m *Manager) terminate(p *proc, kill <-chan struct{}, now bool) {
	defer func() {
		m.running.Store(false)
		m.pid.Store(0)
	}()
	if !now {
		killGroup(p.pgid, syscall.SIGTERM)
		t := time.NewTimer(m.cfg.StopTimeout)
		defer t.Stop()
		select {
		case <-p.exited:
			killGroup(p.pgid, syscall.SIGKILL) // stragglers that ignored SIGTERM
			return
		case <-kill:
		case <-t.C:
			m.log.Warn("service ignored SIGTERM; sending SIGKILL", "stop_timeout", m.cfg.StopTimeout)
		}
	}
	killGroup(p.pgid, syscall.SIGKILL)
	<-p.exited
}

// launch starts one process for spec and a goroutine that reaps it; the
// goroutine ends when the process exits, which supervise or terminate
// guarantee.
func (m *Manager) launch(spec svcmgr.Spec) (*proc, error) {
	argv := make([]string, len(m.cfg.Command))
	for i, a := range m.cfg.Command {
		argv[i] = spec.Expand(a)
	}
	path, err := resolveCommand(argv[0], spec.ReleaseDir)
	if err != nil {
		return nil, err
	}
	env, err := m.environ(spec)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        argv,
		Dir:         spec.ReleaseDir,
		Env:         env,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if m.cfg.LogFile != "" {
		lf, err := openLog(resolve(m.cfg.LogFile, spec.ReleaseDir))
		if err != nil {
			return nil, err
		}
		// The child inherits its own descriptor; ours closes after Start.
		defer lf.Close()
		cmd.Stdout, cmd.Stderr = lf, lf
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", path, err)
	}
	pid := cmd.Process.Pid
	p := &proc{pid: pid, pgid: pid, started: time.Now(), exited: make(chan struct{})}
	if m.cfg.PIDFile != "" {
		// Before the reaper starts, so /proc still describes the process,
		// and before PID reports it. A failure costs only the orphan
		// detection: log it, keep serving.
		if err := m.writePIDFile(pid, spec.ReleaseDir, spec.Port); err != nil {
			m.log.Error("cannot write the pid file: a crash of the agent would leave this process unnoticed",
				"path", m.cfg.PIDFile, "error", err)
		}
	}
	m.running.Store(true)
	m.pid.Store(int64(pid))
	go func() {
		p.err = cmd.Wait()
		if p.err == nil {
			p.err = errors.New("exit status 0")
		}
		close(p.exited)
	}()
	return p, nil
}

// environ builds the child's environment, later entries winning: PATH (the
// agent's, or a default), the env file, PORT and GOLIVE_RELEASE_DIR, then
// spec.Env. Nothing else leaks from the agent's environment.
func (m *Manager) environ(spec svcmgr.Spec) ([]string, error) {
	env := map[string]string{"PATH": os.Getenv("PATH")}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	if m.cfg.EnvFile != "" {
		fileEnv, err := svcmgr.ReadEnvFile(resolve(m.cfg.EnvFile, spec.ReleaseDir))
		if err != nil {
			return nil, err
		}
		for k, v := range fileEnv {
			env[k] = v
		}
	}
	if spec.Port > 0 {
		env["PORT"] = strconv.Itoa(spec.Port)
	}
	env["GOLIVE_RELEASE_DIR"] = spec.ReleaseDir
	for k, v := range spec.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

func (m *Manager) logHint(spec svcmgr.Spec) string {
	if m.cfg.LogFile == "" {
		return ""
	}
	return " (output in " + resolve(m.cfg.LogFile, spec.ReleaseDir) + ")"
}

func resolve(p, dir string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// resolveCommand applies Config.Command's rule for argv[0].
func resolveCommand(arg0, dir string) (string, error) {
	if strings.ContainsRune(arg0, '/') {
		return resolve(arg0, dir), nil
	}
	path, err := exec.LookPath(arg0)
	if err != nil {
		return "", fmt.Errorf("resolve command: %w", err)
	}
	return path, nil
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
}

// killGroup signals every process in group pgid; a group that is already
// gone is not an error worth reporting.
func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, sig)
	}
}
