// Package systemd is the svcmgr.Manager that delegates supervision to
// systemd: it starts, stops and restarts one configured unit over D-Bus
// (github.com/coreos/go-systemd/v22/dbus) and waits for each job's result.
//
// It owns one lazily opened D-Bus connection, re-opened when systemd drops
// it (daemon-reexec), and closed by Close. It does not own the unit file:
// the unit (typically an instance of the golive-app@.service template, one
// instance per blue/green slot) must be installed. When Config.EnvFile is
// set, Start and Restart first write the Spec (PORT, GOLIVE_RELEASE_DIR and
// Spec.Env) to that file atomically, for the unit's EnvironmentFile=.
//
// Invariants:
//
//   - A job counts as successful only when systemd reports the result
//     "done"; any other result (failed, timeout, canceled, dependency,
//     skipped) is an error naming it, wrapping svcmgr.ErrStartFailed for
//     start and restart jobs.
//   - If the context ends while waiting, the job keeps running inside
//     systemd; the error says so.
//   - Failing to reach systemd wraps ErrUnavailable.
//
// How far it is tested: systemd is not PID 1 on the development and CI
// machines, so the tests cover unit name validation, the env file, the
// clear ErrUnavailable error when the system bus socket is absent or hangs
// up, and the job-result handling against an in-process stand-in for the
// D-Bus connection. Talking to a real systemd is exercised only on hosts
// that run it (manual and staging deploys), not by go test.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/svcmgr"
)

var _ svcmgr.Manager = (*Manager)(nil)

// ErrUnavailable is wrapped when systemd cannot be reached over D-Bus.
var ErrUnavailable = errors.New("systemd unavailable over D-Bus")

// runningTimeout bounds the D-Bus query behind Running, which has no context.
const runningTimeout = 2 * time.Second

// Config names the unit to manage.
type Config struct {
	// Unit is the full unit name, e.g. "golive-app@blue.service".
	Unit string
	// Mode is the job mode passed to systemd (default "replace").
	Mode string
	// EnvFile, if set, is rewritten from the Spec before each start.
	EnvFile string
	// Logger is the parent logger (default: hclog.NewNullLogger()).
	Logger hclog.Logger
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	if err := ValidateUnitName(c.Unit); err != nil {
		return fmt.Errorf("systemd config: unit: %w", err)
	}
	switch c.Mode {
	case "", "replace", "fail", "ignore-dependencies", "ignore-requirements":
	default:
		return fmt.Errorf("systemd config: mode %q is not one of replace, fail, ignore-dependencies, ignore-requirements", c.Mode)
	}
	return nil
}

// ValidateUnitName accepts "name.service" and "template@instance.service"
// where name and instance use systemd's unit name characters
// ([A-Za-z0-9:_.\-], plus \ in instances for escapes), at most 255 bytes.
// Templates without an instance ("app@.service") are rejected: systemd
// cannot start them.
func ValidateUnitName(name string) error {
	if name == "" {
		return errors.New("unit name is empty")
	}
	if len(name) > 255 {
		return fmt.Errorf("unit name is %d bytes, over systemd's 255", len(name))
	}
	base, ok := strings.CutSuffix(name, ".service")
	if !ok {
		return fmt.Errorf("unit %q: only .service units can be managed", name)
	}
	prefix, instance, templated := strings.Cut(base, "@")
	if prefix == "" {
		return fmt.Errorf("unit %q: empty name before the suffix", name)
	}
	if err := checkUnitChars(prefix, false); err != nil {
		return fmt.Errorf("unit %q: %w", name, err)
	}
	if templated {
		if instance == "" {
			return fmt.Errorf("unit %q is a template: name an instance, e.g. %s@blue.service", name, prefix)
		}
		if err := checkUnitChars(instance, true); err != nil {
			return fmt.Errorf("unit %q: instance: %w", name, err)
		}
	}
	return nil
}

func checkUnitChars(s string, instance bool) error {
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':', c == '_', c == '.', c == '-':
		case c == '\\' && instance:
		default:
			return fmt.Errorf("invalid character %q", c)
		}
	}
	return nil
}

// conn is the part of *sdbus.Conn this package uses.
type conn interface {
	StartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	GetUnitPropertyContext(ctx context.Context, unit, property string) (*sdbus.Property, error)
	Connected() bool
	Close()
}

// Manager manages one systemd unit. Create it with New.
type Manager struct {
	cfg  Config
	log  hclog.Logger
	dial func(ctx context.Context) (conn, error)

	opMu sync.Mutex // serialises jobs, so results stay ordered
	mu   sync.Mutex // guards c
	c    conn
}

// New returns a Manager for cfg. It does not connect: the first call does.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == "" {
		cfg.Mode = "replace"
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Manager{
		cfg: cfg,
		log: cfg.Logger.Named("systemd").With("unit", cfg.Unit),
		dial: func(ctx context.Context) (conn, error) {
			return sdbus.NewSystemConnectionContext(ctx)
		},
	}, nil
}

// Start writes the env file (if configured) and starts the unit.
func (m *Manager) Start(ctx context.Context, spec svcmgr.Spec) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.writeEnv(spec); err != nil {
		return fmt.Errorf("start %s: %w", m.cfg.Unit, err)
	}
	return m.job(ctx, "start", conn.StartUnitContext)
}

// Stop stops the unit and waits for the stop job.
func (m *Manager) Stop(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.job(ctx, "stop", conn.StopUnitContext)
}

// Restart writes the env file (if configured) and restarts the unit,
// starting it if it was stopped.
func (m *Manager) Restart(ctx context.Context, spec svcmgr.Spec) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.writeEnv(spec); err != nil {
		return fmt.Errorf("restart %s: %w", m.cfg.Unit, err)
	}
	return m.job(ctx, "restart", conn.RestartUnitContext)
}

// Running reports whether the unit's ActiveState is "active" or
// "reloading". It queries systemd (bounded by 2s) and reports false when
// systemd cannot be asked.
func (m *Manager) Running() bool {
	ctx, cancel := context.WithTimeout(context.Background(), runningTimeout)
	defer cancel()
	c, err := m.conn(ctx)
	if err != nil {
		return false
	}
	p, err := c.GetUnitPropertyContext(ctx, m.cfg.Unit, "ActiveState")
	if err != nil {
		m.log.Debug("query ActiveState", "error", err)
		return false
	}
	state, _ := p.Value.Value().(string)
	return state == "active" || state == "reloading"
}

// Close closes the D-Bus connection, if open. The Manager reconnects if
// used again.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c != nil {
		m.c.Close()
		m.c = nil
	}
	return nil
}

type jobFunc func(c conn, ctx context.Context, name, mode string, ch chan<- string) (int, error)

// job enqueues one job and waits for its result.
func (m *Manager) job(ctx context.Context, verb string, enqueue jobFunc) error {
	c, err := m.conn(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, m.cfg.Unit, err)
	}
	// Buffered: go-systemd's signal loop blocks on an unread channel, and we
	// may stop reading when ctx ends.
	ch := make(chan string, 1)
	id, err := enqueue(c, ctx, m.cfg.Unit, m.cfg.Mode, ch)
	if err != nil {
		return fmt.Errorf("%s %s: enqueue job: %w", verb, m.cfg.Unit, err)
	}
	m.log.Debug("job enqueued", "verb", verb, "job_id", id)
	select {
	case res := <-ch:
		if res == "done" {
			m.log.Info("job done", "verb", verb, "job_id", id)
			return nil
		}
		err := fmt.Errorf("%s %s: systemd job %d result %q (see journalctl -u %s)", verb, m.cfg.Unit, id, res, m.cfg.Unit)
		if verb != "stop" {
			err = fmt.Errorf("%w: %w", svcmgr.ErrStartFailed, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s %s: systemd job %d still running: %w", verb, m.cfg.Unit, id, ctx.Err())
	}
}

// conn returns the open connection, dialling a new one if there is none or
// systemd dropped it.
func (m *Manager) conn(ctx context.Context) (conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c != nil && m.c.Connected() {
		return m.c, nil
	}
	if m.c != nil {
		m.c.Close()
		m.c = nil
	}
	c, err := m.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (is systemd PID 1 and may the agent use the system bus?): %w", ErrUnavailable, err)
	}
	m.c = c
	return c, nil
}

func (m *Manager) writeEnv(spec svcmgr.Spec) error {
	if m.cfg.EnvFile == "" {
		return nil
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	// Same precedence as execmgr: Spec.Env last.
	env := map[string]string{"GOLIVE_RELEASE_DIR": spec.ReleaseDir}
	if spec.Port > 0 {
		env["PORT"] = strconv.Itoa(spec.Port)
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	return svcmgr.WriteEnvFile(m.cfg.EnvFile, env)
}
