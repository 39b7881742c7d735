// Package benchkit owns the plumbing the golive benchmarks share: finding
// the module root and building binaries and sample releases from it, free
// loopback ports, starting, watching and stopping the processes under test
// (the controller in particular), reading their CPU time and resident set
// from /proc, and the small formatting helpers of the result tables. The
// measurements themselves stay in the benchmark packages.
package benchkit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ModuleRoot is the directory of the golive module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the golive module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// BuildBinary runs `go build flags... -o out pkg` in the module root root,
// with env added to this process's environment.
func BuildBinary(ctx context.Context, root, out, pkg string, env []string, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// SampleReleases builds cmd/sampleapp once per version into dir (in
// parallel, CGO_ENABLED=0, -trimpath, -ldflags "<ldflags> -X
// main.version=<v>") and returns each release as a tarball (see Tarball),
// keyed by version.
func SampleReleases(ctx context.Context, dir, ldflags string, versions ...string) (map[string][]byte, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	tarballs := make(map[string][]byte, len(versions))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, v := range versions {
		wg.Go(func() {
			bin := filepath.Join(dir, "sampleapp-"+v)
			err := BuildBinary(ctx, root, bin, "./cmd/sampleapp", []string{"CGO_ENABLED=0"},
				"-trimpath", "-ldflags", strings.TrimSpace(ldflags+" -X main.version="+v))
			var tgz []byte
			if err == nil {
				tgz, err = Tarball(bin, v)
			} else {
				err = fmt.Errorf("sampleapp %s: %w", v, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			tarballs[v] = tgz
		})
	}
	wg.Wait()
	return tarballs, errors.Join(errs...)
}

// Tarball packs bin as bin/sampleapp with a VERSION file holding version,
// gzipped.
func Tarball(bin, version string) ([]byte, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{
		{"bin/sampleapp", 0o755, exe},
		{"VERSION", 0o644, []byte(version + "\n")},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
