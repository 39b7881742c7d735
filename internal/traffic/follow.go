package traffic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of a Follower.
const (
	DefaultPoll = 200 * time.Millisecond
	// DefaultDrainQuiet is how long a rotated-away file must stop growing
	// before the Follower closes it: nginx writes to it until its workers
	// reopen their logs (nginx -s reopen, USR1).
	DefaultDrainQuiet = 5 * time.Second
	maxLine           = 64 << 10
)

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	// Path is the access log, written in LogFormat.
	Path string
	// Routes maps an upstream's loopback port to the window of the slot
	// listening there. Attempts to other ports are not counted.
	Routes map[int]*Window
	// Poll is how often the file is read and its path checked (default
	// DefaultPoll); DrainQuiet see DefaultDrainQuiet.
	Poll       time.Duration
	DrainQuiet time.Duration
	// FromStart reads the file's existing lines too; by default the first
	// file is read from its end (what it holds predates the agent), a file
	// that appears later (rotation) from its start.
	FromStart bool
	Now       func() time.Time
	Logger    hclog.Logger
}

// FollowerStats counts what a Follower read.
type FollowerStats struct {
	Lines    uint64 // complete lines read
	Bad      uint64 // lines that are not in LogFormat
	Counted  uint64 // attempts counted into a window
	Unrouted uint64 // attempts to an address with no route
	Opens    uint64 // files opened (the first, then after each rotation)
	Reopens  uint64 // rotations and truncations seen
	// Polled is when the file was last read (zero before the first read).
	Polled    time.Time
	LastError string
}

// Follower reads an nginx access log as `tail -F` does and counts each
// upstream attempt into its slot's window. A rotation by rename is
// followed by reading the old file to its end (from the descriptor held)
// while the new one is read from its start; a truncation (copytruncate) is
// read from offset 0 again.
type Follower struct {
	cfg  FollowerConfig
	log  hclog.Logger
	buf  []byte
	line Line

	lines, bad, counted, unrouted, opens, reopens atomic.Uint64
	polled                                        atomic.Int64 // unix ns
	mu                                            sync.Mutex
	lastErr                                       string
}

// NewFollower checks cfg. Run does the work.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	if cfg.Path == "" {
		return nil, errors.New("traffic: access log path is required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.DrainQuiet <= 0 {
		cfg.DrainQuiet = DefaultDrainQuiet
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Follower{cfg: cfg, log: cfg.Logger.Named("traffic").With("access_log", cfg.Path), buf: make([]byte, 64<<10)}, nil
}

// Stats reports what the follower read so far.
func (f *Follower) Stats() FollowerStats {
	f.mu.Lock()
	e := f.lastErr
	f.mu.Unlock()
	var polled time.Time
	if ns := f.polled.Load(); ns != 0 {
		polled = time.Unix(0, ns)
	}
	return FollowerStats{Polled: polled, Lines: f.lines.Load(), Bad: f.bad.Load(), Counted: f.counted.Load(),
		Unrouted: f.unrouted.Load(), Opens: f.opens.Load(), Reopens: f.reopens.Load(), LastError: e}
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := ""
	if err != nil {
		s = err.Error()
	}
	if s != f.lastErr && s != "" {
		f.log.Warn("access log", "error", err)
	}
	f.lastErr = s
}

// openFile is a file being read: its identity and the incomplete line at
// its end.
type openFile struct {
	f       *os.File
	dev     uint64
	ino     uint64
	off     int64
	partial []byte
	grewAt  time.Time
}

func (o *openFile) close() { o.f.Close() }

func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}

// Run follows the file until ctx ends. It returns nil then; problems
// (a missing file, a read error) are retried every poll and reported in
// Stats.LastError.
func (f *Follower) Run(ctx context.Context) error {
	var cur *openFile
	var draining []*openFile
	defer func() {
		if cur != nil {
			cur.close()
		}
		for _, d := range draining {
			d.close()
		}
	}()
	first := true
	t := time.NewTicker(f.cfg.Poll)
	defer t.Stop()
	for {
		cur, draining = f.poll(cur, draining, &first)
		if cur != nil {
			f.polled.Store(f.cfg.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			// Whatever is already written is counted.
			cur, draining = f.poll(cur, draining, &first)
			return nil
		case <-t.C:
		}
	}
}

// poll reads every open file to its end, then checks the path for a
// rotation or truncation.
func (f *Follower) poll(cur *openFile, draining []*openFile, first *bool) (*openFile, []*openFile) {
	now := f.cfg.Now()
	keep := draining[:0]
	for _, d := range draining {
		grew, err := f.readAll(d)
		if grew {
			d.grewAt = now
		}
		if err != nil || now.Sub(d.grewAt) >= f.cfg.DrainQuiet {
			d.close()
			continue
		}
		keep = append(keep, d)
	}
	draining = keep
	if cur != nil {
		if _, err := f.readAll(cur); err != nil {
			f.setErr(err)
		}
	}
	fi, err := os.Stat(f.cfg.Path)
	if err != nil {
		if cur == nil {
			// It did not exist at the start: once it appears, it is new.
			*first = false
			f.setErr(err)
		}
		// Renamed away and not created again yet: keep reading the open
		// file; nginx still writes to it.
		return cur, draining
	}
	dev, ino := fileID(fi)
	switch {
	case cur == nil:
	case cur.dev == dev && cur.ino == ino:
		if fi.Size() < cur.off {
			// Truncated in place: what was written after the last read
			// and before the truncation is lost.
			f.log.Info("access log truncated: reading it from its start")
			cur.off, cur.partial = 0, cur.partial[:0]
			f.reopens.Add(1)
		}
		return cur, draining
	default:
		// Rotated: drain the old file, read the new one from its start.
		cur.grewAt = now
		draining = append(draining, cur)
		cur = nil
		f.reopens.Add(1)
		f.log.Info("access log rotated: reading the new file from its start")
	}
	nf, err := os.Open(f.cfg.Path)
	if err != nil {
		f.setErr(err)
		return cur, draining
	}
	nfi, err := nf.Stat()
	if err != nil {
		nf.Close()
		f.setErr(err)
		return cur, draining
	}
	o := &openFile{f: nf, grewAt: now}
	o.dev, o.ino = fileID(nfi)
	if *first && !f.cfg.FromStart && nfi.Size() > 0 {
		o.off = nfi.Size()
		var last [1]byte
		if _, err := nf.ReadAt(last[:], o.off-1); err != nil || last[0] != '\n' {
			o.partial = append(o.partial, 0) // mid-line: skip up to the next newline
		}
	}
	*first = false
	f.opens.Add(1)
	f.setErr(nil)
	if _, err := f.readAll(o); err != nil {
		f.setErr(err)
	}
	return o, draining
}

// readAll reads o from its offset to the end, counting complete lines.
func (f *Follower) readAll(o *openFile) (grew bool, err error) {
	for {
		n, err := o.f.ReadAt(f.buf, o.off)
		if n > 0 {
			grew = true
			o.off += int64(n)
			f.consume(o, f.buf[:n])
		}
		if err == io.EOF || n == 0 && err == nil {
			return grew, nil
		}
		if err != nil {
			return grew, fmt.Errorf("read %s: %w", f.cfg.Path, err)
		}
	}
}

// consume splits data into lines, joining the partial line left by the
// previous read.
func (f *Follower) consume(o *openFile, data []byte) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(o.partial)+len(data) <= maxLine {
				o.partial = append(o.partial, data...)
			} else {
				o.partial = append(o.partial[:0], 0) // too long: skip it
			}
			return
		}
		line := data[:i]
		data = data[i+1:]
		if len(o.partial) > 0 {
			skip := o.partial[0] == 0
			o.partial = append(o.partial, line...)
			line = o.partial
			o.partial = o.partial[:0]
			if skip {
				continue
			}
		}
		f.countLine(line)
	}
}

func (f *Follower) countLine(b []byte) {
	f.lines.Add(1)
	if err := ParseLine(b, &f.line); err != nil {
		f.bad.Add(1)
		return
	}
	end := f.line.End
	if end.IsZero() {
		end = f.cfg.Now()
	}
	for _, a := range f.line.Attempts {
		w := f.cfg.Routes[a.Port]
		if a.Port == 0 || w == nil {
			f.unrouted.Add(1)
			continue
		}
		w.Observe(end, a.Latency, a.Failed)
		f.counted.Add(1)
	}
}
