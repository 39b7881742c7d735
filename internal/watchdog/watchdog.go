// Package watchdog keeps systemd's watchdog fed while the daemon works:
// with WatchdogSec= set on the unit, systemd passes WATCHDOG_USEC and kills
// and restarts a daemon that stops sending WATCHDOG=1 (hung, or frozen by
// SIGSTOP). Run pings at a third of the interval while alive() says the
// daemon's own loop is making progress, and not at all when the unit has
// no watchdog.
package watchdog

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Run feeds the watchdog until ctx ends. alive, when not nil, is asked
// before each ping: a daemon whose loop is stuck stops pinging, and
// systemd restarts it.
func Run(ctx context.Context, alive func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive == nil || alive() {
				daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}
	}
}
