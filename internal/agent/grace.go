package agent

import (
	"strings"
	"sync"
	"time"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// peerDead says the stream died because the controller stopped answering,
// not because it closed the stream: a keepalive ping unanswered, or the
// kernel's TCP user timeout (grpc-go sets it to the keepalive timeout) on
// unacknowledged heartbeats, as in a silent partition, where it fires after
// about 3 s. The controller may be marking the host lost meanwhile.
func peerDead(err error) bool {
	if err == nil {
		return false
	}
	e := err.Error()
	for _, s := range []string{"keepalive", "timed out", "timeout", "no route to host", "network is unreachable"} {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// DefaultDisconnectGrace is how long an agent whose stream ended keeps its
// approval token, and its step in flight, waiting for a new stream.
//
// The trade-off: a stop reaches a connected agent at once (the revoke is
// pushed on its stream, under 1 s), and the grace does not change that. An
// agent between streams hears of a revoke in the next Welcome, which
// carries the approval; if none comes within the grace it halts its step
// then. So the grace is the longest a step runs on after its controller
// went away cleanly, and it is what a transient disconnect (a controller
// restarted, a starved controller's stream reset) may last without the
// step being halted and the host rolled back for nothing.
//
// No grace when the controller may already have given up on the host:
// the stream died of a timeout (peerDead: a TCP user timeout on unacked
// heartbeats after about 3 s, or an unanswered keepalive after 8 s: the
// controller frozen or partitioned away), or this agent sent no heartbeat for two
// intervals (its own process was frozen): the controller marks a host lost
// after three missed heartbeats and its rollout acts on that. Those halt at
// once, as before.
const DefaultDisconnectGrace = 5 * time.Second

// graceState guards the token across a disconnect: gen changes at every
// Welcome, so a grace timer armed before it does nothing.
type graceState struct {
	mu    sync.Mutex
	gen   uint64
	armed bool
	// lastBeat is when the last heartbeat was sent (unix nanoseconds).
	lastBeat time.Time
	interval time.Duration
	// gapAt is when a heartbeat went out more than two intervals after the
	// one before it: this process was frozen (SIGSTOP, a stalled VM) and
	// the controller may have marked the host lost meanwhile.
	gapAt time.Time
	// timer is the armed grace's; stopped bars new ones (Run returned).
	timer   *time.Timer
	stopped bool
}

// stopGrace ends a pending grace without its drop: the agent is stopping
// (its Run returned), and a timer firing later would act, and log, after it.
func (a *Agent) stopGrace() {
	a.grace.mu.Lock()
	defer a.grace.mu.Unlock()
	a.grace.stopped, a.grace.armed = true, false
	a.grace.gen++
	if a.grace.timer != nil {
		a.grace.timer.Stop()
	}
}

func (a *Agent) disconnectGrace() time.Duration {
	if a.cfg.DisconnectGrace < 0 {
		return 0
	}
	if a.cfg.DisconnectGrace == 0 {
		return DefaultDisconnectGrace
	}
	return a.cfg.DisconnectGrace
}

// welcomed records a new stream: a pending grace is over (the Welcome's
// approval replaces the token).
func (a *Agent) welcomed(interval time.Duration) {
	a.grace.mu.Lock()
	a.grace.gen++
	a.grace.armed = false
	a.grace.interval = interval
	a.grace.lastBeat = time.Now()
	a.grace.mu.Unlock()
}

func (a *Agent) beatSent() {
	a.grace.mu.Lock()
	now := time.Now()
	if !a.grace.lastBeat.IsZero() && now.Sub(a.grace.lastBeat) > a.silentAfter() {
		a.grace.gapAt = now
	}
	a.grace.lastBeat = now
	a.grace.mu.Unlock()
}

// silentAfter is how long without a heartbeat means this agent was frozen
// (grace.mu held).
func (a *Agent) silentAfter() time.Duration { return 2 * max(a.grace.interval, time.Second) }

// streamEnded drops the token now, or arms the grace (see
// DefaultDisconnectGrace). welcomed says whether the stream that ended had
// been welcomed; a failed attempt to reconnect leaves a pending grace be.
func (a *Agent) streamEnded(welcomed bool, err error) {
	drop := func() { a.setApproval(&golivev1.ApprovalUpdate{Reason: reasonDisconnected}) }
	a.grace.mu.Lock()
	if !welcomed {
		armed := a.grace.armed
		a.grace.mu.Unlock()
		if !armed {
			drop()
		}
		return
	}
	g := a.disconnectGrace()
	if exp := a.expiresAt.Load(); exp != nil {
		g = min(g, time.Until(*exp))
	}
	// Frozen now, or just woken from a freeze: after SIGCONT the heartbeat
	// ticker fires before the dead stream's end is read, so the last beat
	// alone looks fresh.
	silent := time.Since(a.grace.lastBeat) > a.silentAfter() ||
		!a.grace.gapAt.IsZero() && time.Since(a.grace.gapAt) < max(a.silentAfter(), 5*time.Second)
	if g <= 0 || silent || a.token.Load() == 0 || peerDead(err) {
		a.grace.gen++
		a.grace.armed = false
		a.grace.mu.Unlock()
		drop()
		return
	}
	if a.grace.stopped {
		a.grace.mu.Unlock()
		return
	}
	a.grace.armed = true
	gen := a.grace.gen
	a.grace.timer = time.AfterFunc(g, func() {
		a.grace.mu.Lock()
		defer a.grace.mu.Unlock()
		if a.grace.gen == gen && a.grace.armed {
			a.grace.armed = false
			drop()
		}
	})
	a.grace.mu.Unlock()
	a.log.Info("stream ended; keeping the approval token while reconnecting", "grace", g)
}
