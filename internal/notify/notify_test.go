package notify

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is what a test receiver saw.
type request struct {
	header http.Header
	body   []byte
}

// recorder is a local webhook receiver. Its handler answers each request
// with the next status of statuses (the last one repeats); status 0 drops
// the connection without an answer (a network error).
type recorder struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []request
	statuses []int
}

func newRecorder(t *testing.T, statuses ...int) *recorder {
	t.Helper()
	rec := &recorder{statuses: statuses}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, request{header: r.Header.Clone(), body: body})
		status := http.StatusOK
		if len(rec.statuses) > 0 {
			status = rec.statuses[0]
			if len(rec.statuses) > 1 {
				rec.statuses = rec.statuses[1:]
			}
		}
		rec.mu.Unlock()
		if status == 0 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		if status == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) requests() []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: tWriter{t}, Level: hclog.Debug})
}

// fastConfig retries quickly, so the tests do not wait for backoffs.
func fastConfig(rs ...Receiver) Config {
	return Config{Receivers: rs, MaxAttempts: 4, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, DrainTimeout: 5 * time.Second}
}

// start builds and starts a Notifier whose metrics are on a fresh registry;
// the test's cleanup closes it.
func start(t *testing.T, cfg Config, logger hclog.Logger) (*Notifier, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if logger == nil {
		logger = testLogger(t)
	}
	n, err := New(cfg, logger, m)
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(n.Close)
	return n, m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func counterValue(c prometheus.Counter) int {
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		panic(err)
	}
	return int(pb.GetCounter().GetValue())
}

func deliveries(m *Metrics, receiver, result string) int {
	return counterValue(m.deliveries.WithLabelValues(receiver, result))
}

func dropped(m *Metrics, receiver string) int {
	return counterValue(m.dropped.WithLabelValues(receiver))
}

func observations(m *Metrics, receiver string) int {
	var pb dto.Metric
	if err := m.latency.WithLabelValues(receiver).(prometheus.Histogram).Write(&pb); err != nil {
		panic(err)
	}
	return int(pb.GetHistogram().GetSampleCount())
}

var gateFailed = Event{
	Kind:         KindGateFailed,
	Time:         time.Date(2025, 3, 14, 9, 26, 53, 589e6, time.FixedZone("CET", 3600)),
	Actor:        "controller",
	RolloutID:    "r-42",
	Service:      "checkout",
	Release:      "v2.4.1",
	Reason:       "error rate 0.8% > 0.1%",
	FencingToken: 1187,
	Details:      map[string]string{"wave": "2", "hosts": "web-3,web-4"},
}

func TestJSONBody(t *testing.T) {
	rec := newRecorder(t)
	n, m := start(t, fastConfig(Receiver{Name: "ops", URL: rec.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer t0ken"}}), nil)

	ev := gateFailed
	ev.Details = map[string]string{"wave": "2", "hosts": "web-3,web-4"}
	n.Notify(ev)
	ev.Details["wave"] = "changed after Notify" // Notify copied the event
	waitFor(t, "a delivery", func() bool { return deliveries(m, "ops", ResultSuccess) == 1 })

	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	h := reqs[0].header
	if got := h.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := h.Get("Authorization"); got != "Bearer t0ken" {
		t.Errorf("Authorization = %q, want the configured header", got)
	}

	var got map[string]any
	if err := json.Unmarshal(reqs[0].body, &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, reqs[0].body)
	}
	id, _ := got["id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("id = %q, want 32 hex digits", id)
	}
	if h.Get("X-Golive-Event-Id") != id {
		t.Errorf("X-Golive-Event-Id = %q, want the body's id %q", h.Get("X-Golive-Event-Id"), id)
	}
	delete(got, "id")
	want := map[string]any{
		"version":       1.0,
		"kind":          "gate_failed",
		"time":          "2025-03-14T08:26:53.589Z",
		"summary":       "golive: gate failed for checkout v2.4.1 (rollout r-42) by controller: error rate 0.8% > 0.1% [hosts=web-3,web-4 wave=2]",
		"actor":         "controller",
		"rollout_id":    "r-42",
		"service":       "checkout",
		"release":       "v2.4.1",
		"reason":        "error rate 0.8% > 0.1%",
		"fencing_token": 1187.0,
		"details":       map[string]any{"wave": "2", "hosts": "web-3,web-4"},
	}
	gotJSON, _ := json.MarshalIndent(got, "", "  ")
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("body:\n%s\nwant (id aside):\n%s", gotJSON, wantJSON)
	}
}

func TestJSONBodyOmitsEmptyFields(t *testing.T) {
	body, err := encode(FormatJSON, newQueued(Event{Kind: KindApprovalExpired}, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"id", "kind", "summary", "time", "version"}; !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil {
		t.Errorf("time defaults to Notify's: %v", err)
	}
}

func TestSlackFormat(t *testing.T) {
	rec := newRecorder(t)
	n, m := start(t, fastConfig(Receiver{Name: "chat", URL: rec.URL, Format: FormatSlack}), nil)

	n.Notify(Event{Kind: KindRolledBack, Service: "checkout", Release: "v2.4.1", RolloutID: "r-42",
		Reason: "gate failed: p99 <latency> & errors\nsecond line"})
	waitFor(t, "a delivery", func() bool { return deliveries(m, "chat", ResultSuccess) == 1 })

	body := rec.requests()[0].body
	var got map[string]string
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body is not a JSON object of strings: %v\n%s", err, body)
	}
	want := map[string]string{"text": "golive: rolled back for checkout v2.4.1 (rollout r-42): gate failed: p99 &lt;latency&gt; &amp; errors second line"}
	if len(got) != 1 || got["text"] != want["text"] {
		t.Errorf("body = %v\nwant   %v", got, want)
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		give Event
		want string
	}{
		{"approval granted", Event{Kind: KindApprovalGranted, Actor: "alice", FencingToken: 1187, Details: map[string]string{"ttl": "2h"}},
			"golive: approval granted by alice [token=1187 ttl=2h]"},
		{"approval expired", Event{Kind: KindApprovalExpired, FencingToken: 7},
			"golive: approval expired [token=7]"},
		{"rollout started", Event{Kind: KindRolloutStarted, Actor: "bob", RolloutID: "r-1", Service: "api", Release: "v2", FencingToken: 9},
			"golive: rollout started for api v2 (rollout r-1) by bob"},
		{"wave passed", Event{Kind: KindWavePassed, RolloutID: "r-1", Service: "api", Details: map[string]string{"wave": "3", "of": "4"}},
			"golive: wave passed for api (rollout r-1) [of=4 wave=3]"},
		{"release only", Event{Kind: KindRolloutHalted, Release: "v2", Reason: "approval revoked"},
			"golive: rollout halted for release v2: approval revoked"},
		{"unknown kind", Event{Kind: "something_new"}, "golive: something new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.give.Summary(); got != tt.want {
				t.Errorf("Summary() = %q\nwant        %q", got, tt.want)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		give         []int // statuses the receiver answers, in order; 0: connection dropped
		wantAttempts int
		wantResult   string
	}{
		{"500 then success", []int{500, 500, 200}, 3, ResultSuccess},
		{"429 then success", []int{429, 204}, 2, ResultSuccess},
		{"network error then success", []int{0, 200}, 2, ResultSuccess},
		{"400 is not retried", []int{400, 200}, 1, ResultRejected},
		{"404 is not retried", []int{404, 200}, 1, ResultRejected},
		{"redirect is not followed", []int{302, 200}, 1, ResultRejected},
		{"5xx until attempts run out", []int{503}, 4, ResultFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, tt.give...)
			n, m := start(t, fastConfig(Receiver{Name: "r", URL: rec.URL}), nil)
			n.Notify(Event{Kind: KindRolloutSucceeded, Service: "api"})
			waitFor(t, "an outcome", func() bool {
				return deliveries(m, "r", ResultSuccess)+deliveries(m, "r", ResultRejected)+deliveries(m, "r", ResultFailed) == 1
			})
			if got := deliveries(m, "r", tt.wantResult); got != 1 {
				t.Errorf("deliveries{result=%q} = %d, want 1", tt.wantResult, got)
			}
			n.Close() // nothing more can be attempted
			reqs := rec.requests()
			if len(reqs) != tt.wantAttempts {
				t.Errorf("%d attempts, want %d", len(reqs), tt.wantAttempts)
			}
			for _, r := range reqs[1:] {
				if r.header.Get("X-Golive-Event-Id") != reqs[0].header.Get("X-Golive-Event-Id") {
					t.Errorf("a retry changed the event id")
				}
			}
			if got := observations(m, "r"); got != 1 {
				t.Errorf("latency observations = %d, want 1", got)
			}
		})
	}
}

// hangingReceiver accepts requests and never answers until the test ends.
func hangingReceiver(t *testing.T) (url string, got <-chan struct{}) {
	t.Helper()
	gotc := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case gotc <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv.URL, gotc
}

func TestHangingReceiverDoesNotBlockNotify(t *testing.T) {
	url, got := hangingReceiver(t)
	healthy := newRecorder(t)
	cfg := fastConfig(
		Receiver{Name: "hang", URL: url, Timeout: time.Minute},
		Receiver{Name: "ok", URL: healthy.URL},
	)
	cfg.QueueSize = 100
	cfg.DrainTimeout = 200 * time.Millisecond
	n, m := start(t, cfg, nil)

	n.Notify(Event{Kind: KindRolloutStarted})
	<-got // the hanging receiver's worker is now stuck in a request

	const events = 10_000
	began := time.Now()
	for i := range events {
		n.Notify(Event{Kind: KindWavePassed, Details: map[string]string{"wave": string(rune('0' + i%10))}})
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("%d Notify calls took %s while a receiver hangs", events, took)
	} else {
		t.Logf("%d Notify calls took %s", events, took)
	}
	if got, want := dropped(m, "hang"), events-cfg.QueueSize; got != want {
		t.Errorf("dropped{hang} = %d, want %d", got, want)
	}
	// The healthy receiver is not held up by the hanging one.
	waitFor(t, "the healthy receiver", func() bool { return deliveries(m, "ok", ResultSuccess)+dropped(m, "ok") == events+1 })

	began = time.Now()
	n.Close()
	if took := time.Since(began); took > cfg.DrainTimeout+2*time.Second {
		t.Errorf("Close took %s with a drain timeout of %s", took, cfg.DrainTimeout)
	}
	if got := deliveries(m, "hang", ResultAbandoned); got != 1 {
		t.Errorf("abandoned{hang} = %d, want 1 (the request in flight)", got)
	}
	if got := dropped(m, "hang"); got != events {
		t.Errorf("dropped{hang} after Close = %d, want %d (the queue left behind too)", got, events)
	}
}

func TestCloseDrains(t *testing.T) {
	var mu sync.Mutex
	var kinds []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // slower than Notify
		var ev wireEvent
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		kinds = append(kinds, ev.Details["n"])
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	m, _ := NewMetrics(nil)
	n, err := New(fastConfig(Receiver{Name: "r", URL: srv.URL}), testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}

	const events = 30
	var want []string
	for i := range events {
		s := strings.Repeat("x", i)
		want = append(want, s)
		n.Notify(Event{Kind: KindWavePassed, Details: map[string]string{"n": s}}) // before Start: queued
	}
	n.Start()
	n.Close()
	n.Notify(Event{Kind: KindRolloutSucceeded}) // after Close: dropped, no panic
	n.Close()                                   // idempotent
	n.Start()                                   // no-op after Close

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(kinds, want) {
		t.Errorf("delivered %d events, in order %v; want all %d in order", len(kinds), kinds, events)
	}
	if got := deliveries(m, "r", ResultSuccess); got != events {
		t.Errorf("success = %d, want %d", got, events)
	}
	if got := dropped(m, "r"); got != 1 {
		t.Errorf("dropped = %d, want 1 (the event after Close)", got)
	}
}

func TestCloseWithoutStart(t *testing.T) {
	m, _ := NewMetrics(nil)
	n, err := New(fastConfig(Receiver{Name: "r", URL: "http://127.0.0.1:1/"}), nil, m)
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(Event{Kind: KindApprovalGranted})
	n.Close()
	if got := dropped(m, "r"); got != 1 {
		t.Errorf("dropped = %d, want 1", got)
	}
}

func TestNilNotifier(t *testing.T) {
	var n *Notifier
	n.Start()
	n.Notify(Event{Kind: KindApprovalGranted})
	n.Close()
}

func TestNoReceivers(t *testing.T) {
	n, _ := start(t, Config{}, nil)
	n.Notify(Event{Kind: KindApprovalGranted})
}

// TestURLNeverLogged: a webhook URL is a credential (Slack's carries its
// token in the path), so neither logs nor errors may show it.
func TestURLNeverLogged(t *testing.T) {
	const secret = "T0000SECRET/B0000SECRET/xxxxSECRETxxxx"
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close() // connection refused from now on
	rejecting := newRecorder(t, 403)

	var logs safeBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	cfg := fastConfig(
		Receiver{Name: "refused", URL: refusedURL + "/services/" + secret, Format: FormatSlack},
		Receiver{Name: "rejecting", URL: rejecting.URL + "/services/" + secret, Headers: map[string]string{"Authorization": "Bearer " + secret}},
	)
	n, m := start(t, cfg, logger)
	n.Notify(Event{Kind: KindRolloutHalted})
	waitFor(t, "both outcomes", func() bool {
		return deliveries(m, "refused", ResultFailed) == 1 && deliveries(m, "rejecting", ResultRejected) == 1
	})
	n.Close()
	t.Log(logs.String())
	if strings.Contains(logs.String(), "SECRET") {
		t.Errorf("logs show the webhook URL or headers:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "refused") {
		t.Errorf("logs do not say what failed:\n%s", logs.String())
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestBackoff(t *testing.T) {
	n := &Notifier{cfg: Config{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}}
	tests := []struct {
		attempt    int
		retryAfter time.Duration
		min, max   time.Duration
	}{
		{1, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 0, 200 * time.Millisecond, 400 * time.Millisecond},
		{5, 0, 500 * time.Millisecond, time.Second},
		{60, 0, 500 * time.Millisecond, time.Second},
		{1, 700 * time.Millisecond, 700 * time.Millisecond, 700 * time.Millisecond},
		{1, time.Hour, time.Second, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := n.backoff(tt.attempt, tt.retryAfter); got < tt.min || got > tt.max {
				t.Fatalf("backoff(%d, %s) = %s, want in [%s, %s]", tt.attempt, tt.retryAfter, got, tt.min, tt.max)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		give string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.give, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.give, got, tt.want)
		}
	}
}
