package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// prober fetches a URL through the router to see which configuration (nginx)
// or server (HAProxy) answers, from a response header.
type prober struct {
	url     string
	timeout time.Duration
	hint    string // how to make the router send the header
	client  *http.Client
}

func newProber(url string, timeout time.Duration, hint string) prober {
	// A fresh connection per probe: a kept-alive one would stay with the
	// nginx worker (and upstream file) that accepted it.
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	return prober{url: url, timeout: timeout, hint: hint, client: &http.Client{
		Transport: tr, Timeout: 2 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// until probes every 5ms until header has been want on at least n
// consecutive probes spanning at least settle, or the prober's timeout.
func (p prober) until(ctx context.Context, header, want string, settle time.Duration, n int) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var since time.Time // first of the current run of probes answering want
	run := 0
	last := "no answer"
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := p.get(ctx, header)
		switch {
		case err != nil && ctx.Err() != nil:
			// The deadline cut this probe short: keep the last real answer.
		case err != nil:
			since, run, last = time.Time{}, 0, err.Error()
		case got == want:
			if run == 0 {
				since = time.Now()
			}
			run++
			if run >= n && time.Since(since) >= settle {
				return nil
			}
		case got == "":
			since, run, last = time.Time{}, 0, "answers lack the "+header+" header ("+p.hint+")"
		default:
			since, run, last = time.Time{}, 0, fmt.Sprintf("still answering with %s: %s", header, got)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe %s for %s: %s: %v: %s", p.url, header, want, context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

func (p prober) get(ctx context.Context, header string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.Header.Get(header), nil
}
