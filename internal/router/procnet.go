package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// conns counts the TCP connections, established or being opened, from
// processes named comm to a remote port, read from /proc (the agent's
// network namespace). Connections owned by other processes (a health
// checker, the agent) are not counted.
func conns(comm string, port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := socketInodes(f, port, inodes); err != nil {
			return 0, err
		}
	}
	if len(inodes) == 0 {
		return 0, nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	n, seen, denied := 0, 0, 0
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		name, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(name)) != comm {
			continue
		}
		seen++
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				denied++
			}
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				n++
			}
		}
	}
	if n == 0 && denied > 0 {
		return 0, fmt.Errorf("cannot read the open files of %d of %d %s processes (the agent needs to run as root or as their user)", denied, seen, comm)
	}
	return n, nil
}

// socketInodes adds the inodes of the sockets in a /proc/net/tcp{,6} table
// that are established (01) or opening (02) to remote port.
func socketInodes(file string, port int, into map[string]bool) error {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no IPv6
	}
	if err != nil {
		return err
	}
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		if st := f[3]; st != "01" && st != "02" {
			continue
		}
		if strings.HasSuffix(f[2], want) {
			into[f[9]] = true
		}
	}
	return sc.Err()
}

// nginxWorker is an nginx worker process seen in /proc.
type nginxWorker struct {
	ppid    int  // its master
	exiting bool // it got the master's QUIT: it takes no new requests
}

// listNginxWorkers is nginxWorkers; tests replace it to see the agent in
// another PID namespace than nginx.
var listNginxWorkers = nginxWorkers

// nginxWorkers lists the nginx worker processes visible in /proc by pid.
// Processes that vanish while being read are skipped.
func nginxWorkers() map[int]nginxWorker {
	ws := map[int]nginxWorker{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ws
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", p.Name())
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "nginx" {
			continue
		}
		title, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !bytes.HasPrefix(title, []byte("nginx: worker process")) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if i < 0 || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ws[pid] = nginxWorker{ppid: ppid, exiting: bytes.Contains(title, []byte("shutting down"))}
	}
	return ws
}

// oldWorkersTakingRequests lists the workers of before that still take new
// requests although their master has started new workers since. ok is false
// when no master has started new workers yet.
func oldWorkersTakingRequests(before, now map[int]nginxWorker) (pending []int, ok bool) {
	masters := map[int]bool{}
	for pid, w := range now {
		if _, old := before[pid]; !old && !w.exiting {
			masters[w.ppid] = true
		}
	}
	if len(masters) == 0 {
		return nil, false
	}
	for pid, w := range before {
		if !masters[w.ppid] {
			continue
		}
		if cur, alive := now[pid]; alive && !cur.exiting {
			pending = append(pending, pid)
		}
	}
	return pending, true
}
