package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// ProberConfig configures a Prober. Zero values take the documented defaults.
type ProberConfig struct {
	// Service labels metrics and logs.
	Service string
	// Check is probed every Interval.
	Check Check
	// URL, when set, is called before each probe for the URL to GET in
	// place of Check.URL ("" keeps Check.URL): the instance that serves a
	// blue-green service moves between ports on every switch.
	URL func() string
	// Interval between probes (default 1s).
	Interval time.Duration
	// Window is the sliding window size (default 60s).
	Window time.Duration
	// MaxSamples bounds the window's memory (default 65536).
	MaxSamples int
	// Metrics, if set, receives probe counts, durations and the window's
	// error ratio.
	Metrics *Metrics
	// Logger is the parent logger (default: hclog.NewNullLogger()).
	Logger hclog.Logger
	// Now is the window's clock (default time.Now); tests set it.
	Now func() time.Time
}

// Prober probes one service continuously into a sliding Window. Start and
// Stop may be called repeatedly; Observe and Snapshot work whether or not it
// is probing.
type Prober struct {
	cfg    ProberConfig
	log    hclog.Logger
	window *Window

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

// NewProber validates cfg and returns a stopped Prober.
func NewProber(cfg ProberConfig) (*Prober, error) {
	if cfg.Service == "" {
		return nil, errors.New("prober config: service is required")
	}
	if err := cfg.Check.Validate(); err != nil {
		return nil, fmt.Errorf("prober config: %w", err)
	}
	if cfg.Interval < 0 || cfg.Window < 0 {
		return nil, errors.New("prober config: interval and window must not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Prober{
		cfg:    cfg,
		log:    cfg.Logger.Named("health").With("service", cfg.Service),
		window: NewWindow(cfg.Window, cfg.MaxSamples, cfg.Now),
	}, nil
}

// Start begins probing (immediately, then every Interval) on a goroutine
// owned by p. Starting a started Prober does nothing.
func (p *Prober) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go p.loop(ctx, p.done)
}

// Stop stops probing, aborting an in-flight probe, and waits for the
// goroutine to exit. Stopping a stopped Prober does nothing.
func (p *Prober) Stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel, p.done = nil, nil
	p.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	<-done
}

// Observe records an externally observed request (e.g. from a proxy) in the
// window. It does not count as a probe in the metrics.
func (p *Prober) Observe(latency time.Duration, err error) {
	p.window.Observe(latency, err)
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.window(p.cfg.Service, p.window.Snapshot())
	}
}

// Snapshot summarises the window now.
func (p *Prober) Snapshot() Stats { return p.window.Snapshot() }

// Reset empties the sliding window (see Window.Reset).
func (p *Prober) Reset() { p.window.Reset() }

func (p *Prober) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	wasHealthy := true
	for {
		check := p.cfg.Check
		if p.cfg.URL != nil {
			if u := p.cfg.URL(); u != "" {
				check.URL = u
			}
		}
		latency, err := check.Probe(ctx)
		if ctx.Err() != nil {
			return // stopped mid-probe: not a service failure
		}
		p.window.Observe(latency, err)
		if m := p.cfg.Metrics; m != nil {
			m.probe(p.cfg.Service, latency.Seconds(), err)
			m.window(p.cfg.Service, p.window.Snapshot())
		}
		switch {
		case err != nil && wasHealthy:
			p.log.Warn("health probe failing", "error", err)
		case err == nil && !wasHealthy:
			p.log.Info("health probe recovered")
		}
		wasHealthy = err == nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ToProto converts s to the wire message sent to the controller.
func (s Stats) ToProto() *golivev1.HealthWindow {
	w := &golivev1.HealthWindow{
		Requests:      s.Requests,
		Errors:        s.Errors,
		AvgLatencyMs:  float64(s.AvgLatency) / float64(time.Millisecond),
		P99LatencyMs:  float64(s.P99Latency) / float64(time.Millisecond),
		Healthy:       s.Healthy,
		LastError:     s.LastError,
		WindowSeconds: s.Window.Seconds(),
	}
	if !s.LastSample.IsZero() {
		w.LastProbe = timestamppb.New(s.LastSample)
	}
	return w
}
