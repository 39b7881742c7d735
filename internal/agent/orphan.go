package agent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An agent killed between launching an instance and writing its pidfile
// leaves a process no pidfile names, holding the instance's port. Before
// starting an instance the reconcile looks for such an orphan: a process
// listening on the instance's port whose working directory is one of the
// service's releases, and stops its process group (SIGTERM, then SIGKILL).
// A process of anyone else on the port is left alone (the start then
// fails and says so).

// stopOrphan stops the orphan listening on port with its cwd under
// serviceDir (the service's releases); it reports the pid it stopped (0: none).
func stopOrphan(port int, serviceDir string, timeout time.Duration) (int, error) {
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return 0, nil
	}
	pid := socketOwner(inodes)
	if pid == 0 {
		return 0, nil
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil || !strings.HasPrefix(cwd, serviceDir+string(filepath.Separator)) {
		return 0, nil
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid <= 1 {
		return 0, nil
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	if !portFreed(port, timeout) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		portFreed(port, 5*time.Second)
	}
	return pid, nil
}

// portFreed waits until nothing listens on port, up to timeout.
func portFreed(port int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for len(listeningInodes(port)) > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// listeningInodes are the socket inodes listening on port (IPv4 and IPv6).
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ... inode(9)
			if len(fields) < 10 || fields[3] != "0A" || !strings.HasSuffix(fields[1], want) {
				continue
			}
			out[fields[9]] = true
		}
		fh.Close()
	}
	return out
}

// socketOwner is a pid holding one of the socket inodes (0: none seen).
func socketOwner(inodes map[string]bool) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				return pid
			}
		}
	}
	return 0
}
