package traffic

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultInterval is how often the HAProxy reader reads the counters.
const DefaultInterval = time.Second

// Server is one HAProxy server whose requests go into Window.
type Server struct {
	Backend, Server string
	Window          *Window
	// Optional: a server the backend may lack (a scaled service's dynamic
	// instance server, added and deleted over the runtime API); its
	// absence is not a read error.
	Optional bool
}

// HAProxyConfig configures an HAProxyReader.
type HAProxyConfig struct {
	// Socket is the runtime API socket (the router's admin socket).
	Socket  string
	Servers []Server
	// Interval between reads (default DefaultInterval); Timeout bounds
	// one read (default 2s).
	Interval time.Duration
	Timeout  time.Duration
	Now      func() time.Time
	Logger   hclog.Logger
}

// counters are a server's cumulative "show stat" columns.
type counters struct {
	sid                        string
	stot, hrsp5xx, econ, eresp uint64
	hrspAll                    uint64 // hrsp_1xx..hrsp_5xx + hrsp_other
	rtime                      time.Duration
	have                       bool
}

// HAProxyReader turns HAProxy's cumulative per-server counters into
// per-interval counts in each server's window. A counter reset (another
// HAProxy process, another server id, any counter lower than before) makes
// the interval count the new values as they are.
type HAProxyReader struct {
	cfg  HAProxyConfig
	log  hclog.Logger
	mu   sync.Mutex
	pid  string
	prev map[string]counters // by backend/server
	last time.Time
	err  error
}

// NewHAProxyReader checks cfg. Run (or Poll) does the work.
func NewHAProxyReader(cfg HAProxyConfig) (*HAProxyReader, error) {
	if cfg.Socket == "" {
		return nil, errors.New("traffic: haproxy admin socket is required")
	}
	for _, s := range cfg.Servers {
		if s.Backend == "" || s.Server == "" || s.Window == nil {
			return nil, fmt.Errorf("traffic: haproxy server %q/%q: backend, server and window are required", s.Backend, s.Server)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &HAProxyReader{cfg: cfg, log: cfg.Logger.Named("traffic").With("admin_socket", cfg.Socket), prev: map[string]counters{}}, nil
}

// Run reads the counters every interval until ctx ends, then returns nil.
// A failed read is retried at the next interval (see LastRead).
func (r *HAProxyReader) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.Poll(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("read haproxy counters", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// LastRead is when the counters were last read and the error of the last
// attempt (nil: it succeeded).
func (r *HAProxyReader) LastRead() (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.err
}

// Poll reads the counters once and adds their increase since the previous
// read to the windows. The first read of a server only sets its baseline.
func (r *HAProxyReader) Poll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out, err := r.command(ctx, "show info;show stat -1 4 -1")
	now := r.cfg.Now()
	if err == nil {
		err = r.apply(out, now)
	}
	r.mu.Lock()
	r.err = err
	if err == nil {
		r.last = now
	}
	r.mu.Unlock()
	return err
}

func (r *HAProxyReader) apply(out string, now time.Time) error {
	info, stat, ok := strings.Cut(out, "\n# ")
	if !ok {
		return fmt.Errorf("show stat: unreadable output %q", firstLine(out))
	}
	pid := ""
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pid: "); ok {
			pid = strings.TrimSpace(v)
		}
	}
	cur, err := parseStat(stat)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if pid != r.pid {
		if r.pid != "" {
			r.log.Info("haproxy process changed: counters start again", "pid", pid)
		}
		// Another process: counters started from zero at its start, so
		// what it counted since then is new.
		restarted := r.pid != ""
		r.pid = pid
		for k, c := range r.prev {
			if restarted {
				c = counters{sid: "\x00restarted", have: true}
			}
			r.prev[k] = c
		}
	}
	var missing []string
	for _, s := range r.cfg.Servers {
		k := s.Backend + "/" + s.Server
		c, ok := cur[k]
		if !ok {
			if !s.Optional {
				missing = append(missing, k)
			}
			if r.prev[k].have {
				// Deleted: when it is added again, all it counts is new.
				r.prev[k] = counters{sid: "\x00restarted", have: true}
			}
			continue
		}
		p := r.prev[k]
		r.prev[k] = c
		if !p.have {
			continue // baseline
		}
		reset := p.sid != c.sid || c.stot < p.stot || c.hrsp5xx < p.hrsp5xx || c.econ < p.econ || c.eresp < p.eresp || c.hrspAll < p.hrspAll
		if reset {
			if p.sid != "\x00restarted" {
				r.log.Info("haproxy server counters reset", "server", k)
			}
			p = counters{}
		}
		// Requests are counted when they end, so that a slow request's
		// 5xx lands with the request itself: a response (hrsp_*), or a
		// failure to connect (econ) or to get a response (eresp). stot
		// grows when a request starts, so it would run ahead of them.
		fails := (c.econ - p.econ) + (c.eresp - p.eresp)
		n := (c.hrspAll - p.hrspAll) + fails
		errs := (c.hrsp5xx - p.hrsp5xx) + fails
		mean := time.Duration(-1)
		if c.hrspAll > p.hrspAll {
			mean = c.rtime
		}
		s.Window.Add(now, n, errs, mean)
	}
	if len(missing) > 0 {
		return fmt.Errorf("show stat: no server %s (the backend must have them)", strings.Join(missing, ", "))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// parseStat reads "show stat" CSV (its header without the "# ").
func parseStat(s string) (map[string]counters, error) {
	cr := csv.NewReader(strings.NewReader(s))
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("show stat: unreadable output: %v", err)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	need := []string{"pxname", "svname", "sid", "stot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "econ", "eresp", "rtime"}
	for _, k := range need {
		if _, ok := col[k]; !ok {
			return nil, fmt.Errorf("show stat: no %s column (is the backend in mode http?)", k)
		}
	}
	out := map[string]counters{}
	num := func(rec []string, k string) uint64 {
		v, _ := strconv.ParseUint(rec[col[k]], 10, 64)
		return v
	}
	for _, rec := range recs[1:] {
		if len(rec) < len(recs[0]) {
			continue
		}
		c := counters{have: true, sid: rec[col["sid"]], stot: num(rec, "stot"), hrsp5xx: num(rec, "hrsp_5xx"),
			econ: num(rec, "econ"), eresp: num(rec, "eresp"), rtime: time.Duration(num(rec, "rtime")) * time.Millisecond}
		for _, k := range []string{"hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"} {
			c.hrspAll += num(rec, k)
		}
		out[rec[col["pxname"]]+"/"+rec[col["svname"]]] = c
	}
	return out, nil
}

// command runs runtime API commands (";"-separated) and returns the output.
func (r *HAProxyReader) command(ctx context.Context, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", r.cfg.Socket)
	if err != nil {
		return "", fmt.Errorf("admin socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("admin socket %s: %w", r.cfg.Socket, err)
	}
	out, err := io.ReadAll(io.LimitReader(c, 4<<20))
	if err != nil {
		return "", fmt.Errorf("admin socket %s: %w", r.cfg.Socket, err)
	}
	return string(out), nil
}
