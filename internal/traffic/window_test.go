package traffic

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_764_540_000, 0)} }

func TestWindowSlides(t *testing.T) {
	c := newClock()
	w := NewWindow(WindowOptions{Size: 10 * time.Second, Now: c.Now})
	if st := w.Snapshot(); st.Requests != 0 || st.Covered != 0 || st.HasP99 {
		t.Fatalf("empty window: %+v", st)
	}
	for i := range 10 { // one second each: 100 requests, every 10th failed, 10ms..
		for j := range 10 {
			w.Observe(c.Now(), 10*time.Millisecond, j == 0)
		}
		if i < 9 {
			c.Add(time.Second)
		}
	}
	st := w.Snapshot()
	if st.Requests != 100 || st.Errors != 10 || st.ErrorRatio() != 0.1 {
		t.Fatalf("requests %d errors %d, want 100 and 10", st.Requests, st.Errors)
	}
	if st.AvgLatency != 10*time.Millisecond || !st.HasP99 || st.P99Latency < 10*time.Millisecond || st.P99Latency > 11*time.Millisecond {
		t.Fatalf("latency avg %v p99 %v (has %t), want 10ms and 10-11ms", st.AvgLatency, st.P99Latency, st.HasP99)
	}
	if st.Covered != 9*time.Second {
		t.Fatalf("covered %v, want 9s", st.Covered)
	}
	c.Add(5 * time.Second) // seconds 0-4 slide out
	if st := w.Snapshot(); st.Requests != 50 || st.Covered != 10*time.Second {
		t.Fatalf("after 5s: requests %d covered %v, want 50 and 10s", st.Requests, st.Covered)
	}
	w.Observe(c.Now().Add(-time.Minute), 0, false) // older than the window: dropped
	if st := w.Snapshot(); st.Requests != 50 {
		t.Fatalf("a request older than the window was counted: %d", st.Requests)
	}
	c.Add(time.Hour)
	if st := w.Snapshot(); st.Requests != 0 {
		t.Fatalf("after an hour: %d requests", st.Requests)
	}
	w.Reset()
	if st := w.Snapshot(); st.Covered != 0 {
		t.Fatalf("covered after reset: %v", st.Covered)
	}
}

func TestWindowP99(t *testing.T) {
	c := newClock()
	w := NewWindow(WindowOptions{Now: c.Now})
	for i := range 1000 {
		d := time.Millisecond
		if i%100 == 0 { // 1% slow: p99 is still fast, p99.9 would be slow
			d = time.Second
		}
		if i%50 == 0 {
			d = 300 * time.Millisecond // 2% at 300ms: p99 lands there
		}
		w.Observe(c.Now(), d, false)
	}
	st := w.Snapshot()
	if st.P99Latency < 300*time.Millisecond || st.P99Latency > 330*time.Millisecond {
		t.Fatalf("p99 = %v, want 300-330ms", st.P99Latency)
	}
}

func TestWindowAdd(t *testing.T) {
	c := newClock()
	w := NewWindow(WindowOptions{Now: c.Now})
	w.Add(c.Now(), 10, 20, 50*time.Millisecond) // errors capped at requests
	w.Add(c.Now(), 10, 0, 10*time.Millisecond)
	w.Add(c.Now(), 5, 0, -1) // latency unknown
	st := w.Snapshot()
	if st.Requests != 25 || st.Errors != 10 {
		t.Fatalf("requests %d errors %d, want 25 and 10", st.Requests, st.Errors)
	}
	if st.AvgLatency != 10*time.Millisecond || st.LatencyKnown != 10 || st.HasP99 {
		t.Fatalf("avg %v over %d, p99 %t; want 10ms over 10 and no p99", st.AvgLatency, st.LatencyKnown, st.HasP99)
	}
}

func TestHistIndexBounds(t *testing.T) {
	for _, d := range []time.Duration{0, 1, histMin - 1, histMin, time.Millisecond, 333 * time.Millisecond, time.Second, time.Hour, 1 << 62} {
		i := histIndex(d)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%v) = %d", d, i)
		}
		if i < histBuckets-1 && histUpper(i) < d {
			t.Fatalf("%v in bucket %d whose upper bound is %v", d, i, histUpper(i))
		}
		if i > 0 && i < histBuckets-1 && float64(histUpper(i)) > float64(d)*histGrowth*1.0001 {
			t.Fatalf("%v in bucket %d whose upper bound %v is more than 10%% above", d, i, histUpper(i))
		}
	}
}
