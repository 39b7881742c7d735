package traffic

import (
	"math"
	"sync"
	"time"
)

// Defaults of a Window.
const (
	DefaultWindow     = 30 * time.Second
	DefaultResolution = time.Second
)

// Histogram buckets: bucket 0 holds latencies below histMin, bucket i >= 1
// those in [histMin*histGrowth^(i-1), histMin*histGrowth^i), the last one
// everything above. A bucket's upper bound is within 10% of any value in it.
const (
	histMin     = 100 * time.Microsecond
	histGrowth  = 1.1
	histBuckets = 132 // up to histMin*1.1^131, about 26 min
)

var histLogGrowth = math.Log(histGrowth)

func histIndex(d time.Duration) int {
	if d < histMin {
		return 0
	}
	i := 1 + int(math.Log(float64(d)/float64(histMin))/histLogGrowth)
	return min(i, histBuckets-1)
}

// histUpper is the upper bound of bucket i.
func histUpper(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

type bucket struct {
	interval int64 // now/resolution of the bucket's span; 0: empty
	requests uint64
	errors   uint64
	latSum   time.Duration // over latN requests
	latN     uint64
	histN    uint64 // requests in hist
	hist     [histBuckets]uint32
}

func (b *bucket) clear(interval int64) {
	*b = bucket{interval: interval}
}

// Stats summarises a Window at one instant.
type Stats struct {
	// Requests and Errors (5xx and connection errors) in the window.
	Requests, Errors uint64
	// AvgLatency is the mean over the requests with a known latency
	// (LatencyKnown of them).
	AvgLatency   time.Duration
	LatencyKnown uint64
	// P99Latency is the 99th percentile (nearest rank, bucket upper
	// bound), valid only when HasP99: a source that gives no per-request
	// latency (HAProxy) has none.
	P99Latency time.Duration
	HasP99     bool
	// Covered is how much time the figures span: the window, or less when
	// the slot was first observed (or reset) more recently.
	Covered time.Duration
	// Window is the configured window.
	Window time.Duration
	// At is when the snapshot was taken.
	At time.Time
}

// ErrorRatio is Errors/Requests, 0 with no requests.
func (s Stats) ErrorRatio() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// Recorder also receives every request a Window is given, as it is
// given (the agent's Prometheus counters); it must be cheap and safe for
// concurrent use.
type Recorder interface {
	// Requests counts n requests, errors of them failed.
	Requests(n, errors uint64)
	// Latency counts n requests that took d.
	Latency(d time.Duration, n uint64)
}

// Window counts one slot's requests over a sliding window at a fixed
// resolution. It is safe for concurrent use; recording is O(1) and takes no
// allocation.
type Window struct {
	res     time.Duration
	size    time.Duration
	now     func() time.Time
	rec     Recorder
	mu      sync.Mutex
	buckets []bucket
	since   time.Time // first observation, or the last Reset
}

// WindowOptions configure NewWindow; zero values take the defaults.
type WindowOptions struct {
	Size       time.Duration // DefaultWindow
	Resolution time.Duration // DefaultResolution
	Now        func() time.Time
	// Recorder, when set, also receives every request.
	Recorder Recorder
}

// NewWindow returns an empty window; the span it covers starts now.
func NewWindow(o WindowOptions) *Window {
	if o.Size <= 0 {
		o.Size = DefaultWindow
	}
	if o.Resolution <= 0 {
		o.Resolution = DefaultResolution
	}
	if o.Resolution > o.Size {
		o.Resolution = o.Size
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := int((o.Size + o.Resolution - 1) / o.Resolution)
	return &Window{res: o.Resolution, size: time.Duration(n) * o.Resolution, now: o.Now, rec: o.Recorder,
		buckets: make([]bucket, n), since: o.Now()}
}

// Size is the window's span.
func (w *Window) Size() time.Duration { return w.size }

// Reset forgets everything: the window covers from now on (a new release
// went live on the slot).
func (w *Window) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.buckets)
	w.since = w.now()
}

// bucketFor returns the bucket of time t, nil when t is older than the
// ring holds or than the last Reset. The caller holds mu.
func (w *Window) bucketFor(t time.Time) *bucket {
	if t.Before(w.since) {
		return nil
	}
	iv := t.UnixNano()/int64(w.res) + 1 // never 0
	b := &w.buckets[iv%int64(len(w.buckets))]
	switch {
	case b.interval == iv:
	case b.interval < iv:
		b.clear(iv)
	default: // the slot holds a newer interval: t is past the window
		return nil
	}
	return b
}

// Observe records one request that ended at t, with its latency when
// known (latency < 0: unknown) and whether it failed.
func (w *Window) Observe(t time.Time, latency time.Duration, failed bool) {
	if w.rec != nil {
		var e uint64
		if failed {
			e = 1
		}
		w.rec.Requests(1, e)
		if latency >= 0 {
			w.rec.Latency(latency, 1)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.bucketFor(t)
	if b == nil {
		return
	}
	b.requests++
	if failed {
		b.errors++
	}
	if latency >= 0 {
		b.latSum += latency
		b.latN++
		b.histN++
		b.hist[histIndex(latency)]++
	}
}

// Add records n requests that ended in the interval of t, errors of them
// failed, with a mean latency (known for n - errors of them; mean < 0:
// unknown). errors is capped at n.
func (w *Window) Add(t time.Time, n, errors uint64, mean time.Duration) {
	if n == 0 {
		return
	}
	errors = min(errors, n)
	if w.rec != nil {
		w.rec.Requests(n, errors)
		if mean >= 0 && n > errors {
			w.rec.Latency(mean, n-errors)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.bucketFor(t)
	if b == nil {
		return
	}
	b.requests += n
	b.errors += errors
	if mean >= 0 && n > errors {
		ok := n - errors
		b.latSum += mean * time.Duration(ok)
		b.latN += ok
	}
}

// Snapshot summarises the window at now.
func (w *Window) Snapshot() Stats {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Stats{Window: w.size, At: now}
	cur := now.UnixNano()/int64(w.res) + 1
	oldest := cur - int64(len(w.buckets)) + 1
	var hist [histBuckets]uint64
	var histN uint64
	var latSum time.Duration
	for i := range w.buckets {
		b := &w.buckets[i]
		if b.interval < oldest || b.interval > cur {
			continue
		}
		st.Requests += b.requests
		st.Errors += b.errors
		latSum += b.latSum
		st.LatencyKnown += b.latN
		if b.histN > 0 {
			histN += b.histN
			for j, c := range b.hist {
				hist[j] += uint64(c)
			}
		}
	}
	if st.LatencyKnown > 0 {
		st.AvgLatency = latSum / time.Duration(st.LatencyKnown)
	}
	if histN > 0 {
		rank := uint64(math.Ceil(0.99 * float64(histN)))
		var seen uint64
		for j, c := range hist {
			seen += c
			if seen >= rank {
				st.P99Latency, st.HasP99 = histUpper(j), true
				break
			}
		}
	}
	st.Covered = min(max(now.Sub(w.since), 0), w.size)
	return st
}
