//go:build faultpoints

package deploystep

import (
	"os"
	"syscall"
)

// faultpoint kills the process with SIGKILL when GOLIVE_FAULTPOINT is name:
// no deferred function, no cleanup, as in a power cut of the agent.
func faultpoint(name string) {
	if os.Getenv(FaultPointEnv) == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is delivered asynchronously
	}
}
