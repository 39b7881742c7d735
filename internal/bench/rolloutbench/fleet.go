package rolloutbench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// proc is one process the benchmark started; done closes once it has
// exited and been reaped.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

// startProc starts bin in dir with its output in logPath, in its own
// process group (a terminal's ^C reaches the benchmark, which then stops
// everything in order).
func startProc(name, dir, logPath string, env []string, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopProcs sends SIGTERM to every process, waits up to grace for all of
// them together, then kills and reaps those still running.
func stopProcs(ps []*proc, grace time.Duration) {
	for _, p := range ps {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	late := false
	for _, p := range ps {
		select {
		case <-p.done:
			continue
		case <-deadline.C:
			late = true
		}
		break
	}
	if late {
		for _, p := range ps {
			if !p.exited() {
				_ = p.cmd.Process.Kill()
			}
		}
	}
	for _, p := range ps {
		<-p.done
	}
}

// killUnder SIGKILLs every process whose working directory lies under dir
// (the service processes the agents started in their release directories)
// and returns how many it found. It looks at /proc once; call it after the
// agents have exited.
func killUnder(dir string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// procCPU is a process's user+system CPU time, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: f[0] is field 3 (state), utime and stime are 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture golive ships for).
const clockTick = 10 * time.Millisecond

// freePorts returns n distinct free loopback ports, released before the
// processes bind them; on a quiet machine nothing takes them in between.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitServing waits until the controller's gRPC health service reports
// golive.v1.AgentService SERVING.
func waitServing(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "golive.v1.AgentService"}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("controller did not become ready: %w", err)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			return fmt.Errorf("controller did not become ready within %s: %w", timeout, err)
		}
		if m.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
	}
}

// agentConfig is the HCL of one sample host: service "app" on its own port,
// health checked at /healthz every 200ms, 2 successes within 5s. command is
// exec.command.
func agentConfig(host, stateDir string, port int, command []string) string {
	q := make([]string, len(command))
	for i, c := range command {
		q[i] = strconv.Quote(c)
	}
	return fmt.Sprintf(`host_id   = %q
state_dir = %q
labels    = { role = "web" }
service "app" {
  port          = %d
  keep_releases = 3
  exec {
    command      = [%s]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "5s"
  }
}
`, host, stateDir, port, strings.Join(q, ", "))
}

// failingLauncher is the failing host's exec.command[0]: a host-local
// launcher that starts release FailRelease with --fail-health and every
// other release as the other hosts do. It execs, so the agent supervises
// and signals sampleapp itself. The agent runs it in the release directory.
const failingLauncher = `#!/bin/sh
# golive rollout benchmark: on this host only, release %[1]s fails its health check.
if [ "$(cat VERSION 2>/dev/null)" = %[1]q ]; then
	exec bin/sampleapp --port "$1" --fail-health
fi
exec bin/sampleapp --port "$1"
`

// moduleRoot is the directory of the golive module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("rolloutbench: not inside the golive module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// buildReleases builds cmd/sampleapp once per version into dir and returns
// each release as a tarball (bin/sampleapp, VERSION), keyed by version.
func buildReleases(ctx context.Context, dir string, versions ...string) (map[string][]byte, error) {
	root, err := moduleRoot(ctx)
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
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+v, "-o", bin, "./cmd/sampleapp")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			var tgz []byte
			if err == nil {
				tgz, err = tarball(bin, v)
			} else {
				err = fmt.Errorf("go build ./cmd/sampleapp %s: %w\n%s", v, err, out)
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

// tarball packs bin as bin/sampleapp with a VERSION file.
func tarball(bin, version string) ([]byte, error) {
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

// tail is the last n lines of a file ("" if unreadable).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
