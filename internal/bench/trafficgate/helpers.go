package trafficgate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/traffic"
)

var testLogFormat = regexp.MustCompile(`log_format golive '[^']*';`)

// launchNginxJSON starts nginx (routertest's configuration) in front of
// ports and switches its access log (dir/access.log) to the golive JSON
// format (traffic.LogFormat), waiting until nginx writes it.
func launchNginxJSON(ctx context.Context, bin, dir string, ports router.Ports) (*routertest.Nginx, error) {
	n, err := routertest.LaunchNginx(bin, dir, router.UpstreamName("app"), ports)
	if err != nil {
		return nil, err
	}
	conf, err := os.ReadFile(n.Conf)
	if err == nil && !testLogFormat.Match(conf) {
		err = fmt.Errorf("%s has no log_format golive line to replace", n.Conf)
	}
	if err == nil {
		err = os.WriteFile(n.Conf, testLogFormat.ReplaceAllLiteral(conf, []byte(traffic.LogFormat)), 0o644)
	}
	if err == nil {
		rc := n.ReloadCommand()
		if b, rerr := exec.CommandContext(ctx, rc[0], rc[1:]...).CombinedOutput(); rerr != nil {
			err = fmt.Errorf("nginx -s reload: %v\n%s", rerr, b)
		}
	}
	if err == nil {
		log := filepath.Join(dir, "access.log")
		err = waitFor(ctx, 30*time.Second, "nginx writing its JSON access log", func() bool {
			versionAt(n.URL("/"))
			b, _ := os.ReadFile(log)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			return strings.HasPrefix(lines[len(lines)-1], "{")
		})
	}
	if err != nil {
		_ = n.Stop()
		return nil, err
	}
	return n, nil
}

// versionAt is what url answers ("" on error or a status other than 200).
func versionAt(url string) string {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// killUnder SIGKILLs every process whose working directory lies under dir
// (the slots the agent started in their release directories: the agent
// leaves them running when it stops, as a restart of the agent needs).
func killUnder(dir string) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// measureFollow is what a traffic.Follower costs reading an access log
// written at rate lines/s for d (ten chunks a second, as nginx's buffered
// writes land; lines as in internal/traffic's BenchmarkFollowRate): this
// process's CPU while writing and following, less its CPU writing alone
// for as long.
func measureFollow(ctx context.Context, rate int, d time.Duration) (Follow, error) {
	dir, err := os.MkdirTemp("", "golive-follow-")
	if err != nil {
		return Follow{}, err
	}
	defer os.RemoveAll(dir)
	var chunk strings.Builder
	for i := range rate / 10 {
		fmt.Fprintf(&chunk, `{"msec":"1764540000.%03d","status":"200","upstream_addr":"127.0.0.1:8081","upstream_status":"200","upstream_response_time":"0.%03d","request_time":"0.%03d","host":"api.example.com","method":"GET","uri":"/v1/items/%d"}`+"\n",
			i%1000, i%300, i%300+1, i)
	}
	data := []byte(chunk.String())
	write := func(path string) (int, time.Duration, error) {
		out, err := os.Create(path)
		if err != nil {
			return 0, 0, err
		}
		defer out.Close()
		lines, start := 0, time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < d {
			select {
			case <-ctx.Done():
				return lines, time.Since(start), ctx.Err()
			case <-tick.C:
			}
			if _, err := out.Write(data); err != nil {
				return lines, time.Since(start), err
			}
			lines += rate / 10
		}
		return lines, time.Since(start), nil
	}
	// The writer alone.
	c0 := benchkit.SelfCPU()
	if _, _, err := write(filepath.Join(dir, "alone.log")); err != nil {
		return Follow{}, err
	}
	writer := benchkit.SelfCPU() - c0

	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return Follow{}, err
	}
	f, err := traffic.NewFollower(traffic.FollowerConfig{Path: path, Routes: map[int]*traffic.Window{8081: traffic.NewWindow(traffic.WindowOptions{})}, FromStart: true})
	if err != nil {
		return Follow{}, err
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c1 := benchkit.SelfCPU()
	go func() { defer close(done); f.Run(fctx) }()
	lines, wall, werr := write(path)
	err = waitFor(ctx, 30*time.Second, "the follower to read every line", func() bool { return f.Stats().Lines >= uint64(lines) })
	total := benchkit.SelfCPU() - c1
	cancel()
	<-done
	if werr != nil {
		return Follow{}, werr
	}
	if err != nil {
		return Follow{}, err
	}
	return Follow{Rate: rate, Lines: f.Stats().Lines, CPU: max(total-writer, 0), Wall: wall}, nil
}
