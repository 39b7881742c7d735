package deploystep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golive/golive/internal/agentconfig"
)

// Smoke check limits.
const (
	// smokeTimeout bounds a check without max_latency.
	smokeTimeout = 10 * time.Second
	// smokeMaxBody is how much of a response body body_contains searches.
	smokeMaxBody = 1 << 20
)

// smoke runs the service's smoke checks, in order, against the release that
// just went live. Every check runs; the stage's output has one line per
// check, and a failure names each failing check and why. A failure is
// handled like a failed health check: the previous release goes back.
func (s *step) smoke(ctx context.Context) error {
	out, err := s.r.runSmoke(ctx)
	if out == "" {
		s.report.Skipped = true
	}
	s.report.HookOutput = out
	return err
}

// runSmoke runs every smoke check; out is "" when there are none.
func (r *Runner) runSmoke(ctx context.Context) (out string, err error) {
	svc := r.cfg.Service
	if len(svc.Smoke) == 0 {
		return "", nil
	}
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// A check judges the answer it gets, redirects included.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	var lines, failed []string
	port := r.livePort()
	for _, sm := range svc.Smoke {
		if sm == nil {
			continue
		}
		desc, cerr := smokeCheck(ctx, client, svc, sm, port)
		if cerr != nil {
			lines = append(lines, fmt.Sprintf("FAIL %s: %s: %v", sm.Name, desc, cerr))
			failed = append(failed, fmt.Sprintf("%s (%s): %v", sm.Name, desc, cerr))
			continue
		}
		lines = append(lines, fmt.Sprintf("PASS %s: %s", sm.Name, desc))
	}
	out = strings.Join(lines, "\n")
	if len(failed) > 0 {
		return out, fmt.Errorf("%d of %d smoke checks failed: %s", len(failed), len(lines), strings.Join(failed, "; "))
	}
	return out, nil
}

// smokeCheck runs one check; desc says what was asked and answered.
func smokeCheck(ctx context.Context, client *http.Client, svc *agentconfig.Service, sm *agentconfig.Smoke, port int) (desc string, err error) {
	method := sm.Method
	if method == "" {
		method = http.MethodGet
	}
	target := smokeURL(svc, sm, port)
	desc = method + " " + target
	want := sm.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	timeout := smokeTimeout
	if sm.MaxLatency > 0 {
		timeout = sm.MaxLatency
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, method, target, nil)
	if err != nil {
		return desc, err
	}
	for k, v := range sm.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(io.LimitReader(resp.Body, smokeMaxBody))
		resp.Body.Close()
		took := time.Since(start)
		if err == nil {
			desc += fmt.Sprintf(" -> %d in %s", resp.StatusCode, took.Round(time.Millisecond))
			switch {
			case resp.StatusCode != want:
				return desc, fmt.Errorf("status %d, want %d", resp.StatusCode, want)
			case sm.BodyContains != "" && !strings.Contains(string(body), sm.BodyContains):
				return desc, fmt.Errorf("body does not contain %q", sm.BodyContains)
			case sm.MaxLatency > 0 && took > sm.MaxLatency:
				return desc, fmt.Errorf("took %s, max_latency %s", took.Round(time.Millisecond), sm.MaxLatency)
			}
			return desc, nil
		}
	}
	if sm.MaxLatency > 0 && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return desc, fmt.Errorf("no complete answer within max_latency %s", sm.MaxLatency)
	}
	return desc, err
}

// smokeURL is the check's URL: the scheme and host of the health URL (see
// agentconfig.Service.SmokeURL), or http://127.0.0.1:<port> without one.
func smokeURL(svc *agentconfig.Service, sm *agentconfig.Smoke, port int) string {
	if u, err := url.Parse(svc.SmokeURL(sm, port)); err == nil && u.Host != "" {
		return u.String()
	}
	return "http://127.0.0.1:" + strconv.Itoa(port) + sm.Path
}
