package benchkit

import (
	"fmt"
	"syscall"
)

// RaiseNoFile raises this process's open-file limit to at least need (up
// to the hard limit): every simulated agent holds one socket.
func RaiseNoFile(need uint64) error {
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
