// Package hooks runs a deploy hook: a command (argv, no shell) with a
// timeout, a fixed environment and a working directory, capturing its
// combined output for the deploy step's report.
//
// Invariants:
//
//   - The hook runs in its own process group; on timeout or cancellation the
//     whole group is SIGKILLed, so no child outlives the step.
//   - At most MaxOutput bytes of output are kept: the tail, behind a marker
//     saying how much was dropped (the end of a failing hook's output is
//     what explains it).
//   - The environment is PATH (the agent's, or a default), the GOLIVE_*
//     variables and Hook.Env; nothing else of the agent's environment leaks.
//     Env values are never logged or put in errors.
//   - Run returns an error for a non-zero exit, a timeout or a cancellation;
//     the error names the hook and the exit status, and the Result still
//     carries the output.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// MaxOutput is how much combined output Run keeps.
	MaxOutput = 64 << 10
	// DefaultTimeout applies when Hook.Timeout is zero.
	DefaultTimeout = 5 * time.Minute
	// pipeGrace is how long Run waits for the output pipe after the hook
	// exits or is killed (a stray background process may hold it open).
	pipeGrace   = 2 * time.Second
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Hook is one command to run.
type Hook struct {
	// Name identifies the hook in errors, e.g. "pre_swap".
	Name string
	// Command is the argv. A relative argv[0] containing a slash is resolved
	// against Dir; a bare name is looked up in PATH.
	Command []string
	// Dir is the working directory (required, absolute).
	Dir string
	// Timeout bounds the run (default 5m).
	Timeout time.Duration
	// Service, Release and PreviousRelease are exported as GOLIVE_SERVICE,
	// GOLIVE_RELEASE and GOLIVE_PREVIOUS_RELEASE.
	Service, Release, PreviousRelease string
	// Env holds extra variables; they override the ones above.
	Env map[string]string
}

// Validate reports the first invalid field of h.
func (h Hook) Validate() error {
	switch {
	case h.Name == "":
		return errors.New("hook: name is required")
	case len(h.Command) == 0 || h.Command[0] == "":
		return fmt.Errorf("hook %s: command is required", h.Name)
	case !filepath.IsAbs(h.Dir):
		return fmt.Errorf("hook %s: dir %q must be an absolute path", h.Name, h.Dir)
	case h.Timeout < 0:
		return fmt.Errorf("hook %s: timeout must not be negative", h.Name)
	}
	for k, v := range h.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("hook %s: env %q is not a valid variable", h.Name, k)
		}
	}
	return nil
}

// Result is what a run produced.
type Result struct {
	// Output is the combined stdout and stderr, at most MaxOutput bytes plus
	// a truncation marker.
	Output []byte
	// Truncated reports that output was dropped.
	Truncated bool
	// ExitCode is the exit status, or -1 if the hook was killed or did not
	// start.
	ExitCode int
	// Duration is the wall time of the run.
	Duration time.Duration
}

// Run runs h and waits for it. See the package doc for the guarantees.
func Run(ctx context.Context, h Hook) (Result, error) {
	res := Result{ExitCode: -1}
	if err := h.Validate(); err != nil {
		return res, err
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	path, err := resolve(h.Command[0], h.Dir)
	if err != nil {
		return res, fmt.Errorf("hook %s: %w", h.Name, err)
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	out := &tailBuffer{max: MaxOutput}
	cmd := exec.CommandContext(runCtx, path, h.Command[1:]...)
	cmd.Args[0] = h.Command[0]
	cmd.Dir = h.Dir
	cmd.Env = environ(h)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group id is the leader's pid (Setpgid).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = pipeGrace

	start := time.Now()
	err = cmd.Run()
	res.Duration = time.Since(start)
	res.Output, res.Truncated = out.bytes()
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case err == nil:
		return res, nil
	case errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return res, fmt.Errorf("hook %s: timed out after %s (process group killed): %v", h.Name, timeout, err)
	case ctx.Err() != nil:
		return res, fmt.Errorf("hook %s: canceled (process group killed): %w", h.Name, ctx.Err())
	case res.ExitCode > 0:
		return res, fmt.Errorf("hook %s: %s failed: exit status %d", h.Name, h.Command[0], res.ExitCode)
	default:
		return res, fmt.Errorf("hook %s: %s: %w", h.Name, h.Command[0], err)
	}
}

func resolve(arg0, dir string) (string, error) {
	if strings.ContainsRune(arg0, '/') {
		if filepath.IsAbs(arg0) {
			return arg0, nil
		}
		return filepath.Join(dir, arg0), nil
	}
	p, err := exec.LookPath(arg0)
	if err != nil {
		return "", fmt.Errorf("resolve command: %w", err)
	}
	return p, nil
}

func environ(h Hook) []string {
	env := map[string]string{
		"PATH":                    os.Getenv("PATH"),
		"GOLIVE_SERVICE":          h.Service,
		"GOLIVE_RELEASE":          h.Release,
		"GOLIVE_PREVIOUS_RELEASE": h.PreviousRelease,
	}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	for k, v := range h.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if len(p) >= b.max {
		b.dropped += int64(len(b.buf) + len(p) - b.max)
		b.buf = append(b.buf[:0], p[len(p)-b.max:]...)
		return n, nil
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) bytes() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped == 0 {
		return append([]byte(nil), b.buf...), false
	}
	marker := fmt.Sprintf("[... %d bytes of output dropped ...]\n", b.dropped)
	return append([]byte(marker), b.buf...), true
}
