// Package health owns the agent's HTTP health checking of deployed services:
//
//   - Check: one HTTP probe specification and a single probe (Check.Probe);
//   - WaitHealthy: the deploy step's gate, K consecutive successes within a
//     deadline;
//   - Window and Prober: a continuous prober feeding a sliding time window of
//     requests, errors and latencies, which other sources can feed too
//     (Observe), summarised by Snapshot for the controller;
//   - Metrics: the Prometheus collectors, registered on a passed Registerer.
//
// Invariants: probes never reuse connections (a keep-alive connection to the
// previous blue/green slot must not answer for the new one) and never follow
// redirects; a Window only holds samples younger than its size, at most
// MaxSamples of them; every goroutine started here is stopped and waited for
// by Prober.Stop.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultTimeout bounds one probe when Check.Timeout is zero.
	DefaultTimeout = 2 * time.Second
	// maxBody is how much of a response body a probe reads.
	maxBody = 64 << 10
)

// Check specifies one HTTP GET health probe.
type Check struct {
	// URL is the absolute http(s) URL to GET.
	URL string
	// ExpectStatus is the status that counts as healthy (default 200).
	ExpectStatus int
	// Timeout bounds one probe, including reading the body (default 2s).
	Timeout time.Duration
	// BodyContains, if set, must occur in the first 64 KiB of the body.
	BodyContains string
}

// Validate reports the first invalid field of c.
func (c Check) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("health check: url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("health check: url %q must be an absolute http or https URL", c.URL)
	}
	if c.ExpectStatus != 0 && (c.ExpectStatus < 100 || c.ExpectStatus > 599) {
		return fmt.Errorf("health check: expect_status %d is not an HTTP status", c.ExpectStatus)
	}
	if c.Timeout < 0 {
		return errors.New("health check: timeout must not be negative")
	}
	return nil
}

// client is shared by all probes: no keep-alives, no redirects, no
// environment proxy (probes target the local host).
var client = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// Probe performs one GET and returns how long it took and why it failed, if
// it did.
func (c Check) Probe(ctx context.Context) (time.Duration, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	want := c.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("probe %s: %w", c.URL, err)
	}
	req.Header.Set("User-Agent", "golive-agent-health")
	resp, err := client.Do(req)
	if err != nil {
		return time.Since(start), fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	elapsed := time.Since(start)
	if err != nil {
		return elapsed, fmt.Errorf("probe %s: read body: %w", c.URL, err)
	}
	if resp.StatusCode != want {
		return elapsed, fmt.Errorf("probe %s: status %d, want %d", c.URL, resp.StatusCode, want)
	}
	if c.BodyContains != "" && !strings.Contains(string(body), c.BodyContains) {
		return elapsed, fmt.Errorf("probe %s: body lacks %q", c.URL, c.BodyContains)
	}
	return elapsed, nil
}

// WaitHealthy probes check every interval until it has succeeded successes
// times in a row, and returns nil then. A failure resets the count. If
// deadline passes (or ctx ends) first, the error says how many consecutive
// successes were reached and names the last failure. successes < 1 counts
// as 1; interval <= 0 means 1s.
func WaitHealthy(ctx context.Context, check Check, successes int, interval, deadline time.Duration) error {
	if err := check.Validate(); err != nil {
		return err
	}
	successes = max(successes, 1)
	if interval <= 0 {
		interval = time.Second
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var (
		streak  int
		lastErr error
	)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			last := "none"
			if lastErr != nil {
				last = lastErr.Error()
			}
			why := fmt.Sprintf("not healthy within %s", deadline)
			if parent.Err() != nil {
				why = "wait canceled"
			}
			return fmt.Errorf("%s %s: %d/%d consecutive successes; last failure: %s: %w",
				check.URL, why, streak, successes, last, ctx.Err())
		case <-t.C:
		}
		if _, err := check.Probe(ctx); err != nil {
			if ctx.Err() != nil && lastErr != nil {
				continue // the deadline cut this probe short: keep the real failure
			}
			streak, lastErr = 0, err
		} else if streak++; streak >= successes {
			return nil
		}
		t.Reset(interval)
	}
}
