package fanout

import (
	"bufio"
	"bytes"
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
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// controller is the controller process under test.
type controller struct {
	cmd      *exec.Cmd
	logPath  string
	logFile  *os.File
	grpcAddr string
	// ctx ends when the process has exited; err is its exit status then.
	ctx  context.Context
	err  error
	done chan struct{}
}

// freePorts returns n distinct free loopback ports. They are released
// before the controller binds them; on a quiet machine nothing takes them
// in between.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
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

func startController(ctx context.Context, opts Options, dir string) (*controller, error) {
	bin, err := filepath.Abs(opts.ControllerBin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("controller binary: %w (run `make build`, or pass its path)", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	args := append([]string{"serve",
		"--listen", addr(ports[0]), "--metrics-addr", addr(ports[1]),
		"--data-dir", filepath.Join(dir, "data"),
		"--embedded-etcd-client", addr(ports[2]), "--embedded-etcd-peer", addr(ports[3]),
	}, opts.ControllerArgs...)
	logPath := filepath.Join(dir, "controller.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), opts.ControllerEnv...)
	var out io.Writer = lf
	if opts.ControllerLog != nil {
		out = io.MultiWriter(lf, opts.ControllerLog)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a terminal's ^C reaches the bench, which
	// then stops the controller in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	pctx, exited := context.WithCancel(context.Background())
	c := &controller{cmd: cmd, logPath: logPath, logFile: lf, grpcAddr: addr(ports[0]), ctx: pctx, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = errors.New("controller exited")
		} else {
			err = fmt.Errorf("controller exited: %w", err)
		}
		c.err = err
		exited()
		close(c.done)
	}()
	return c, nil
}

func (c *controller) pid() int { return c.cmd.Process.Pid }

// exitErr is the process's exit status; call it only after ctx ended.
func (c *controller) exitErr() error {
	<-c.done
	return c.err
}

// waitReady waits until the controller's gRPC health service reports
// golive.v1.AgentService SERVING (it does once the agent hub runs).
func (c *controller) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	// WaitForReady: the call waits for the listener rather than failing.
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

// stop asks the controller to stop (SIGTERM), kills it after a grace
// period and waits until it has exited.
func (c *controller) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.done
	}
	c.logFile.Close()
}

// logTail is the last lines of the controller's output.
func (c *controller) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// rss is a process's resident set in bytes, from /proc/<pid>/status.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the controller's RSS: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				break
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture golive ships for).
const clockTick = 10 * time.Millisecond

// procCPU is a process's user+system CPU time, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
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

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseNoFile raises this process's open-file limit to at least need (up
// to the hard limit): every agent holds one socket.
func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("open-file limit: %d agents need %d descriptors but the hard limit is %d: raise it (ulimit -Hn, or LimitNOFILE=)", need-256, need, lim.Max)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return nil
}
