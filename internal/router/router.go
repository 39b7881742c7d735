// Package router switches a host's traffic between the two slots of a
// blue-green service: the agent's deploy step starts the idle slot, checks
// it on its own port, then asks a Router to move traffic to it (all at once
// or a canary share first), later to drain the old slot before stopping it,
// and, for a rollback, to move traffic straight back.
//
//	              Switch(green, 10)            Switch(green, 100)
//	blue 100% ─────────────────────▶ blue 90% ─────────────────────▶ green 100%
//	    ▲          canary bake        green 10%                     │ Drain(blue)
//	    └───────────────────── Switch(blue, 100): instant switch-back ┘ then stop blue
//
// Three kinds, chosen by the agent's config (agentconfig.Router):
//
//   - nginx: the upstream include file is rewritten atomically, the reload
//     command runs (nginx -s reload), and the switch is confirmed by probing
//     ProbeURL through nginx until it answers from the new configuration
//     (the X-Golive-Generation header, see NginxUpstream) and by waiting
//     until nginx's old workers have been told to quit (/proc). Drain waits
//     until no nginx process holds a connection to the slot's port.
//     Caveat: a client connection an old worker accepted before the reload
//     but used only after it is still served by that worker, with the old
//     upstream file, until it closes (nginx does not close such connections
//     when a worker shuts down); new connections and kept-alive ones that
//     were idle at the reload reach the new split.
//   - haproxy: the runtime API on the admin socket sets the servers "blue"
//     and "green" of the backend to ready/drain and their weights; no
//     reload. A full switch is confirmed when the old server stops being
//     picked (lbtot) and, with ProbeURL, probes answer from the new server
//     (the X-Golive-Server header). Drain waits until the slot's server has
//     no current session.
//   - none: traffic is routed by someone else (hooks, DNS); the split is only
//     recorded in a state file so Active reports what was last asked.
//
// Invariants:
//
//   - Switch returns nil only once the new split is in effect: confirmed
//     through the router (nginx with a probe URL, haproxy read back). On
//     error the previous split is restored where the router allows it
//     (nginx: the previous upstream file is put back), so Active keeps
//     reporting the slot that really serves.
//   - Switch never leaves a moment without a serving slot: the new slot is
//     made ready before the old one stops taking new requests.
//   - Drain never stops anything: it only waits, up to its timeout, for the
//     slot's in-flight requests through the router to finish.
package router

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/hashicorp/go-hclog"
)

// Slot is one of the two instances of a blue-green service.
type Slot string

// The slots.
const (
	Blue  Slot = "blue"
	Green Slot = "green"
)

// Other is the slot that is not s.
func (s Slot) Other() Slot {
	if s == Blue {
		return Green
	}
	return Blue
}

// Valid reports whether s is Blue or Green.
func (s Slot) Valid() bool { return s == Blue || s == Green }

// Traffic is the share of new requests, in percent, each slot receives; the
// two shares sum to 100.
type Traffic struct {
	Blue, Green int
}

// Split is the traffic that sends weight percent of requests to slot to and
// the rest to the other slot. A weight of 0 or 100 sends everything to to.
func Split(to Slot, weight int) (Traffic, error) {
	if !to.Valid() {
		return Traffic{}, fmt.Errorf("slot %q: want %q or %q", to, Blue, Green)
	}
	if weight < 0 || weight > 100 {
		return Traffic{}, fmt.Errorf("weight %d%%: want 0 to 100", weight)
	}
	if weight == 0 {
		weight = 100
	}
	if to == Blue {
		return Traffic{Blue: weight, Green: 100 - weight}, nil
	}
	return Traffic{Blue: 100 - weight, Green: weight}, nil
}

// Share is the percentage of requests s receives.
func (t Traffic) Share(s Slot) int {
	if s == Blue {
		return t.Blue
	}
	return t.Green
}

// Primary is the slot with the larger share (blue on a tie).
func (t Traffic) Primary() Slot {
	if t.Green > t.Blue {
		return Green
	}
	return Blue
}

// String is e.g. "blue 90% green 10%" or "green 100%".
func (t Traffic) String() string {
	switch {
	case t.Blue == 100:
		return "blue 100%"
	case t.Green == 100:
		return "green 100%"
	}
	return fmt.Sprintf("blue %d%% green %d%%", t.Blue, t.Green)
}

// Router moves a host's traffic between the slots of one service.
type Router interface {
	// Switch sends weight percent of the traffic to slot to and the rest
	// to the other slot (0 or 100: all of it to to), and returns once the
	// router serves the new split.
	Switch(ctx context.Context, to Slot, weight int) error
	// Active reports the split the router serves.
	Active(ctx context.Context) (Traffic, error)
	// Drain waits until the router has no request in flight to slot, which
	// must receive no new traffic (switch away from it first), or until
	// timeout, which is then an error wrapping ErrDrainTimeout.
	Drain(ctx context.Context, slot Slot, timeout time.Duration) error
}

// ErrDrainTimeout is wrapped by Drain's error when requests were still in
// flight at the timeout.
var ErrDrainTimeout = errors.New("drain timed out")

// ErrNoState is wrapped by Active's error when the router has no recorded
// split yet (nginx: no upstream file; none: no state file).
var ErrNoState = errors.New("no traffic split recorded yet")

// Options are what New needs beyond the agent's config.
type Options struct {
	// Service names the service; the nginx upstream is derived from it
	// (see UpstreamName).
	Service string
	// StateDir holds the none router's state file.
	StateDir string
	// ConfirmTimeout bounds how long Switch waits for the router to serve
	// the new split (default 10s).
	ConfirmTimeout time.Duration
	Logger         hclog.Logger
}

// DefaultConfirmTimeout is the default Options.ConfirmTimeout.
const DefaultConfirmTimeout = 10 * time.Second

// New builds the Router configured in bg for a service.
func New(bg agentconfig.BlueGreen, o Options) (Router, error) {
	if bg.BluePort <= 0 || bg.GreenPort <= 0 {
		return nil, fmt.Errorf("router: blue and green ports are required")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = DefaultConfirmTimeout
	}
	ports := Ports{Blue: bg.BluePort, Green: bg.GreenPort}
	log := o.Logger.Named("router").With("service", o.Service)
	r := bg.Router
	switch r.Kind {
	case agentconfig.RouterNginx:
		return NewNginx(NginxConfig{
			Upstream:       UpstreamName(o.Service),
			File:           r.UpstreamFile,
			Reload:         r.Reload,
			ProbeURL:       r.ProbeURL,
			Ports:          ports,
			ConfirmTimeout: o.ConfirmTimeout,
			Logger:         log.With("router", "nginx"),
		})
	case agentconfig.RouterHAProxy:
		return NewHAProxy(HAProxyConfig{
			Socket:         r.AdminSocket,
			Backend:        r.Backend,
			ProbeURL:       r.ProbeURL,
			ConfirmTimeout: o.ConfirmTimeout,
			Logger:         log.With("router", "haproxy"),
		})
	case agentconfig.RouterNone, "":
		if o.StateDir == "" {
			return nil, fmt.Errorf("router none: state dir is required")
		}
		return NewNone(filepath.Join(o.StateDir, "router-"+o.Service+".json")), nil
	}
	return nil, fmt.Errorf("router: unknown kind %q", r.Kind)
}

// Ports are the loopback ports of the slots.
type Ports struct {
	Blue, Green int
}

// Of is the port of slot s.
func (p Ports) Of(s Slot) int {
	if s == Blue {
		return p.Blue
	}
	return p.Green
}
