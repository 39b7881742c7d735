package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Notifier delivers events to the configured receivers. Build it with New,
// Start it, Notify from any goroutine, Close it once. A nil *Notifier
// accepts and discards events, so optional notifications need no nil checks.
type Notifier struct {
	cfg       Config
	logger    hclog.Logger
	metrics   *Metrics
	transport *http.Transport
	client    *http.Client
	receivers []*receiver

	ctx     context.Context    // ends deliveries: cancelled at Close's drain deadline
	cancel  context.CancelFunc //
	closing chan struct{}      // closed by Close: workers drain their queue, then exit
	wg      sync.WaitGroup     // the workers

	mu      sync.Mutex
	started bool
	closed  bool
}

// receiver is one endpoint's queue and the state of its worker.
type receiver struct {
	cfg    Receiver
	logger hclog.Logger
	wake   chan struct{} // capacity 1: "the queue may not be empty"

	deliveries map[string]prometheus.Counter // by result
	dropped    prometheus.Counter
	latency    prometheus.Observer

	mu       sync.Mutex
	buf      []queued // ring buffer of Config.QueueSize
	head, n  int
	closed   bool // no more pushes
	dropping bool // an overflow has been logged and the queue not emptied since
}

// New validates cfg and builds a Notifier; it starts nothing. A nil logger
// discards logs; nil metrics are created unregistered.
func New(cfg Config, logger hclog.Logger, metrics *Metrics) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notify config: %w", err)
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("notify")
	if metrics == nil {
		metrics, _ = NewMetrics(nil) // cannot fail unregistered
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{
		cfg:       cfg,
		logger:    logger,
		metrics:   metrics,
		transport: transport,
		client: &http.Client{
			Transport: transport,
			// A redirect is answered as final: it is a configuration
			// error, and following it would send the headers elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ctx:     ctx,
		cancel:  cancel,
		closing: make(chan struct{}),
	}
	for _, rc := range cfg.Receivers {
		metrics.initReceiver(rc.Name)
		r := &receiver{
			cfg:        rc,
			logger:     logger.With("receiver", rc.Name, "format", string(rc.Format)),
			wake:       make(chan struct{}, 1),
			deliveries: map[string]prometheus.Counter{},
			dropped:    metrics.dropped.WithLabelValues(rc.Name),
			latency:    metrics.latency.WithLabelValues(rc.Name),
			buf:        make([]queued, cfg.QueueSize),
		}
		for _, res := range []string{ResultSuccess, ResultRejected, ResultFailed, ResultAbandoned} {
			r.deliveries[res] = metrics.deliveries.WithLabelValues(rc.Name, res)
		}
		n.receivers = append(n.receivers, r)
	}
	return n, nil
}

// Start starts one delivery goroutine per receiver. Events notified before
// Start wait in the queues. Start after Start or Close does nothing.
func (n *Notifier) Start() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed {
		return
	}
	n.started = true
	for _, r := range n.receivers {
		n.wg.Add(1)
		go n.run(r)
	}
	n.logger.Info("webhook notifier started", "receivers", len(n.receivers))
}

// Notify queues ev for every receiver and returns at once: it never blocks
// on a receiver and never fails. When a receiver's queue is full its oldest
// event is dropped (and counted). Events notified after Close are dropped.
// Notify copies ev; the caller may reuse ev.Details.
func (n *Notifier) Notify(ev Event) {
	if n == nil || len(n.receivers) == 0 {
		return
	}
	if !ev.Kind.Valid() {
		n.logger.Warn("notifying an event of unknown kind", "kind", string(ev.Kind))
	}
	q := newQueued(ev, time.Now())
	for _, r := range n.receivers {
		switch r.push(q) {
		case pushOverflowStart:
			r.logger.Warn("webhook queue full: dropping the oldest events until it drains", "queue_size", len(r.buf))
		case pushClosed:
			r.logger.Debug("event notified after Close: dropped", "kind", string(q.ev.Kind))
		}
	}
}

// Close stops accepting events, lets the workers deliver what is queued for
// up to Config.DrainTimeout, then cancels the deliveries still running and
// waits for the workers. Events left undelivered are counted as dropped or
// abandoned. Close after Close does nothing.
func (n *Notifier) Close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	started := n.started
	n.mu.Unlock()

	for _, r := range n.receivers {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
	}
	close(n.closing)
	if started {
		done := make(chan struct{})
		go func() { n.wg.Wait(); close(done) }()
		timer := time.NewTimer(n.cfg.DrainTimeout)
		select {
		case <-done:
		case <-timer.C:
			n.logger.Warn("webhook drain deadline passed: cancelling deliveries", "drain_timeout", n.cfg.DrainTimeout)
		}
		timer.Stop()
		n.cancel()
		<-done
	}
	n.cancel()
	for _, r := range n.receivers {
		if left := r.discard(); left > 0 {
			r.dropped.Add(float64(left))
			r.logger.Warn("webhook events not delivered before Close", "dropped", left)
		}
	}
	n.transport.CloseIdleConnections()
}

type pushResult int

const (
	pushOK pushResult = iota
	pushOverflow
	pushOverflowStart // the first overflow since the queue was last empty
	pushClosed
)

func (r *receiver) push(q queued) pushResult {
	r.mu.Lock()
	res := pushOK
	switch {
	case r.closed:
		res = pushClosed
	case r.n == len(r.buf):
		r.buf[r.head] = queued{}
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		res = pushOverflow
		if !r.dropping {
			r.dropping = true
			res = pushOverflowStart
		}
	}
	if res != pushClosed {
		r.buf[(r.head+r.n)%len(r.buf)] = q
		r.n++
	}
	r.mu.Unlock()
	if res != pushOK {
		r.dropped.Inc()
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return res
}

func (r *receiver) pop() (queued, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.dropping = false
		return queued{}, false
	}
	q := r.buf[r.head]
	r.buf[r.head] = queued{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return q, true
}

// discard empties the queue and returns how many events it held.
func (r *receiver) discard() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	left := r.n
	clear(r.buf)
	r.head, r.n = 0, 0
	return left
}

// run is a receiver's worker: it delivers queued events in order until
// Close, then drains the queue until it is empty or the deadline passes.
func (n *Notifier) run(r *receiver) {
	defer n.wg.Done()
	for n.ctx.Err() == nil {
		if q, ok := r.pop(); ok {
			n.deliver(r, q)
			continue
		}
		select {
		case <-r.wake:
		case <-n.closing:
			r.mu.Lock()
			empty := r.n == 0 // Close stopped pushes before closing n.closing
			r.mu.Unlock()
			if empty {
				return
			}
		case <-n.ctx.Done():
		}
	}
}

// deliver sends q to r, retrying as the package doc says, and records the
// outcome.
func (n *Notifier) deliver(r *receiver, q queued) {
	logger := r.logger.With("event_id", q.id, "kind", string(q.ev.Kind))
	body, err := encode(r.cfg.Format, q)
	if err != nil { // an Event always encodes; keep the worker alive anyway
		logger.Error("cannot encode webhook event", "error", err)
		r.deliveries[ResultRejected].Inc()
		return
	}
	result := n.attempt(r, logger, q.id, body)
	r.deliveries[result].Inc()
	r.latency.Observe(time.Since(q.enqueued).Seconds())
}

func (n *Notifier) attempt(r *receiver, logger hclog.Logger, id string, body []byte) string {
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := n.post(r, id, body)
		if err == nil && status >= 200 && status < 300 {
			logger.Debug("webhook delivered", "attempt", attempt, "status", status)
			return ResultSuccess
		}
		if n.ctx.Err() != nil {
			logger.Warn("webhook delivery abandoned at Close", "attempt", attempt)
			return ResultAbandoned
		}
		if err == nil && !retryable(status) {
			logger.Warn("webhook rejected the event: not retrying", "attempt", attempt, "status", status)
			return ResultRejected
		}
		why := []any{"attempt", attempt, "status", status}
		if err != nil {
			why = []any{"attempt", attempt, "error", err}
		}
		if attempt >= n.cfg.MaxAttempts {
			logger.Warn("webhook delivery failed: giving up", why...)
			return ResultFailed
		}
		wait := n.backoff(attempt, retryAfter)
		logger.Debug("webhook delivery failed: retrying", append(why, "wait", wait)...)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-n.ctx.Done():
			timer.Stop()
			logger.Warn("webhook delivery abandoned at Close", "attempt", attempt)
			return ResultAbandoned
		}
	}
}

// retryable reports whether a status is worth another attempt.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// post makes one attempt. Its error never contains the URL.
func (n *Notifier) post(r *receiver, id string, body []byte) (status int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("cannot build the request") // Validate checked the URL
	}
	for k, v := range r.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "golive-controller")
	req.Header.Set("X-Golive-Event-Id", id)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, 0, redact(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), nil
}

// redact strips the URL that net/http puts in its errors.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("timeout")
		}
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the wait after the attempt-th failure: BackoffBase doubled per
// retry, capped at BackoffMax, half of it random ("equal jitter"); at least
// the receiver's Retry-After, capped at BackoffMax.
func (n *Notifier) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := n.cfg.BackoffBase
	for i := 1; i < attempt && d < n.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, n.cfg.BackoffMax)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, n.cfg.BackoffMax)
	}
	return d
}
