package traffic

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sampleApp.dir != "" {
		os.RemoveAll(sampleApp.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: tWriter{t}, Level: hclog.Info})
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func logLine(port, status int, seconds float64) string {
	now := time.Now()
	return fmt.Sprintf(`{"msec":"%d.%03d","status":"%d","upstream_addr":"127.0.0.1:%d","upstream_status":"%d","upstream_response_time":"%.3f","request_time":"%.3f","uri":"/"}`+"\n",
		now.Unix(), min(now.Nanosecond()/1e6+1, 999), status, port, status, seconds, seconds)
}

// runFollower runs f until the test ends.
func runFollower(t *testing.T, f *Follower) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached within %v: %s", what, d, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitRequests(t *testing.T, w *Window, want uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d requests", want), func() (bool, string) {
		st := w.Snapshot()
		return st.Requests == want, fmt.Sprintf("%+v", st)
	})
}

// TestFollowRotation: lines written to a file renamed away (before the
// writer reopens) and to the new file are each counted once; a truncated
// file is read again from its start; the first file's existing lines are
// not counted.
func TestFollowRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	old, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	fmt.Fprint(old, logLine(8081, 200, 0.001), logLine(8081, 200, 0.001), `{"status":"200","upstr`) // history, and a partial line
	blue, green := NewWindow(WindowOptions{Size: time.Minute}), NewWindow(WindowOptions{Size: time.Minute})
	f, err := NewFollower(FollowerConfig{Path: path, Routes: map[int]*Window{8081: blue, 8082: green}, Poll: 10 * time.Millisecond, DrainQuiet: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runFollower(t, f)
	waitFor(t, 5*time.Second, "the file opened", func() (bool, string) {
		return f.Stats().Opens == 1, fmt.Sprint(f.Stats())
	})
	fmt.Fprint(old, `eam_addr":"127.0.0.1:8081"}`+"\n") // end of the partial line: skipped
	fmt.Fprint(old, logLine(8081, 200, 0.002), logLine(8082, 500, 0.004))
	waitRequests(t, blue, 1)
	waitRequests(t, green, 1)

	// Rotate by rename; the writer keeps writing to the old file for a
	// while, then reopens.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(old, logLine(8081, 200, 0.001))
	time.Sleep(50 * time.Millisecond)
	nf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	fmt.Fprint(old, logLine(8081, 200, 0.001)) // a worker not reopened yet
	fmt.Fprint(nf, logLine(8082, 200, 0.001), logLine(8082, 200, 0.001))
	waitRequests(t, blue, 3)
	waitRequests(t, green, 3)

	// Truncate in place (copytruncate) and write again.
	time.Sleep(50 * time.Millisecond)
	if err := nf.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := nf.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	fmt.Fprint(nf, logLine(8081, 502, 0.001))
	waitRequests(t, blue, 4)
	if st := blue.Snapshot(); st.Errors != 1 {
		t.Fatalf("blue errors %d, want 1", st.Errors)
	}
	st := f.Stats()
	if st.Bad != 0 || st.Reopens != 2 {
		t.Fatalf("stats %+v, want no bad line and 2 reopens", st)
	}
	// Nothing more arrives late (no line counted twice).
	time.Sleep(500 * time.Millisecond)
	if b, g := blue.Snapshot().Requests, green.Snapshot().Requests; b != 4 || g != 3 {
		t.Fatalf("blue %d green %d, want 4 and 3", b, g)
	}
}

// TestFollowMissingFile: a log that does not exist yet is read from its
// start once it appears.
func TestFollowMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w := NewWindow(WindowOptions{})
	f, err := NewFollower(FollowerConfig{Path: path, Routes: map[int]*Window{9: w}, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFollower(t, f)
	waitFor(t, 5*time.Second, "the error reported", func() (bool, string) {
		return strings.Contains(f.Stats().LastError, "no such file"), f.Stats().LastError
	})
	if err := os.WriteFile(path, []byte(logLine(9, 200, 0.1)+logLine(9, 200, 0.1)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRequests(t, w, 2)
	if e := f.Stats().LastError; e != "" {
		t.Fatalf("error still reported: %s", e)
	}
}

// BenchmarkFollow measures the CPU cost of one access log line: written to
// a file, read, parsed and counted by a running Follower.
func BenchmarkFollow(b *testing.B) {
	path := filepath.Join(b.TempDir(), "access.log")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	blue, green := NewWindow(WindowOptions{}), NewWindow(WindowOptions{})
	f, err := NewFollower(FollowerConfig{Path: path, Routes: map[int]*Window{8081: blue, 8082: green}, FromStart: true, Poll: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	// 1,000 distinct realistic lines, written in chunks as nginx does.
	var chunk strings.Builder
	for i := range 1000 {
		port, status := 8081+i%2, 200
		if i%20 == 0 {
			status = 500
		}
		fmt.Fprintf(&chunk, `{"msec":"1764540000.%03d","status":"%d","upstream_addr":"127.0.0.1:%d","upstream_status":"%d","upstream_response_time":"0.%03d","request_time":"0.%03d","host":"api.example.com","method":"GET","uri":"/v1/items/%d"}`+"\n",
			i, status, port, status, i%300, i%300+1, i)
	}
	data := []byte(chunk.String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	// Wall time is meaningless on a loaded machine: report the CPU time
	// this process used (reader and writer; the writer's share is one
	// write(2) per 1,000 lines).
	cpu0 := cpuTime()
	b.ResetTimer()
	lines := 0
	for lines < b.N {
		if _, err := out.Write(data); err != nil {
			b.Fatal(err)
		}
		lines += 1000
	}
	for f.Stats().Lines < uint64(lines) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	cancel()
	<-done
	perLine := float64(cpu.Nanoseconds()) / float64(lines)
	b.ReportMetric(perLine, "cpu-ns/line")
	b.ReportMetric(1e9/perLine, "lines/cpu-s")
	// Share of one core at 1,000 and 10,000 lines/s.
	b.ReportMetric(perLine*1000/1e9*100, "%core@1k/s")
	b.ReportMetric(perLine*10000/1e9*100, "%core@10k/s")
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkParseLine is the parse alone.
func BenchmarkParseLine(b *testing.B) {
	line := []byte(`{"msec":"1764540000.123","status":"200","upstream_addr":"127.0.0.1:8081, 127.0.0.1:8082","upstream_status":"502, 200","upstream_response_time":"0.000, 0.012","request_time":"0.013","host":"api.example.com","method":"GET","uri":"/v1/items/42"}`)
	var l Line
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseLine(line, &l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWindowObserve is the count alone.
func BenchmarkWindowObserve(b *testing.B) {
	w := NewWindow(WindowOptions{})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		w.Observe(now, 12*time.Millisecond, false)
	}
}

// BenchmarkFollowRate measures what following costs at a steady rate: each
// op is one second of access log at rate lines/s, written in 10 chunks,
// read by a Follower at its default poll interval. Run with -benchtime=3x.
func BenchmarkFollowRate(b *testing.B) {
	for _, rate := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "access.log")
			out, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			defer out.Close()
			w := NewWindow(WindowOptions{})
			f, err := NewFollower(FollowerConfig{Path: path, Routes: map[int]*Window{8081: w}, FromStart: true})
			if err != nil {
				b.Fatal(err)
			}
			var chunk strings.Builder
			for i := range rate / 10 {
				fmt.Fprintf(&chunk, `{"msec":"1764540000.%03d","status":"200","upstream_addr":"127.0.0.1:8081","upstream_status":"200","upstream_response_time":"0.%03d","request_time":"0.%03d","host":"api.example.com","method":"GET","uri":"/v1/items/%d"}`+"\n",
					i%1000, i%300, i%300+1, i)
			}
			data := []byte(chunk.String())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); f.Run(ctx) }()
			cpu0 := cpuTime()
			b.ResetTimer()
			lines := 0
			tick := time.NewTicker(100 * time.Millisecond)
			for range b.N * 10 {
				<-tick.C
				out.Write(data)
				lines += rate / 10
			}
			tick.Stop()
			for f.Stats().Lines < uint64(lines) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			cancel()
			<-done
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(lines), "cpu-ns/line")
			b.ReportMetric(float64(cpu)/float64(b.Elapsed())*100, "%core")
		})
	}
}
