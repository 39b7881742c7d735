// Package releasebench measures the agent's release engine (packages
// artifact, unpack and releasedir) on this machine. It exposes functions that
// return result rows; the shared golive-bench driver calls them and prints
// the tables. Sizes are parameters so tests can run them small.
//
// Everything runs on loopback and in a temporary directory that is removed
// before the function returns.
package releasebench

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/unpack"
)

// Metric is one measured value.
type Metric struct {
	Name  string
	Value float64
	Unit  string
}

// Result is one benchmark's row: its name, parameters, measured values and
// notes (caveats, skipped parts).
type Result struct {
	Name    string
	Params  string
	Metrics []Metric
	Notes   []string
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit})
}

// String renders the result on a few lines, for logs and quick looks.
func (r Result) String() string {
	s := r.Name + " (" + r.Params + ")\n"
	for _, m := range r.Metrics {
		s += fmt.Sprintf("  %-28s %12.3f %s\n", m.Name, m.Value, m.Unit)
	}
	for _, n := range r.Notes {
		s += "  note: " + n + "\n"
	}
	return s
}

// FetchUnpack generates a tar.gz of about sizeMB MiB of semi-compressible
// content, serves it over HTTP on 127.0.0.1, and times
//
//	golive: artifact.Fetch + artifact.Verify (sha256) + unpack.Unpack + releasedir.Commit
//	tools:  curl -s URL | tee >(sha256sum >/dev/null) | tar xz -C dir
//
// It reports both durations and tools_seconds/golive_seconds (>= 1 means
// golive is at least as fast). golive fsyncs every file it writes and the
// pipeline does not, so it also reports the pipeline followed by sync(1).
func FetchUnpack(ctx context.Context, sizeMB int) (Result, error) {
	res := Result{Name: "fetch+verify+unpack", Params: fmt.Sprintf("size_mb=%d", sizeMB)}
	if sizeMB <= 0 {
		return res, errors.New("fetch+unpack bench: sizeMB must be positive")
	}
	tmp, err := os.MkdirTemp("", "golive-releasebench-*")
	if err != nil {
		return res, fmt.Errorf("fetch+unpack bench: %w", err)
	}
	defer os.RemoveAll(tmp)

	src := filepath.Join(tmp, "artifact.tar.gz")
	gen, err := generateArchive(src, int64(sizeMB)<<20)
	if err != nil {
		return res, fmt.Errorf("fetch+unpack bench: generate archive: %w", err)
	}
	res.add("archive_size", float64(gen.compressed)/(1<<20), "MiB")
	res.add("unpacked_size", float64(gen.raw)/(1<<20), "MiB")
	res.add("files", float64(gen.files), "files")

	url, stop, err := serve(src)
	if err != nil {
		return res, fmt.Errorf("fetch+unpack bench: %w", err)
	}
	defer stop()

	// golive
	start := time.Now()
	if err := goliveDeploy(ctx, url, tmp, gen.sha256); err != nil {
		return res, fmt.Errorf("fetch+unpack bench: golive: %w", err)
	}
	golive := time.Since(start)
	res.add("golive_seconds", golive.Seconds(), "s")

	// Flush the golive run's leftovers so they do not slow the pipeline.
	exec.CommandContext(ctx, "sync").Run()

	if _, err := exec.LookPath("curl"); err != nil {
		res.Notes = append(res.Notes, "curl not found: tools pipeline not run, no ratio")
		return res, nil
	}
	toolsDir := filepath.Join(tmp, "tools")
	if err := os.Mkdir(toolsDir, 0o755); err != nil {
		return res, fmt.Errorf("fetch+unpack bench: %w", err)
	}
	script := `set -o pipefail; curl -sf "$1" | tee >(sha256sum >/dev/null) | tar xz -C "$2"`
	start = time.Now()
	if out, err := exec.CommandContext(ctx, "bash", "-c", script, "bash", url, toolsDir).CombinedOutput(); err != nil {
		return res, fmt.Errorf("fetch+unpack bench: tools pipeline: %w: %s", err, out)
	}
	tools := time.Since(start)
	if err := exec.CommandContext(ctx, "sync").Run(); err != nil {
		res.Notes = append(res.Notes, "sync failed: "+err.Error())
	}
	toolsSync := time.Since(start)
	res.add("tools_seconds", tools.Seconds(), "s")
	res.add("tools_then_sync_seconds", toolsSync.Seconds(), "s")
	res.add("ratio_tools_over_golive", tools.Seconds()/golive.Seconds(), "x")
	res.add("ratio_tools_sync_over_golive", toolsSync.Seconds()/golive.Seconds(), "x")
	res.Notes = append(res.Notes, "golive fsyncs every file and directory; the tools pipeline does not (see tools_then_sync_seconds)")
	return res, nil
}

func goliveDeploy(ctx context.Context, url, tmp, wantSHA string) error {
	dl := filepath.Join(tmp, "download")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return err
	}
	a, err := artifact.Fetch(ctx, url, dl, artifact.Options{})
	if err != nil {
		return err
	}
	if err := artifact.Verify(ctx, a, artifact.Want{SHA256: wantSHA}); err != nil {
		return err
	}
	d, err := releasedir.Open(filepath.Join(tmp, "state"), "bench")
	if err != nil {
		return err
	}
	staging, err := d.StagingDir("r1")
	if err != nil {
		return err
	}
	if _, err := unpack.Unpack(ctx, a.Path, staging, unpack.Options{ExecutableName: "bench"}); err != nil {
		return err
	}
	return d.Commit("r1")
}

// serve serves one file on a loopback port until stop is called.
func serve(path string) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, path)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop = func() {
		srv.Close()
		<-done
	}
	return "http://" + ln.Addr().String() + "/" + filepath.Base(path), stop, nil
}

type generated struct {
	compressed, raw int64
	files           int
	sha256          string
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// generateArchive writes a tar.gz of roughly target compressed bytes: a tree
// of small and medium files plus a few large ones, each about half
// incompressible (random) and half text-like, so gzip reaches roughly 2:1.
func generateArchive(path string, target int64) (generated, error) {
	f, err := os.Create(path)
	if err != nil {
		return generated{}, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err != nil {
		return generated{}, err
	}
	tw := tar.NewWriter(zw)
	rng := rand.New(rand.NewChaCha8([32]byte{'g', 'o', 'l', 'i', 'v', 'e'}))
	words := []string{"deploy ", "release ", "agent ", "controller ", "health ", "rollout ", "etcd ", "golive ", "service ", "swap "}

	var g generated
	buf := make([]byte, 0, 1<<20)
	for i := 0; cw.n < target; i++ {
		size := 4<<10 + rng.IntN(256<<10) // 4 KiB - 260 KiB
		if i%50 == 0 {
			size = 1<<20 + rng.IntN(8<<20) // some 1-9 MiB "binaries"
		}
		name := fmt.Sprintf("app/lib/pkg%03d/file%05d.dat", i%200, i)
		if i%200 == 0 {
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("app/lib/pkg%03d/", i%200), Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				return g, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
			return g, err
		}
		for left := size; left > 0; {
			n := min(left, 64<<10)
			buf = buf[:0]
			for len(buf) < n/2 { // text-like half
				buf = append(buf, words[rng.IntN(len(words))]...)
			}
			buf = buf[:n/2]
			for len(buf)+8 <= n { // random half
				buf = binary.LittleEndian.AppendUint64(buf, rng.Uint64())
			}
			for len(buf) < n {
				buf = append(buf, byte(rng.Uint32()))
			}
			if _, err := tw.Write(buf[:n]); err != nil {
				return g, err
			}
			left -= n
		}
		g.files++
		g.raw += int64(size)
	}
	if err := tw.Close(); err != nil {
		return g, err
	}
	if err := zw.Close(); err != nil {
		return g, err
	}
	if err := f.Close(); err != nil {
		return g, err
	}
	g.compressed = cw.n
	g.sha256 = hex.EncodeToString(h.Sum(nil))
	return g, nil
}

// Swaps creates two releases, starts readers goroutines that read
// current/VERSION in a loop, swaps current between the releases n times, and
// counts reads that failed or saw something other than one of the two
// versions. failed_reads must be 0.
func Swaps(ctx context.Context, n, readers int) (Result, error) {
	res := Result{Name: "swap current under readers", Params: fmt.Sprintf("swaps=%d readers=%d", n, readers)}
	tmp, err := os.MkdirTemp("", "golive-releasebench-*")
	if err != nil {
		return res, fmt.Errorf("swap bench: %w", err)
	}
	defer os.RemoveAll(tmp)
	d, err := releasedir.Open(tmp, "bench")
	if err != nil {
		return res, fmt.Errorf("swap bench: %w", err)
	}
	for _, id := range []string{"blue", "green"} {
		p, err := d.StagingDir(id)
		if err != nil {
			return res, fmt.Errorf("swap bench: %w", err)
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return res, fmt.Errorf("swap bench: %w", err)
		}
		if err := os.WriteFile(filepath.Join(p, "VERSION"), []byte(id), 0o644); err != nil {
			return res, fmt.Errorf("swap bench: %w", err)
		}
		if err := d.Commit(id); err != nil {
			return res, fmt.Errorf("swap bench: %w", err)
		}
	}
	if err := d.Swap("blue"); err != nil {
		return res, fmt.Errorf("swap bench: %w", err)
	}

	var (
		stop          = make(chan struct{})
		wg            sync.WaitGroup
		reads, failed atomic.Int64
		version       = filepath.Join(d.CurrentPath(), "VERSION")
	)
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(version)
				reads.Add(1)
				if err != nil || (string(b) != "blue" && string(b) != "green") {
					failed.Add(1)
				}
			}
		})
	}
	start := time.Now()
	var swapErr error
	for i := 0; i < n && swapErr == nil; i++ {
		if err := ctx.Err(); err != nil {
			swapErr = err
			break
		}
		target := "green"
		if i%2 == 1 {
			target = "blue"
		}
		swapErr = d.Swap(target)
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if swapErr != nil {
		return res, fmt.Errorf("swap bench: %w", swapErr)
	}
	res.add("swaps", float64(n), "swaps")
	res.add("swap_seconds", elapsed.Seconds(), "s")
	res.add("swap_latency_mean", elapsed.Seconds()/float64(max(n, 1))*1e6, "us")
	res.add("reads", float64(reads.Load()), "reads")
	res.add("failed_reads", float64(failed.Load()), "reads")
	return res, nil
}
