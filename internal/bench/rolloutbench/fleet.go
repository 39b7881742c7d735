package rolloutbench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

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
