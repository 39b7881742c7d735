// Package svcmgr defines how the agent's deploy step starts, stops and
// restarts the service it deploys, independently of what actually supervises
// the process.
//
// It owns three things:
//
//   - Manager, the small interface the deploy step consumes;
//   - Spec, what a start needs to know about a release (directory, port, env);
//   - the env file format shared by implementations (ParseEnvFile, WriteEnvFile).
//
// Implementations live in sub-packages: execmgr (the agent supervises the
// process itself) and systemd (the agent asks systemd over D-Bus).
//
// Invariants every implementation keeps:
//
//   - Start returns nil only once the service has been started and has not
//     failed within the implementation's start check; otherwise the error
//     wraps ErrStartFailed (or is a context/transport error).
//   - Stop is idempotent: stopping a stopped service returns nil.
//   - No implementation ever logs environment values: they may hold secrets.
//   - Implementations also have Close() error, which releases what they own
//     (execmgr: stops the process and its supervisor goroutine; systemd:
//     closes the D-Bus connection, leaving the unit running). The agent calls
//     it at shutdown; the deploy step only needs Manager.
package svcmgr

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrStartFailed is wrapped by Start and Restart when the service was launched
// but did not come up (it exited during the start grace period, or systemd
// reported a failed job). Callers use errors.Is to tell a broken release from a
// transport or context error.
var ErrStartFailed = errors.New("service start failed")

// Manager starts and stops one service instance. Implementations are safe for
// concurrent use; calls are serialised internally.
type Manager interface {
	// Start launches the service for spec. It fails if the service is already
	// running under this manager.
	Start(ctx context.Context, spec Spec) error
	// Stop stops the service and waits until it is gone. Stopping a stopped
	// service is not an error.
	Stop(ctx context.Context) error
	// Restart stops the service if it runs, then starts it with spec.
	Restart(ctx context.Context, spec Spec) error
	// Running reports whether the service is currently up.
	Running() bool
}

// Spec is what a start needs to know about the release being run.
type Spec struct {
	// ReleaseDir is the absolute path of the unpacked release; the process
	// runs with it as working directory.
	ReleaseDir string
	// Port is the TCP port the service must listen on (0: none).
	Port int
	// Env holds extra environment variables, applied last (they override the
	// env file). Values are never logged.
	Env map[string]string
}

// Validate reports the first invalid field of s.
func (s Spec) Validate() error {
	if s.ReleaseDir == "" {
		return errors.New("spec: release_dir is required")
	}
	if !filepath.IsAbs(s.ReleaseDir) {
		return fmt.Errorf("spec: release_dir %q must be absolute", s.ReleaseDir)
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("spec: port %d out of range 0-65535", s.Port)
	}
	for k, v := range s.Env {
		if !ValidEnvKey(k) {
			return fmt.Errorf("spec: env key %q is not a valid name", k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("spec: env %s contains a NUL byte", k)
		}
	}
	return nil
}

// Expand replaces the placeholders {port} and {release_dir} in arg.
func (s Spec) Expand(arg string) string {
	return strings.NewReplacer(
		"{port}", strconv.Itoa(s.Port),
		"{release_dir}", s.ReleaseDir,
	).Replace(arg)
}
