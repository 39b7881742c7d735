package router

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// HAProxyConfig configures an HAProxy router.
type HAProxyConfig struct {
	// Socket is the runtime API socket ("stats socket <path> level admin").
	Socket string
	// Backend holds the servers named "blue" and "green".
	Backend string
	// ProbeURL, when set, is fetched through HAProxy after a full switch
	// until it answers from the new server (the ServerHeader header).
	ProbeURL string
	// ConfirmTimeout bounds each Switch (default 10s).
	ConfirmTimeout time.Duration
	Logger         hclog.Logger
}

// ServerHeader is the response header HAProxy must set to the name of the
// server that answered ("http-response set-header X-Golive-Server %s") for
// a switch to be confirmed through ProbeURL.
const ServerHeader = "X-Golive-Server"

// HAProxy switches traffic with HAProxy's runtime API: server state ready
// or drain, and server weights. No reload, so kept-alive client
// connections stay open; in HTTP mode HAProxy balances every request, so
// the next request on them already goes to the new split.
//
// HAProxy applies a server's new state to its load balancing shortly after
// the runtime API has answered, so a full switch is confirmed by probing
// ProbeURL until ten consecutive answers, over at least 50 ms, come from
// the new server (with both servers ready, round robin would alternate); without ProbeURL only the state read back is checked.
//
// The runtime state is lost when HAProxy restarts (not on a reload with
// "server-state-file"); Active always reports what HAProxy really does.
type HAProxy struct {
	cfg   HAProxyConfig
	probe prober
	mu    sync.Mutex
}

var _ Router = (*HAProxy)(nil)

// NewHAProxy checks cfg and returns the router. It does not contact HAProxy.
func NewHAProxy(cfg HAProxyConfig) (*HAProxy, error) {
	switch {
	case cfg.Socket == "":
		return nil, errors.New("router haproxy: admin socket is required")
	case cfg.Backend == "" || strings.ContainsAny(cfg.Backend, " \t\r\n;/"):
		return nil, fmt.Errorf("router haproxy: backend %q: want a backend name", cfg.Backend)
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = DefaultConfirmTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &HAProxy{cfg: cfg, probe: newProber(cfg.ProbeURL, cfg.ConfirmTimeout,
		`add "http-response set-header `+ServerHeader+` %s" to the backend`)}, nil
}

// command runs one runtime API command and returns its output.
func (h *HAProxy) command(ctx context.Context, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.cfg.Socket)
	if err != nil {
		return "", fmt.Errorf("admin socket: %w (is HAProxy running with \"stats socket %s level admin\"?)", err, h.cfg.Socket)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(h.cfg.ConfirmTimeout))
	}
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("admin socket %s: %q: %w", h.cfg.Socket, cmd, err)
	}
	out, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return "", fmt.Errorf("admin socket %s: %q: %w", h.cfg.Socket, cmd, err)
	}
	return string(out), nil
}

// set runs a "set server" command, which answers nothing on success.
func (h *HAProxy) set(ctx context.Context, slot Slot, what string) error {
	cmd := fmt.Sprintf("set server %s/%s %s", h.cfg.Backend, slot, what)
	out, err := h.command(ctx, cmd)
	if err != nil {
		return err
	}
	if out = strings.TrimSpace(out); out != "" {
		return fmt.Errorf("%q: %s", cmd, out)
	}
	return nil
}

// Switch makes the slots that get a share ready with their share as weight
// and waits until HAProxy balances to them (their health check passes)
// before the slot without a share is drained, then confirms. If the new
// slot never takes traffic, the previous split is put back.
func (h *HAProxy) Switch(ctx context.Context, to Slot, weight int) error {
	t, err := Split(to, weight)
	if err != nil {
		return fmt.Errorf("router haproxy: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ConfirmTimeout)
	defer cancel()

	prev, prevErr := h.active(ctx)
	if err := h.apply(ctx, t); err != nil {
		if prevErr == nil && prev != t {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.ConfirmTimeout)
			defer rcancel()
			if rerr := h.apply(rctx, prev); rerr != nil {
				h.cfg.Logger.Error("restore previous split", "traffic", prev.String(), "error", rerr)
			} else {
				return fmt.Errorf("router haproxy: switch to %s: %w (previous split %s restored)", t, err, prev)
			}
		}
		return fmt.Errorf("router haproxy: switch to %s: %w", t, err)
	}
	if t.Share(to) == 100 {
		if err := h.waitUnpicked(ctx, to.Other()); err != nil {
			return fmt.Errorf("router haproxy: switch to %s not confirmed: %w", t, err)
		}
		if h.cfg.ProbeURL != "" {
			if err := h.probe.until(ctx, ServerHeader, string(to), 50*time.Millisecond, 10); err != nil {
				return fmt.Errorf("router haproxy: switch to %s not confirmed: %w", t, err)
			}
		}
	}
	h.cfg.Logger.Info("switched", "traffic", t.String())
	return nil
}

// apply sets the servers to split t: first the slots with a share (weight,
// ready), waiting until HAProxy serves them, then the slot without one
// (drain), waiting until the state reads back as t.
func (h *HAProxy) apply(ctx context.Context, t Traffic) error {
	var idle []Slot
	for _, s := range []Slot{Blue, Green} {
		if t.Share(s) == 0 {
			idle = append(idle, s)
			continue
		}
		if err := h.set(ctx, s, "weight "+strconv.Itoa(t.Share(s))); err != nil {
			return err
		}
		if err := h.set(ctx, s, "state ready"); err != nil {
			return err
		}
	}
	if err := h.waitWeights(ctx, func(w map[Slot]int) bool {
		for _, s := range []Slot{Blue, Green} {
			if t.Share(s) > 0 && w[s] != t.Share(s) {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("%w (is the server down? its health check must pass first)", err)
	}
	for _, s := range idle {
		if err := h.set(ctx, s, "state drain"); err != nil {
			return err
		}
	}
	return h.waitWeights(ctx, func(w map[Slot]int) bool {
		for _, s := range idle {
			if w[s] != 0 {
				return false
			}
		}
		return true
	})
}

// waitWeights polls the servers' effective weights until ok or ctx ends.
func (h *HAProxy) waitWeights(ctx context.Context, ok func(map[Slot]int) bool) error {
	for {
		w, err := h.weights(ctx)
		if err != nil {
			return err
		}
		if ok(w) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backend %s: servers take traffic with weights blue %d green %d: %w", h.cfg.Backend, w[Blue], w[Green], ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Active reads the servers' state and weights.
func (h *HAProxy) Active(ctx context.Context) (Traffic, error) {
	t, err := h.active(ctx)
	if err != nil {
		return Traffic{}, fmt.Errorf("router haproxy: %w", err)
	}
	return t, nil
}

func (h *HAProxy) active(ctx context.Context) (Traffic, error) {
	weights, err := h.weights(ctx)
	if err != nil {
		return Traffic{}, err
	}
	total := weights[Blue] + weights[Green]
	if total == 0 {
		return Traffic{}, fmt.Errorf("backend %s: neither blue nor green takes traffic (down, drained or weight 0)", h.cfg.Backend)
	}
	b := (weights[Blue]*100 + total/2) / total
	return Traffic{Blue: b, Green: 100 - b}, nil
}

// weights reads each slot's weight from "show servers state": its user
// weight when it is running and neither in maintenance nor draining, else 0.
func (h *HAProxy) weights(ctx context.Context) (map[Slot]int, error) {
	out, err := h.command(ctx, "show servers state "+h.cfg.Backend)
	if err != nil {
		return nil, err
	}
	// Columns: be_id be_name srv_id srv_name srv_addr srv_op_state
	// srv_admin_state srv_uweight ...
	weights := map[Slot]int{}
	found := map[Slot]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || strings.HasPrefix(f[0], "#") || f[1] != h.cfg.Backend {
			continue
		}
		s := Slot(f[3])
		if !s.Valid() {
			continue
		}
		found[s] = true
		op, admin, w := f[5], f[6], f[7]
		uw, _ := strconv.Atoi(w)
		if op == "2" && admin == "0" { // running, neither maintenance nor drain
			weights[s] = uw
		}
	}
	for _, s := range []Slot{Blue, Green} {
		if !found[s] {
			return nil, fmt.Errorf("backend %s has no server named %q: %s", h.cfg.Backend, s, strings.TrimSpace(out))
		}
	}
	return weights, nil
}

// Drain waits until the slot's server has no current session and nothing
// queued.
func (h *HAProxy) Drain(ctx context.Context, slot Slot, timeout time.Duration) error {
	if !slot.Valid() {
		return fmt.Errorf("router haproxy: slot %q: want %q or %q", slot, Blue, Green)
	}
	t, err := h.Active(ctx)
	if err != nil {
		return err
	}
	if t.Share(slot) != 0 {
		return fmt.Errorf("router haproxy: cannot drain %s: it still receives %d%% of new requests (switch away from it first)", slot, t.Share(slot))
	}
	return waitDrained(ctx, timeout, func() (int, error) { return h.inFlight(ctx, slot) },
		fmt.Sprintf("router haproxy: drain %s/%s", h.cfg.Backend, slot))
}

// inFlight is the server's scur+qcur.
func (h *HAProxy) inFlight(ctx context.Context, slot Slot) (int, error) {
	st, err := h.serverStat(ctx, slot, "scur", "qcur")
	if err != nil {
		return 0, err
	}
	return st["scur"] + st["qcur"], nil
}

// serverStat reads the numeric columns of slot's server from "show stat".
func (h *HAProxy) serverStat(ctx context.Context, slot Slot, cols ...string) (map[string]int, error) {
	out, err := h.command(ctx, "show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("show stat: unreadable output: %v", err)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	for _, k := range append([]string{"pxname", "svname"}, cols...) {
		if _, ok := col[k]; !ok {
			return nil, fmt.Errorf("show stat: no %s column", k)
		}
	}
	for _, rec := range recs[1:] {
		if len(rec) < len(recs[0]) || rec[col["pxname"]] != h.cfg.Backend || rec[col["svname"]] != string(slot) {
			continue
		}
		st := map[string]int{}
		for _, k := range cols {
			st[k], _ = strconv.Atoi(rec[col[k]])
		}
		return st, nil
	}
	return nil, fmt.Errorf("show stat: no server %s/%s", h.cfg.Backend, slot)
}

// waitUnpicked waits until the load balancer stops picking slot's server:
// its lbtot (times picked) stays the same over 50 ms. HAProxy applies a
// state change to its balancing shortly after the runtime API answers.
func (h *HAProxy) waitUnpicked(ctx context.Context, slot Slot) error {
	last := -1
	for {
		st, err := h.serverStat(ctx, slot, "lbtot")
		if err != nil {
			return err
		}
		if st["lbtot"] == last {
			return nil
		}
		last = st["lbtot"]
		select {
		case <-ctx.Done():
			return fmt.Errorf("HAProxy still picks server %s/%s (lbtot %d): %w", h.cfg.Backend, slot, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
