package health

import (
	"math"
	"slices"
	"sync"
	"time"
)

// DefaultWindow is the sliding window size when none is configured.
const DefaultWindow = 60 * time.Second

// DefaultMaxSamples bounds a Window's memory when none is configured.
const DefaultMaxSamples = 1 << 16

// Stats summarises a Window at one instant.
type Stats struct {
	// Requests and Errors count the samples in the window.
	Requests, Errors uint64
	// AvgLatency and P99Latency are over all samples in the window, failed
	// ones included (a timeout is a slow request); P99 uses nearest rank.
	AvgLatency, P99Latency time.Duration
	// Healthy is true when the most recent sample in the window succeeded.
	Healthy bool
	// LastSample is when the most recent sample was recorded (zero if none).
	LastSample time.Time
	// LastError is the most recent failure in the window ("" if none).
	LastError string
	// Window is the configured window size.
	Window time.Duration
}

// ErrorRatio is Errors/Requests, 0 when there were no requests.
func (s Stats) ErrorRatio() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

type sample struct {
	at      time.Time
	latency time.Duration
	err     string // "" on success
}

// Window keeps the samples of the last Size. It is safe for concurrent use.
// When more than MaxSamples arrive within the window the oldest are dropped,
// so under heavy external feeding the summary covers a shorter span.
type Window struct {
	size       time.Duration
	now        func() time.Time
	maxSamples int

	mu      sync.Mutex
	samples []sample // in arrival order; samples[head:] are live
	head    int
}

// NewWindow returns a window of the given size (default 60s) holding at most
// maxSamples samples (default 65536). now is the clock (default time.Now).
func NewWindow(size time.Duration, maxSamples int, now func() time.Time) *Window {
	if size <= 0 {
		size = DefaultWindow
	}
	if maxSamples <= 0 {
		maxSamples = DefaultMaxSamples
	}
	if now == nil {
		now = time.Now
	}
	return &Window{size: size, now: now, maxSamples: maxSamples}
}

// Reset forgets every sample: the window then describes only what comes
// after (the agent resets it when a new release goes live, so a gate never
// judges a release by its predecessor's requests).
func (w *Window) Reset() {
	w.mu.Lock()
	w.samples, w.head = nil, 0
	w.mu.Unlock()
}

// Observe records one request that took latency and failed with err (nil on
// success).
func (w *Window) Observe(latency time.Duration, err error) {
	s := sample{at: w.now(), latency: latency}
	if err != nil {
		s.err = err.Error()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, s)
	if len(w.samples)-w.head > w.maxSamples {
		w.head++
	}
	w.pruneLocked(s.at)
}

// pruneLocked drops samples older than the window and compacts the slice
// once half of it is dead.
func (w *Window) pruneLocked(now time.Time) {
	cutoff := now.Add(-w.size)
	for w.head < len(w.samples) && !w.samples[w.head].at.After(cutoff) {
		w.head++
	}
	if w.head > 0 && w.head >= len(w.samples)/2 {
		n := copy(w.samples, w.samples[w.head:])
		clear(w.samples[n:])
		w.samples = w.samples[:n]
		w.head = 0
	}
}

// Snapshot summarises the samples currently in the window.
func (w *Window) Snapshot() Stats {
	w.mu.Lock()
	w.pruneLocked(w.now())
	live := w.samples[w.head:]
	st := Stats{Window: w.size, Requests: uint64(len(live))}
	lat := make([]time.Duration, len(live))
	var sum time.Duration
	for i, s := range live {
		lat[i] = s.latency
		sum += s.latency
		if s.err != "" {
			st.Errors++
			st.LastError = s.err
		}
	}
	if n := len(live); n > 0 {
		st.LastSample = live[n-1].at
		st.Healthy = live[n-1].err == ""
	}
	w.mu.Unlock()

	if len(lat) > 0 {
		st.AvgLatency = sum / time.Duration(len(lat))
		slices.Sort(lat)
		st.P99Latency = lat[int(math.Ceil(0.99*float64(len(lat))))-1]
	}
	return st
}
