package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, o Options) Result {
	t.Helper()
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRateAndSelfStop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "v1") }))
	defer srv.Close()

	tests := []struct {
		name string
		give Options
		want int
	}{
		{"duration", Options{Rate: 200, Duration: time.Second}, 200},
		{"requests", Options{Rate: 400, Requests: 100}, 100},
		{"both, requests first", Options{Rate: 100, Requests: 30, Duration: 10 * time.Second}, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.give.URL = srv.URL
			begin := time.Now()
			res := run(t, tt.give)
			took := time.Since(begin)
			s := res.Summary()
			if s.Requests != tt.want || s.OK != tt.want || s.Failed != 0 {
				t.Fatalf("requests %d ok %d failed %d (%v), want %d ok", s.Requests, s.OK, s.Failed, s.ByClass, tt.want)
			}
			wantSpan := time.Duration(float64(tt.want-1) / tt.give.Rate * float64(time.Second))
			if d := s.Span - wantSpan; d < 0 || d > time.Millisecond {
				t.Errorf("schedule span %v, want %v", s.Span, wantSpan)
			}
			// Stops by itself, about when the schedule ends.
			if took < wantSpan || took > wantSpan+time.Second {
				t.Errorf("run took %v, schedule %v", took, wantSpan)
			}
			// Sent at the offered rate, within a tolerance generous enough
			// for a loaded machine running the race detector.
			first, last := res.Records[0].Sent, res.Records[len(res.Records)-1].Sent
			if got := float64(tt.want-1) / last.Sub(first).Seconds(); got < 0.75*tt.give.Rate || got > 1.25*tt.give.Rate {
				t.Errorf("sent at %.0f rps, want %.0f", got, tt.give.Rate)
			}
			for i, r := range res.Records {
				if r.Seq != i || r.Phase != DefaultPhase {
					t.Fatalf("record %d: %+v", i, r)
				}
			}
		})
	}
}

// A target that stalls does not slow the offered load: the requests show up
// as timeouts and dropped, at the scheduled rate.
func TestOpenLoopUnderStall(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	res := run(t, Options{URL: srv.URL, Rate: 200, Duration: 500 * time.Millisecond, Concurrency: 4, Timeout: 100 * time.Millisecond})
	s := res.Summary()
	if s.Requests != 100 {
		t.Fatalf("offered %d, want 100 whatever the target does", s.Requests)
	}
	if s.OK != 0 || s.Failed != 100 || s.ByClass[ClassTimeout] == 0 || s.ByClass[ClassDropped] == 0 {
		t.Fatalf("classes %v, want only timeouts and dropped", s.ByClass)
	}
	if s.ByClass[ClassTimeout]+s.ByClass[ClassDropped] != 100 {
		t.Fatalf("classes %v", s.ByClass)
	}
	for _, r := range res.Records {
		if r.Latency > 100*time.Millisecond+500*time.Millisecond {
			t.Errorf("request %d took %v, beyond its timeout", r.Seq, r.Latency)
		}
	}
}

func TestClassifies(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 5 {
		case 0:
			fmt.Fprintln(w, "v2")
		case 1:
			fmt.Fprintln(w, "v1") // wrong body
		case 2:
			http.Error(w, "boom", http.StatusBadGateway)
		case 3:
			http.NotFound(w, r)
		case 4:
			// A broken answer, then hang up.
			hj, ok := w.(http.Hijacker)
			if !ok {
				panic("no hijacker")
			}
			c, _, err := hj.Hijack()
			if err == nil {
				fmt.Fprint(c, "HTTP/1.1 two hundred\r\n\r\n")
				c.Close()
			}
		}
	}))
	defer srv.Close()

	res := run(t, Options{URL: srv.URL, Rate: 200, Requests: 100, Concurrency: 16, Timeout: 10 * time.Second,
		ExpectBody: func(time.Time) string { return "v2" }})
	s := res.Summary()
	for _, c := range []Class{ClassOK, ClassWrongBody, Class5xx, ClassOtherStatus, ClassConnError} {
		if s.ByClass[c] != 20 {
			t.Errorf("%d %s, want 20, among %v", s.ByClass[c], c, s.ByClass)
		}
	}
	if s.Requests != 100 || s.OK != 20 || s.Failed != 80 {
		t.Fatalf("summary %+v", s)
	}
	if s.FirstFailure.IsZero() || s.FailureWindow() <= 0 {
		t.Errorf("failure window %v from %v", s.FailureWindow(), s.FirstFailure)
	}
	for _, r := range res.Records {
		if (r.Class == ClassConnError) != (r.Status == 0) {
			t.Errorf("record %+v", r)
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := run(t, Options{URL: "http://" + addr + "/", Rate: 100, Requests: 10})
	if s := res.Summary(); s.ByClass[ClassConnError] != 10 || s.Latency.Samples != 0 {
		t.Fatalf("summary %+v", s)
	}
}

func TestPhasesAndExpectBody(t *testing.T) {
	var version atomic.Value
	version.Store("v1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, version.Load())
	}))
	defer srv.Close()

	var switched atomic.Pointer[time.Time]
	g, err := New(Options{URL: srv.URL, Rate: 200, Duration: 10 * time.Second, Phase: "steady",
		ExpectBody: func(sent time.Time) string {
			if at := switched.Load(); at != nil && sent.After(*at) {
				return "v2"
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := g.Run(t.Context())
		done <- out{res, err}
	}()
	wait := func(d time.Duration) {
		select {
		case <-time.After(d):
		case o := <-done:
			t.Fatalf("run ended early: %v", o.err)
		}
	}
	wait(200 * time.Millisecond)
	g.Mark("switch")
	version.Store("v2")
	now := time.Now()
	switched.Store(&now)
	g.Mark("after")
	wait(200 * time.Millisecond)
	// A confirmed switch that did not stick: v1 answers after it are wrong.
	version.Store("v1")
	wait(100 * time.Millisecond)
	g.Stop()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	res := o.res
	if len(res.Phases) != 3 || res.Phases[0].Name != "steady" || res.Phases[2].Name != "after" || !res.Phases[2].End.Equal(res.Ended) {
		t.Fatalf("phases %+v", res.Phases)
	}
	steady, after := res.Phase("steady"), res.Phase("after")
	if steady.Requests < 20 || steady.Failed != 0 {
		t.Errorf("steady %+v", steady)
	}
	if after.ByClass[ClassWrongBody] < 10 || after.OK < 10 {
		t.Errorf("after %+v", after)
	}
	if total := res.Summary().Requests; total != steady.Requests+res.Phase("switch").Requests+after.Requests || total > 150 {
		t.Errorf("total %d: Stop did not end the schedule or phases lose requests", total)
	}
	if b := res.Between(res.Phases[2].Start, res.Ended); b.Requests != after.Requests {
		t.Errorf("between %d, phase %d", b.Requests, after.Requests)
	}
}

func TestCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	g, err := New(Options{URL: srv.URL, Rate: 100, Duration: time.Minute, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	res, err := g.Run(ctx)
	if err == nil || time.Since(begin) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(begin))
	}
	if s := res.Summary(); s.ByClass[ClassCanceled] == 0 || s.Failed != 0 {
		t.Fatalf("summary %+v", s)
	}
	if _, err := g.Run(t.Context()); err == nil {
		t.Fatal("second Run: no error")
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []Options{
		{Rate: 1, Requests: 1},
		{URL: "http://x/", Requests: 1},
		{URL: "http://x/", Rate: 1},
		{URL: "http://x/", Rate: 1, Requests: 1, Concurrency: -1},
		{URL: "http://x/", Rate: 1, Requests: 1, Timeout: -1},
		{URL: "::", Rate: 1, Requests: 1},
	}
	for _, give := range tests {
		if _, err := New(give); err == nil {
			t.Errorf("%+v: no error", give)
		}
	}
}

func TestLatencies(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Latencies(ds)
	if s.P50 != 50*time.Millisecond || s.P90 != 90*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond || s.Samples != 100 {
		t.Fatalf("Latencies(1..100ms) = %+v", s)
	}
	if s := Latencies(nil); s != (Stats{}) {
		t.Fatalf("Latencies(nil) = %+v", s)
	}
}
