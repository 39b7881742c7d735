package benchkit

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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FreePorts returns n distinct free loopback ports. They are released
// before the processes bind them; on a quiet machine nothing takes them in
// between.
func FreePorts(n int) ([]int, error) {
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

// LoopbackAddr is "127.0.0.1:<port>".
func LoopbackAddr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// ProcSpec describes a process to Start.
type ProcSpec struct {
	// Name names the process in errors ("start <name>", "<name> exited").
	Name string
	Bin  string
	Args []string
	// Dir is its working directory; Env is added to this process's
	// environment.
	Dir string
	Env []string
	// LogPath receives its output, and so does Tee when set.
	LogPath string
	Tee     io.Writer
}

// Proc is one process a benchmark started.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	ctx     context.Context
	err     error
	done    chan struct{}
}

// Start starts a process in its own process group: a terminal's ^C reaches
// the benchmark, which then stops everything in order.
func Start(s ProcSpec) (*Proc, error) {
	lf, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.Bin, s.Args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), s.Env...)
	var out io.Writer = lf
	if s.Tee != nil {
		out = io.MultiWriter(lf, s.Tee)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	ctx, exited := context.WithCancel(context.Background())
	p := &Proc{name: s.Name, cmd: cmd, logPath: s.LogPath, ctx: ctx, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = fmt.Errorf("%s exited", s.Name)
		} else {
			err = fmt.Errorf("%s exited: %w", s.Name, err)
		}
		lf.Close()
		p.err = err
		exited()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Context ends once the process has exited and been reaped.
func (p *Proc) Context() context.Context { return p.ctx }

// Exited reports whether the process has exited and been reaped.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err waits for the process to exit and returns its exit status as an
// error ("<name> exited", with the cause when it failed).
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (a benchmark restarting it: SIGTERM or
// SIGKILL); Context and Err then say when it has exited.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop asks the process to stop (SIGTERM), kills it after grace and waits
// until it has exited.
func (p *Proc) Stop(grace time.Duration) { StopAll([]*Proc{p}, grace) }

// LogTail is the last n lines of the process's output ("" if unreadable).
func (p *Proc) LogTail(n int) string { return Tail(p.logPath, n) }

// CPU is the process's user+system CPU time so far.
func (p *Proc) CPU() (time.Duration, error) { return ProcCPU(p.PID()) }

// RSS is the process's resident set in bytes.
func (p *Proc) RSS() (int64, error) { return RSS(p.PID()) }

// StopAll sends SIGTERM to every process, waits up to grace for all of them
// together, then kills and reaps those still running.
func StopAll(ps []*Proc, grace time.Duration) {
	for _, p := range ps {
		if !p.Exited() {
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
			if !p.Exited() {
				_ = p.cmd.Process.Kill()
			}
		}
	}
	for _, p := range ps {
		<-p.done
	}
}

// Tail is the last n lines of a file ("" if unreadable).
func Tail(path string, n int) string {
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

// ControllerSpec describes the controller process StartController runs.
type ControllerSpec struct {
	// Bin is the controller binary; Dir its working directory, which also
	// holds its data directory ("data") and its log ("controller.log").
	Bin, Dir string
	// Args follow the standard `serve` flags; Env is added to this
	// process's environment; Log, when set, also receives its output.
	Args []string
	Env  []string
	Log  io.Writer
	// Ports are the listen, metrics, embedded etcd client and peer ports;
	// nil picks four free ones. A restart passes the first run's Ports
	// (Controller.Ports) and Dir: same addresses, same data.
	Ports []int
	// LogName is the log's file name in Dir (default controller.log).
	LogName string
	// Creds, when set, are the client credentials WaitReady (and the
	// benchmark's own clients) use: the controller then serves mutual TLS,
	// with Args carrying its --tls-* flags.
	Creds credentials.TransportCredentials
}

// Controller is a running controller, serving gRPC on GRPCAddr.
type Controller struct {
	*Proc
	GRPCAddr string
	// Ports are the ports it was started on (see ControllerSpec.Ports).
	Ports []int
	// Creds are the client credentials to reach it (insecure when the
	// spec named none).
	Creds credentials.TransportCredentials
}

// StartController starts `<bin> serve` on loopback ports with an embedded
// etcd.
func StartController(s ControllerSpec) (*Controller, error) {
	bin, err := filepath.Abs(s.Bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("controller binary: %w (run `make build`, or pass its path)", err)
	}
	ports := s.Ports
	if ports == nil {
		if ports, err = FreePorts(4); err != nil {
			return nil, err
		}
	}
	if len(ports) != 4 {
		return nil, fmt.Errorf("controller: %d ports, want 4", len(ports))
	}
	args := []string{"serve",
		"--listen", LoopbackAddr(ports[0]), "--metrics-addr", LoopbackAddr(ports[1]),
		"--data-dir", filepath.Join(s.Dir, "data"),
		"--embedded-etcd-client", LoopbackAddr(ports[2]), "--embedded-etcd-peer", LoopbackAddr(ports[3]),
	}
	// The web dashboard's default port is fixed: benchmarks run several
	// controllers, and none needs it.
	if servesFlag(bin, "--dashboard-addr") {
		args = append(args, "--dashboard-addr=")
	}
	args = append(args, s.Args...)
	logName := s.LogName
	if logName == "" {
		logName = "controller.log"
	}
	p, err := Start(ProcSpec{Name: "controller", Bin: bin, Args: args, Dir: s.Dir, Env: s.Env,
		LogPath: filepath.Join(s.Dir, logName), Tee: s.Log})
	if err != nil {
		return nil, err
	}
	creds := s.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return &Controller{Proc: p, GRPCAddr: LoopbackAddr(ports[0]), Ports: ports, Creds: creds}, nil
}

// servesFlag reports whether `bin serve --help` names flag (a controller
// built from an older commit may lack it).
func servesFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	return bytes.Contains(out, []byte(flag+" "))
}

// WaitReady waits until the controller serves (see WaitServing).
func (c *Controller) WaitReady(ctx context.Context, timeout time.Duration) error {
	return WaitServingCreds(ctx, c.GRPCAddr, timeout, c.Creds)
}

// Dial is a gRPC client of the controller with its credentials.
func (c *Controller) Dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+c.GRPCAddr, grpc.WithTransportCredentials(c.Creds))
}

// WaitServing waits until the gRPC health service at addr reports
// golive.v1.AgentService SERVING (the controller's does once its agent hub
// runs).
func WaitServing(ctx context.Context, addr string, timeout time.Duration) error {
	return WaitServingCreds(ctx, addr, timeout, insecure.NewCredentials())
}

// WaitServingCreds is WaitServing with the given client credentials.
func WaitServingCreds(ctx context.Context, addr string, timeout time.Duration, creds credentials.TransportCredentials) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
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

// ClockTick is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture golive ships for).
const ClockTick = 10 * time.Millisecond

// ProcCPU is a process's user+system CPU time, from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
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
	return time.Duration(ut+st) * ClockTick, nil
}

// RSS is a process's resident set in bytes, from /proc/<pid>/status.
func RSS(pid int) (int64, error) { return statusKB(pid, "VmRSS") }

// PeakRSS is the largest resident set a process has had (VmHWM), in bytes.
func PeakRSS(pid int) (int64, error) { return statusKB(pid, "VmHWM") }

// PeakRSS is the process's largest resident set so far, in bytes.
func (p *Proc) PeakRSS() (int64, error) { return PeakRSS(p.PID()) }

// statusKB reads a "<field>: <n> kB" line of /proc/<pid>/status, in bytes.
func statusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the %s of process %d: %w", field, pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
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
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// SelfCPU is this process's user+system CPU time.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
