// Package loadgen is an open-loop HTTP load generator: it offers GET requests
// to one URL at a fixed rate, whatever the target does, and records what
// happened to each one.
//
// Open loop means the schedule does not wait for answers: request i is due at
// start + i/Rate. A pool of Concurrency workers sends them; a due request that
// finds every worker busy waits in a queue of Concurrency slots, and its
// latency counts from the moment it was due, so a stall of the target shows
// as latency, timeouts and dropped requests instead of a lower offered rate
// (no coordinated omission).
//
//	scheduler ──due times──▶ queue (Concurrency) ──▶ workers (Concurrency) ──▶ target
//	    │ queue full                                      │
//	    ▼                                                 ▼
//	  dropped                          ok | conn_error | timeout | 5xx | other_status | wrong_body
//
// Invariants:
//
//   - Every due request gets exactly one Record, in Result.Records ordered by
//     due time; requests are bounded by Options.Requests and Options.Duration
//     (at least one of them is required), by Stop and by the context.
//   - A request never takes longer than Options.Timeout from its due time:
//     past that it is a timeout (sent) or dropped (not sent).
//   - Run owns the scheduler and the workers: when it returns they have
//     exited and the idle connections are closed.
//   - Mark may be called from any goroutine while Run runs; a request belongs
//     to the phase whose mark precedes its due time.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Class is what became of one request.
type Class string

// Classes, in the order tables list them.
const (
	// ClassOK: a 2xx answer whose body matched Options.ExpectBody.
	ClassOK Class = "ok"
	// ClassConnError: no answer: refused, reset, closed before the response.
	ClassConnError Class = "conn_error"
	// ClassTimeout: no complete answer within Timeout of the due time.
	ClassTimeout Class = "timeout"
	// Class5xx: a 5xx status.
	Class5xx Class = "5xx"
	// ClassOtherStatus: a status other than 2xx or 5xx (redirects are not
	// followed).
	ClassOtherStatus Class = "other_status"
	// ClassWrongBody: a 2xx answer whose body lacks the expected string.
	ClassWrongBody Class = "wrong_body"
	// ClassDropped: not sent: every worker stayed busy until the request's
	// timeout, or the queue was full when it was due.
	ClassDropped Class = "dropped"
	// ClassCanceled: the context given to Run ended while it was in flight.
	// Not a failure of the target.
	ClassCanceled Class = "canceled"
)

// Classes lists every class, in table order.
var Classes = []Class{ClassOK, ClassConnError, ClassTimeout, Class5xx, ClassOtherStatus, ClassWrongBody, ClassDropped, ClassCanceled}

// Failed reports whether c counts as a failed request.
func (c Class) Failed() bool { return c != ClassOK && c != ClassCanceled }

// Defaults.
const (
	DefaultConcurrency = 64
	DefaultTimeout     = time.Second
	DefaultMaxBody     = 64 << 10
	DefaultPhase       = "start"
)

// Options configure a Generator.
type Options struct {
	// URL is the target; each request is a GET.
	URL string
	// Rate is the offered load in requests per second.
	Rate float64
	// Concurrency caps requests in flight and the queue of due requests
	// waiting for a worker (default 64). The transport keeps as many idle
	// connections, so keep-alive connections are reused.
	Concurrency int
	// Duration and Requests bound the run: no request is due at or after
	// start+Duration, and at most Requests are offered. At least one is
	// required; zero means no bound of that kind.
	Duration time.Duration
	Requests int
	// Timeout bounds each request from its due time to the end of its body
	// (default 1s).
	Timeout time.Duration
	// ExpectBody, when set, is called with the time a request was sent and
	// returns a string its 2xx body must contain ("": any body). A request
	// sent after a confirmed switch to v2 can thus require "v2".
	ExpectBody func(sent time.Time) string
	// MaxBody is how many body bytes are read and checked (default 64 KiB).
	MaxBody int64
	// DisableKeepAlives opens a connection per request.
	DisableKeepAlives bool
	// Phase names the phase before the first Mark (default "start").
	Phase string
}

func (o *Options) defaults() error {
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Phase == "" {
		o.Phase = DefaultPhase
	}
	switch {
	case o.URL == "":
		return errors.New("loadgen: url is required")
	case !(o.Rate > 0) || o.Rate > 1e6:
		return fmt.Errorf("loadgen: rate %v: want 0 < rate <= 1e6 requests/second", o.Rate)
	case o.Concurrency < 1:
		return fmt.Errorf("loadgen: concurrency %d: want at least 1", o.Concurrency)
	case o.Duration < 0 || o.Requests < 0:
		return errors.New("loadgen: duration and requests must not be negative")
	case o.Duration == 0 && o.Requests == 0:
		return errors.New("loadgen: duration or requests is required to bound the run")
	case o.Timeout < 0:
		return fmt.Errorf("loadgen: timeout %v must not be negative", o.Timeout)
	case o.MaxBody < 0:
		return fmt.Errorf("loadgen: max body %d must not be negative", o.MaxBody)
	}
	if _, err := http.NewRequest(http.MethodGet, o.URL, nil); err != nil {
		return fmt.Errorf("loadgen: url: %w", err)
	}
	return nil
}

// Record is what happened to one request.
type Record struct {
	// Seq is the request's index in the schedule.
	Seq int
	// Due is when the schedule said to send it; Sent when a worker sent it
	// (zero for dropped requests).
	Due, Sent time.Time
	// Latency runs from Due to the end of the body or the failure, so it
	// includes time spent waiting for a worker.
	Latency time.Duration
	Class   Class
	// Status is the HTTP status (0 without an answer).
	Status int
	// Err is why a request without an answer failed.
	Err string
	// Phase is the phase the request was due in.
	Phase string
}

// Phase is a labelled stretch of the run, from one Mark to the next.
type Phase struct {
	Name       string
	Start, End time.Time
}

// Result is a finished run.
type Result struct {
	// Started and Ended bound the run: the first due time and the moment the
	// last request finished.
	Started, Ended time.Time
	// Records holds every offered request, in schedule order.
	Records []Record
	// Phases lists the phases in the order they began; the first is
	// Options.Phase.
	Phases []Phase
}

// Generator runs one load run. Create it with New; Run it once.
type Generator struct {
	opts Options
	ran  atomic.Bool
	stop chan struct{}
	once sync.Once

	mu    sync.Mutex
	marks []Phase // Start set, End filled in by the result
}

// New validates opts and returns a Generator.
func New(opts Options) (*Generator, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Generator{opts: opts, stop: make(chan struct{})}, nil
}

// Mark begins phase name now: requests due from now on belong to it.
func (g *Generator) Mark(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.marks = append(g.marks, Phase{Name: name, Start: time.Now()})
}

// Stop ends the schedule: no further request is offered, and Run returns once
// the requests in flight finish. It is safe to call more than once, and
// before or after Run.
func (g *Generator) Stop() { g.once.Do(func() { close(g.stop) }) }

type job struct {
	seq int
	due time.Time
}

// Run offers the load until a bound is reached, Stop is called or ctx ends,
// waits for the requests in flight and returns every request's record. ctx
// ending cancels the requests in flight (ClassCanceled) and is reported as
// its error along with the records gathered so far.
func (g *Generator) Run(ctx context.Context) (Result, error) {
	if !g.ran.CompareAndSwap(false, true) {
		return Result{}, errors.New("loadgen: Run called twice")
	}
	o := g.opts
	tr := &http.Transport{
		Proxy:               nil, // the target is addressed directly
		DialContext:         (&net.Dialer{Timeout: o.Timeout}).DialContext,
		MaxIdleConns:        o.Concurrency,
		MaxIdleConnsPerHost: o.Concurrency,
		IdleConnTimeout:     30 * time.Second,
		DisableKeepAlives:   o.DisableKeepAlives,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	jobs := make(chan job, o.Concurrency)
	perWorker := make([][]Record, o.Concurrency)
	var wg sync.WaitGroup
	for w := range o.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				perWorker[w] = append(perWorker[w], g.do(ctx, client, j))
			}
		})
	}

	start := time.Now()
	dropped := g.schedule(ctx, start, jobs)
	close(jobs)
	wg.Wait()
	end := time.Now()

	res := Result{Started: start, Ended: end, Records: dropped}
	for _, rs := range perWorker {
		res.Records = append(res.Records, rs...)
	}
	slices.SortFunc(res.Records, func(a, b Record) int { return a.Seq - b.Seq })
	res.Phases = g.phases(start, end)
	for i := range res.Records {
		res.Records[i].Phase = phaseAt(res.Phases, res.Records[i].Due)
	}
	return res, ctx.Err()
}

// schedule feeds due requests to jobs until a bound, Stop or ctx, and returns
// the records of those dropped because the queue was full.
func (g *Generator) schedule(ctx context.Context, start time.Time, jobs chan<- job) []Record {
	o := g.opts
	timer := time.NewTimer(0)
	defer timer.Stop()
	var dropped []Record
	for i := 0; o.Requests == 0 || i < o.Requests; i++ {
		// Exact due time, so rounding in interval does not accumulate.
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / o.Rate))
		if o.Duration > 0 && due.Sub(start) >= o.Duration {
			break
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-g.stop:
				return dropped
			case <-ctx.Done():
				return dropped
			}
		} else {
			// Behind schedule (the process was descheduled): catch up at
			// once, but still notice Stop and ctx.
			select {
			case <-g.stop:
				return dropped
			case <-ctx.Done():
				return dropped
			default:
			}
		}
		select {
		case jobs <- job{seq: i, due: due}:
		default:
			dropped = append(dropped, Record{Seq: i, Due: due, Latency: time.Since(due), Class: ClassDropped, Err: "queue full: all workers busy"})
		}
	}
	return dropped
}

// do sends one request and classifies the outcome.
func (g *Generator) do(ctx context.Context, client *http.Client, j job) Record {
	o := g.opts
	rec := Record{Seq: j.seq, Due: j.due}
	deadline := j.due.Add(o.Timeout)
	if ctx.Err() != nil {
		rec.Class, rec.Err, rec.Latency = ClassCanceled, ctx.Err().Error(), time.Since(j.due)
		return rec
	}
	if !time.Now().Before(deadline) {
		rec.Class, rec.Err, rec.Latency = ClassDropped, "no worker free before the timeout", time.Since(j.due)
		return rec
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, o.URL, nil)
	if err != nil { // validated in New
		rec.Class, rec.Err = ClassConnError, err.Error()
		return rec
	}
	rec.Sent = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		rec.Latency = time.Since(j.due)
		rec.Class, rec.Err = classifyErr(ctx, err), err.Error()
		return rec
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, o.MaxBody))
	resp.Body.Close()
	rec.Latency = time.Since(j.due)
	rec.Status = resp.StatusCode
	switch {
	case err != nil:
		rec.Class, rec.Err = classifyErr(ctx, err), "reading body: "+err.Error()
	case resp.StatusCode >= 500:
		rec.Class = Class5xx
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		rec.Class = ClassOtherStatus
	case o.ExpectBody != nil && !strings.Contains(string(body), o.ExpectBody(rec.Sent)):
		rec.Class = ClassWrongBody
	default:
		rec.Class = ClassOK
	}
	return rec
}

// classifyErr tells a timeout from a connection error, and both from the
// run being cancelled.
func classifyErr(ctx context.Context, err error) Class {
	if ctx.Err() != nil {
		return ClassCanceled
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return ClassTimeout
	}
	return ClassConnError
}

// phases returns the run's phases: the first phase from start, then each
// mark (a mark before start renames the first phase), each ending where the
// next begins and the last at end.
func (g *Generator) phases(start, end time.Time) []Phase {
	g.mu.Lock()
	marks := slices.Clone(g.marks)
	g.mu.Unlock()
	ps := []Phase{{Name: g.opts.Phase, Start: start}}
	for _, m := range marks {
		if !m.Start.After(start) {
			ps[len(ps)-1].Name = m.Name
			continue
		}
		ps = append(ps, m)
	}
	for i := range ps {
		if i+1 < len(ps) {
			ps[i].End = ps[i+1].Start
		} else {
			ps[i].End = end
		}
	}
	return ps
}

// phaseAt names the phase t falls in.
func phaseAt(ps []Phase, t time.Time) string {
	name := ps[0].Name
	for _, p := range ps[1:] {
		if t.Before(p.Start) {
			break
		}
		name = p.Name
	}
	return name
}
