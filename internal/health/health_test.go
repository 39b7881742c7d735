package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flipServer answers 200 "ok v2" while healthy and 500 otherwise.
type flipServer struct {
	*httptest.Server
	failing atomic.Bool
	hits    atomic.Int64
}

func newFlipServer(t *testing.T) *flipServer {
	t.Helper()
	s := &flipServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.failing.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok v2\n"))
	}))
	t.Cleanup(s.Close)
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCheckValidate(t *testing.T) {
	tests := []struct {
		give    Check
		wantErr string
	}{
		{give: Check{URL: "http://127.0.0.1:8080/healthz"}},
		{give: Check{URL: "/healthz"}, wantErr: "absolute http"},
		{give: Check{URL: "ftp://h/x"}, wantErr: "absolute http"},
		{give: Check{URL: "http://h/", ExpectStatus: 42}, wantErr: "expect_status 42"},
		{give: Check{URL: "http://h/", Timeout: -1}, wantErr: "timeout"},
	}
	for _, tt := range tests {
		err := tt.give.Validate()
		if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.give, err, tt.wantErr)
		}
	}
}

func TestProbe(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("sampleapp v2\n")) })
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name    string
		give    Check
		wantErr string
	}{
		{name: "ok", give: Check{URL: srv.URL + "/ok"}},
		{name: "body match", give: Check{URL: srv.URL + "/ok", BodyContains: "v2"}},
		{name: "body mismatch", give: Check{URL: srv.URL + "/ok", BodyContains: "v3"}, wantErr: `body lacks "v3"`},
		{name: "status mismatch", give: Check{URL: srv.URL + "/teapot"}, wantErr: "status 418, want 200"},
		{name: "expected status", give: Check{URL: srv.URL + "/teapot", ExpectStatus: 418}},
		{name: "no redirects", give: Check{URL: srv.URL + "/redirect"}, wantErr: "status 302"},
		{name: "timeout", give: Check{URL: srv.URL + "/slow", Timeout: 50 * time.Millisecond}, wantErr: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lat, err := tt.give.Probe(t.Context())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if lat <= 0 {
				t.Errorf("latency = %s", lat)
			}
		})
	}
	// Connection refused: a port nothing listens on once the server is closed.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	if _, err := (Check{URL: dead.URL}).Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("probe of closed port = %v", err)
	}
}

func TestWaitHealthy(t *testing.T) {
	t.Run("becomes healthy", func(t *testing.T) {
		var hits atomic.Int64
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hits.Add(1) <= 2 {
				http.Error(w, "warming up", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok"))
		}))
		t.Cleanup(s.Close)
		err := WaitHealthy(t.Context(), Check{URL: s.URL}, 3, 5*time.Millisecond, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := hits.Load(); got != 5 {
			t.Fatalf("hits = %d, want 2 failures + 3 successes", got)
		}
	})
	t.Run("flips to failing", func(t *testing.T) {
		var hits atomic.Int64
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hits.Add(1) > 2 {
				http.Error(w, "broken", http.StatusInternalServerError)
				return
			}
			w.Write([]byte("ok"))
		}))
		t.Cleanup(s.Close)
		err := WaitHealthy(t.Context(), Check{URL: s.URL}, 3, 5*time.Millisecond, 200*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "not healthy within 200ms") ||
			!strings.Contains(err.Error(), "0/3 consecutive") || !strings.Contains(err.Error(), "status 500, want 200") {
			t.Fatalf("err = %v", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err does not wrap DeadlineExceeded: %v", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		s := newFlipServer(t)
		s.failing.Store(true)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			for s.hits.Load() < 2 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		err := WaitHealthy(ctx, Check{URL: s.URL}, 1, 5*time.Millisecond, time.Minute)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "wait canceled") || !strings.Contains(err.Error(), "status 500") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	w := NewWindow(10*time.Second, 0, clock)
	if st := w.Snapshot(); st.Requests != 0 || st.Healthy || st.ErrorRatio() != 0 {
		t.Fatalf("empty snapshot = %+v", st)
	}
	for i := 1; i <= 100; i++ { // 1ms..100ms, one failure at 100ms
		var err error
		if i == 100 {
			err = errors.New("status 500")
		}
		w.Observe(time.Duration(i)*time.Millisecond, err)
	}
	st := w.Snapshot()
	if st.Requests != 100 || st.Errors != 1 || st.LastError != "status 500" || st.Healthy {
		t.Fatalf("snapshot = %+v", st)
	}
	if st.AvgLatency != 50500*time.Microsecond || st.P99Latency != 99*time.Millisecond || st.ErrorRatio() != 0.01 {
		t.Fatalf("avg = %s p99 = %s ratio = %v", st.AvgLatency, st.P99Latency, st.ErrorRatio())
	}
	now = now.Add(5 * time.Second)
	w.Observe(7*time.Millisecond, nil)
	if st := w.Snapshot(); st.Requests != 101 || !st.Healthy || !st.LastSample.Equal(now) {
		t.Fatalf("after success: %+v", st)
	}
	now = now.Add(6 * time.Second) // the first 100 samples are now 11s old
	st = w.Snapshot()
	if st.Requests != 1 || st.Errors != 0 || st.LastError != "" || st.P99Latency != 7*time.Millisecond {
		t.Fatalf("after expiry: %+v", st)
	}
	now = now.Add(time.Hour)
	if st := w.Snapshot(); st.Requests != 0 || st.Healthy {
		t.Fatalf("after an hour: %+v", st)
	}

	capped := NewWindow(time.Minute, 10, clock)
	for i := range 25 {
		capped.Observe(time.Duration(i), nil)
	}
	if st := capped.Snapshot(); st.Requests != 10 || st.P99Latency != 24 {
		t.Fatalf("capped: %+v", st)
	}
}

func TestProberFlipsToFailing(t *testing.T) {
	s := newFlipServer(t)
	reg := prometheus.NewPedanticRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("second registration succeeded")
	}
	p, err := NewProber(ProberConfig{
		Service: "app", Check: Check{URL: s.URL + "/healthz"}, Interval: 5 * time.Millisecond,
		Metrics: metrics, Logger: hclog.New(&hclog.LoggerOptions{Output: tWriter{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	p.Start() // no-op
	t.Cleanup(p.Stop)
	waitFor(t, "healthy samples", func() bool { st := p.Snapshot(); return st.Requests >= 3 && st.Healthy })

	s.failing.Store(true)
	waitFor(t, "failures", func() bool { st := p.Snapshot(); return st.Errors >= 2 && !st.Healthy })
	st := p.Snapshot()
	if !strings.Contains(st.LastError, "status 500") || st.ErrorRatio() <= 0 || st.ErrorRatio() >= 1 {
		t.Fatalf("snapshot = %+v", st)
	}
	p.Stop()
	p.Stop()
	hits := s.hits.Load()
	after := p.Snapshot().Requests

	// Externally observed samples feed the same window, but are not probes.
	p.Observe(3*time.Millisecond, nil)
	if got := p.Snapshot(); got.Requests != after+1 || !got.Healthy {
		t.Fatalf("after Observe: %+v", got)
	}
	if s.hits.Load() != hits {
		t.Fatal("probing continued after Stop")
	}

	got := gather(t, reg)
	success, failure := got[`golive_agent_health_probe_total{result="success",service="app"}`], got[`golive_agent_health_probe_total{result="failure",service="app"}`]
	if success < 3 || failure < 2 || uint64(success+failure) != after {
		t.Fatalf("probe counters success=%v failure=%v, window requests=%d: %v", success, failure, after, got)
	}
	if got[`golive_agent_health_probe_duration_seconds_count{service="app"}`] != success+failure {
		t.Fatalf("duration count mismatch: %v", got)
	}
	ratio := got[`golive_agent_health_window_error_ratio{service="app"}`]
	if want := p.Snapshot().ErrorRatio(); ratio != want {
		t.Fatalf("error ratio gauge = %v, want %v", ratio, want)
	}

	pb := p.Snapshot().ToProto()
	if pb.Requests != after+1 || pb.WindowSeconds != 60 || pb.LastProbe == nil || !strings.Contains(pb.LastError, "500") || !pb.Healthy {
		t.Fatalf("proto = %v", pb)
	}

	metrics.Forget("app")
	if n := len(gather(t, reg)); n != 0 {
		t.Fatalf("series left after Forget: %d", n)
	}
}

// gather flattens reg into "name{labels}" -> value (histograms: _count).
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[mf.GetName()+key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[mf.GetName()+key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count"+key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestNewProberValidates(t *testing.T) {
	if _, err := NewProber(ProberConfig{Check: Check{URL: "http://h/"}}); err == nil || !strings.Contains(err.Error(), "service") {
		t.Fatalf("no service: %v", err)
	}
	if _, err := NewProber(ProberConfig{Service: "a", Check: Check{URL: "h"}}); err == nil || !strings.Contains(err.Error(), "url") {
		t.Fatalf("bad url: %v", err)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestProberFollowsURL: with URL set, every probe goes where it points now
// (a blue-green switch moves the serving instance to another port).
func TestProberFollowsURL(t *testing.T) {
	good, bad := newFlipServer(t), newFlipServer(t)
	bad.failing.Store(true)
	var target atomic.Pointer[string]
	u := good.URL + "/healthz"
	target.Store(&u)
	p, err := NewProber(ProberConfig{
		Service: "app", Check: Check{URL: good.URL + "/healthz"}, Interval: 5 * time.Millisecond,
		URL: func() string { return *target.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Stop)
	waitFor(t, "healthy samples", func() bool { st := p.Snapshot(); return st.Requests >= 3 && st.Healthy })
	b := bad.URL + "/healthz"
	target.Store(&b)
	waitFor(t, "failures from the new URL", func() bool { st := p.Snapshot(); return st.Errors >= 2 })
}
