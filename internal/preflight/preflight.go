// Package preflight owns the pre-live checks an agent runs before a rollout
// touches a host: the production domain resolves, its TLS certificate is
// trusted, matches and is not about to expire, the database answers, the
// required secrets are present, there is disk for the release, the last
// backup is fresh and verified, and a previous release is there to roll back
// to.
//
// Each check returns a Result whose Detail is one sentence that says what is
// wrong and what to do. Invariants:
//   - A Detail never contains a secret value: SecretsPresent reports key
//     names only, DatabaseReachable scrubs the DSN and its password from the
//     driver's error.
//   - Checks only read: none changes the host, so they run without approval.
//   - Run returns one Result per Check, in the order given, whatever happens
//     (a skip, a timeout or a panic becomes a Result); it waits for every
//     check it started.
//
// The package holds no database driver: DatabaseReachable takes a Pinger, and
// the agent passes one backed by its PostgreSQL driver.
package preflight

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Status is the outcome of one check.
type Status string

// The statuses a check may report. Only StatusFail stops a rollout.
const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Check names, as used by --skip-check.
const (
	NameDNS             = "dns"
	NameTLS             = "tls"
	NameDatabase        = "database"
	NameSecrets         = "secrets"
	NameDisk            = "disk"
	NameBackup          = "backup"
	NamePreviousRelease = "previous-release"
)

// Names lists every check name, in the order an agent reports them.
var Names = []string{NameDNS, NameTLS, NameDatabase, NameBackup, NameSecrets, NameDisk, NamePreviousRelease}

// ValidateSkips checks that every name in skip is a check name, so that a
// mistyped --skip-check does not silently skip nothing.
func ValidateSkips(skip []string) error {
	for _, n := range skip {
		if !slices.Contains(Names, n) {
			return fmt.Errorf("unknown check %q (checks: %s)", n, strings.Join(Names, ", "))
		}
	}
	return nil
}

// DefaultTimeout bounds a check whose Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Result is the outcome of one check. Detail is a sentence that says what to
// do; it never holds a secret value.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Check is one named check for Run. Fn must return once its context is done.
type Check struct {
	Name    string
	Timeout time.Duration // DefaultTimeout when zero or less
	Fn      func(ctx context.Context) Result
}

func pass(name, format string, args ...any) Result {
	return Result{Name: name, Status: StatusPass, Detail: fmt.Sprintf(format, args...)}
}

func warn(name, format string, args ...any) Result {
	return Result{Name: name, Status: StatusWarn, Detail: fmt.Sprintf(format, args...)}
}

func fail(name, format string, args ...any) Result {
	return Result{Name: name, Status: StatusFail, Detail: fmt.Sprintf(format, args...)}
}

// Run runs checks concurrently, each under its own timeout derived from ctx,
// and returns their results in the order of checks. A check named in skip is
// not run and reports StatusSkip. A check that overruns its timeout, returns
// after ctx is done, or panics reports StatusFail. Run waits for every check
// it started before returning.
func Run(ctx context.Context, checks []Check, skip []string) []Result {
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		if slices.Contains(skip, c.Name) {
			results[i] = Result{Name: c.Name, Status: StatusSkip,
				Detail: fmt.Sprintf("Check %s was skipped on request; make sure the skip is intended, it is audited.", c.Name)}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runOne(ctx, c)
		}()
	}
	wg.Wait()
	return results
}

func runOne(ctx context.Context, c Check) (r Result) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			r = fail(c.Name, "Check %s crashed (%v); report this as a golive bug.", c.Name, p)
		}
	}()
	if c.Fn == nil {
		return fail(c.Name, "Check %s has nothing to run; report this as a golive bug.", c.Name)
	}
	r = c.Fn(ctx)
	r.Name = c.Name
	if err := ctx.Err(); err != nil && r.Status != StatusFail {
		if err == context.DeadlineExceeded {
			return fail(c.Name, "Check %s did not finish within %s; find out what is slow on this host and run preflight again.", c.Name, timeout)
		}
		return fail(c.Name, "Check %s was cancelled before it finished; run preflight again.", c.Name)
	}
	if ctx.Err() == context.DeadlineExceeded && r.Status == StatusFail {
		r.Detail = fmt.Sprintf("Check %s did not finish within %s: %s", c.Name, timeout, r.Detail)
	}
	switch r.Status {
	case StatusPass, StatusWarn, StatusFail, StatusSkip:
	default:
		return fail(c.Name, "Check %s returned unknown status %q; report this as a golive bug.", c.Name, r.Status)
	}
	return r
}

// Summary reports whether a rollout may go ahead: true unless some result
// failed (or carries a status this package does not know).
func Summary(results []Result) (ok bool) {
	for _, r := range results {
		switch r.Status {
		case StatusPass, StatusWarn, StatusSkip:
		default:
			return false
		}
	}
	return true
}
