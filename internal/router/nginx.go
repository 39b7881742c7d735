package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golive/golive/internal/atomicfile"
	"github.com/golive/golive/internal/hooks"
	"github.com/hashicorp/go-hclog"
)

// GenerationHeader is the response header nginx must add (see
// NginxUpstream) so a probe can tell which upstream file answered.
const GenerationHeader = "X-Golive-Generation"

// DefaultNginxSettle is how long every probe must keep answering from the
// new upstream file before a switch counts as confirmed, when the agent
// cannot see nginx's workers in /proc. nginx's master starts the new
// workers, waits 100 ms, then tells the old ones to stop taking requests;
// until then an old worker may still answer from the old file on a
// kept-alive client connection.
const DefaultNginxSettle = 300 * time.Millisecond

// stateMarker starts the first line of the upstream file: the split and
// generation it holds, as JSON, so Active needs no other state.
const stateMarker = "# golive-state: "

// UpstreamName is the name of the nginx upstream (and, with a
// "_generation" suffix, of the variable) golive writes for service: the
// service name prefixed with "golive_", every character outside
// [A-Za-z0-9_] replaced by "_".
func UpstreamName(service string) string {
	var b strings.Builder
	b.WriteString("golive_")
	for _, r := range service {
		if r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

type nginxState struct {
	Blue       int    `json:"blue"`
	Green      int    `json:"green"`
	Generation string `json:"generation"`
}

// NginxUpstream renders the include file for upstream name: an upstream
// block with both slots on 127.0.0.1 (a slot with no share is "backup",
// others get their share as weight) and a map defining
// $<name>_generation, which the server block must send back:
//
//	# golive-state: {"blue":0,"green":100,"generation":"1764540000000000000"}
//	upstream golive_app {
//	    server 127.0.0.1:8081 backup;
//	    server 127.0.0.1:8082 weight=100;
//	    keepalive 32;
//	}
//	map $host $golive_app_generation {
//	    default "1764540000000000000";
//	}
//
// Include it in the http block, and in the location proxying to it:
//
//	proxy_pass http://golive_app;
//	proxy_http_version 1.1;
//	proxy_set_header Connection "";
//	add_header X-Golive-Generation $golive_app_generation always;
//
// (deploy/examples/nginx/ has a complete configuration.)
//
// The slot without a share is a backup rather than down: nginx sends it
// nothing while the live slot answers, but an old worker still finishing
// connections it accepted before a reload falls back to it (with
// proxy_next_upstream error) once the slot it was configured with has been
// drained and stopped, instead of failing the request.
func NginxUpstream(name string, ports Ports, t Traffic, generation string) []byte {
	var b bytes.Buffer
	st, _ := json.Marshal(nginxState{Blue: t.Blue, Green: t.Green, Generation: generation})
	fmt.Fprintf(&b, "%s%s\n", stateMarker, st)
	fmt.Fprintf(&b, "# Written by the golive agent on every switch: do not edit.\n")
	fmt.Fprintf(&b, "upstream %s {\n", name)
	for _, s := range []Slot{Blue, Green} {
		if share := t.Share(s); share == 0 {
			fmt.Fprintf(&b, "    server 127.0.0.1:%d backup; # %s\n", ports.Of(s), s)
		} else {
			fmt.Fprintf(&b, "    server 127.0.0.1:%d weight=%d; # %s\n", ports.Of(s), share, s)
		}
	}
	fmt.Fprintf(&b, "    keepalive 32;\n}\n")
	fmt.Fprintf(&b, "map $host $%s_generation {\n    default %q;\n}\n", name, generation)
	return b.Bytes()
}

func parseNginxState(data []byte) (nginxState, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	js, ok := bytes.CutPrefix(line, []byte(stateMarker))
	var st nginxState
	if !ok {
		return st, errors.New("first line is not a golive-state comment")
	}
	if err := json.Unmarshal(js, &st); err != nil {
		return st, fmt.Errorf("golive-state: %w", err)
	}
	if st.Blue < 0 || st.Green < 0 || st.Blue+st.Green != 100 {
		return st, fmt.Errorf("golive-state: shares %d+%d do not sum to 100", st.Blue, st.Green)
	}
	return st, nil
}

// NginxConfig configures an Nginx router.
type NginxConfig struct {
	// Upstream is the upstream's name (UpstreamName of the service).
	Upstream string
	// File is the include file rewritten on every switch.
	File string
	// Reload is the argv that makes nginx load File (e.g. nginx -s reload).
	Reload []string
	// ReloadTimeout bounds Reload (default 30s).
	ReloadTimeout time.Duration
	// ProbeURL is fetched through nginx to confirm a switch (see confirm);
	// without it only the worker processes are checked.
	ProbeURL string
	Ports    Ports
	// ConfirmTimeout bounds the probing (default 10s); Settle is how long
	// the probes must agree (default DefaultNginxSettle).
	ConfirmTimeout time.Duration
	Settle         time.Duration
	Logger         hclog.Logger
}

// Nginx switches traffic by rewriting an upstream include file and
// reloading nginx. It is safe for concurrent use; switches are serialized.
type Nginx struct {
	cfg   NginxConfig
	probe prober
	mu    sync.Mutex
}

var _ Router = (*Nginx)(nil)

// NewNginx checks cfg and returns the router.
func NewNginx(cfg NginxConfig) (*Nginx, error) {
	switch {
	case cfg.Upstream == "":
		return nil, errors.New("router nginx: upstream name is required")
	case !filepath.IsAbs(cfg.File):
		return nil, fmt.Errorf("router nginx: upstream file %q must be an absolute path", cfg.File)
	case len(cfg.Reload) == 0:
		return nil, errors.New("router nginx: reload command is required")
	case cfg.Ports.Blue <= 0 || cfg.Ports.Green <= 0 || cfg.Ports.Blue == cfg.Ports.Green:
		return nil, fmt.Errorf("router nginx: ports %d and %d: want two different ports", cfg.Ports.Blue, cfg.Ports.Green)
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = DefaultConfirmTimeout
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultNginxSettle
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Nginx{cfg: cfg, probe: newProber(cfg.ProbeURL, cfg.ConfirmTimeout,
		"see NginxUpstream for the add_header line")}, nil
}

// Active reads the split from the upstream file.
func (n *Nginx) Active(ctx context.Context) (Traffic, error) {
	data, err := os.ReadFile(n.cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		return Traffic{}, fmt.Errorf("router nginx: upstream file %s: %w", n.cfg.File, ErrNoState)
	}
	if err != nil {
		return Traffic{}, fmt.Errorf("router nginx: %w", err)
	}
	st, err := parseNginxState(data)
	if err != nil {
		return Traffic{}, fmt.Errorf("router nginx: upstream file %s: %w", n.cfg.File, err)
	}
	return Traffic{Blue: st.Blue, Green: st.Green}, nil
}

// Switch writes the new upstream file, reloads nginx and probes until the
// new file answers. On failure the previous file is put back (and nginx
// reloaded again if the failure came after a successful reload).
func (n *Nginx) Switch(ctx context.Context, to Slot, weight int) error {
	t, err := Split(to, weight)
	if err != nil {
		return fmt.Errorf("router nginx: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	old, err := os.ReadFile(n.cfg.File)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("router nginx: read upstream file: %w", err)
	}
	gen := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := atomicfile.WriteFile(n.cfg.File, NginxUpstream(n.cfg.Upstream, n.cfg.Ports, t, gen), 0o644); err != nil {
		return fmt.Errorf("router nginx: write upstream file: %w", err)
	}
	log := n.cfg.Logger.With("traffic", t.String(), "generation", gen)
	workers := listNginxWorkers()
	if err := n.reload(ctx); err != nil {
		if rerr := n.restore(old); rerr != nil {
			log.Error("restore previous upstream file", "error", rerr)
		}
		return fmt.Errorf("router nginx: switch to %s: %w (previous upstream file restored)", t, err)
	}
	if err := n.confirm(ctx, gen, workers); err != nil {
		if rerr := n.restore(old); rerr != nil {
			log.Error("restore previous upstream file", "error", rerr)
		} else if rerr := n.reload(context.WithoutCancel(ctx)); rerr != nil {
			log.Error("reload with previous upstream file", "error", rerr)
		}
		return fmt.Errorf("router nginx: switch to %s not confirmed: %w (previous upstream file restored and reloaded, unconfirmed)", t, err)
	}
	log.Info("switched")
	return nil
}

// confirm waits until nginx serves generation gen to every new request:
//
//  1. with a probe URL, until a probe answers from gen (new workers run);
//  2. until the workers that ran before the reload (before) have been told
//     to quit by their master, which has started new ones: from then on no
//     request, even on a kept-alive connection, reaches an old worker.
//
// When /proc shows no nginx workers (another PID namespace), step 2 falls
// back to probes answering gen for Settle; without a probe URL either,
// the switch is not confirmed.
func (n *Nginx) confirm(ctx context.Context, gen string, before map[int]nginxWorker) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ConfirmTimeout)
	defer cancel()
	if n.cfg.ProbeURL != "" {
		settle := time.Duration(0)
		if len(before) == 0 {
			settle = n.cfg.Settle
		}
		if err := n.probe.until(ctx, GenerationHeader, gen, settle, 1); err != nil {
			return err
		}
	}
	if len(before) == 0 {
		if n.cfg.ProbeURL == "" {
			n.cfg.Logger.Warn("switch not confirmed: no probe_url and no nginx workers visible in /proc")
		}
		return nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		pending, started := oldWorkersTakingRequests(before, listNginxWorkers())
		if started && len(pending) == 0 {
			n.cfg.Logger.Debug("old nginx workers quit", "count", len(before))
			return nil
		}
		select {
		case <-ctx.Done():
			if !started {
				return fmt.Errorf("nginx started no new workers after the reload (%v): see its error log", context.Cause(ctx))
			}
			return fmt.Errorf("old nginx workers %v still take requests (%v)", pending, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func (n *Nginx) restore(old []byte) error {
	if old == nil {
		return os.Remove(n.cfg.File)
	}
	return atomicfile.WriteFile(n.cfg.File, old, 0o644)
}

func (n *Nginx) reload(ctx context.Context) error {
	res, err := hooks.Run(ctx, hooks.Hook{
		Name:    "nginx_reload",
		Command: n.cfg.Reload,
		Dir:     filepath.Dir(n.cfg.File),
		Timeout: n.cfg.ReloadTimeout,
	})
	if err != nil {
		if out := strings.TrimSpace(string(res.Output)); out != "" {
			return fmt.Errorf("%w: %s", err, out)
		}
		return err
	}
	return nil
}

// Drain waits until no nginx process has a connection to slot's port. The
// slot must have no share in the upstream file: then only old workers,
// finishing requests they took before the reload, still talk to it.
func (n *Nginx) Drain(ctx context.Context, slot Slot, timeout time.Duration) error {
	if !slot.Valid() {
		return fmt.Errorf("router nginx: slot %q: want %q or %q", slot, Blue, Green)
	}
	t, err := n.Active(ctx)
	if err != nil {
		return err
	}
	if t.Share(slot) != 0 {
		return fmt.Errorf("router nginx: cannot drain %s: it still receives %d%% of new requests (switch away from it first)", slot, t.Share(slot))
	}
	port := n.cfg.Ports.Of(slot)
	return waitDrained(ctx, timeout, func() (int, error) { return conns("nginx", port) },
		fmt.Sprintf("router nginx: drain %s (port %d)", slot, port))
}

// waitDrained polls inFlight until it is 0, timeout or ctx.
func waitDrained(ctx context.Context, timeout time.Duration, inFlight func() (int, error), what string) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := inFlight()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if c == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%s: %w after %s: %d still in flight", what, ErrDrainTimeout, timeout, c)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
