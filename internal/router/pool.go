package router

// Pools: the instances of a scaled restart-mode service behind one router.
//
// A Pool is the router's list of a service's instances that take new
// requests. The agent adds an instance only once it is healthy on its own
// port, and removes one (no new requests, then a wait until none is in
// flight) before stopping it:
//
//	start i -> healthy on its port -> Add(i) ... Remove(i, drain) -> stop i
//
// Kinds:
//
//   - nginx: the upstream include file lists every member (written
//     atomically, nginx reloaded, confirmed like a switch: a probe answers
//     from the new file and the old workers were told to quit). Remove then
//     waits until no nginx process holds a connection to the port.
//   - haproxy: the runtime API, no reload. Instance 0 is the backend's
//     static server (its name: Server); instance i >= 1 is a dynamic server
//     "<Server>-<i>" made with "add server" and "enable server", and on
//     removal set to drain, waited for (scur+qcur = 0), put in maintenance
//     and deleted with "del server".
//   - none: members are only recorded (nobody routes).
//
// Invariant: a Pool never removes its last member (an nginx upstream
// without servers does not load); the agent keeps instance 0 in it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/atomicfile"
)

// Member is one instance of a service in a pool.
type Member struct {
	Index int
	Port  int
}

// Pool is the set of a service's instances a router sends requests to.
type Pool interface {
	// Add makes the router send new requests to m too, and returns once
	// it does.
	Add(ctx context.Context, m Member) error
	// Remove stops new requests to m and waits until it has none in flight
	// or drain has passed (an error wrapping ErrDrainTimeout).
	Remove(ctx context.Context, m Member, drain time.Duration) error
	// Members lists the instances the router sends requests to.
	Members(ctx context.Context) ([]Member, error)
}

// ErrLastMember is returned by Remove for the pool's only member.
var ErrLastMember = errors.New("the last instance stays in the router")

// PoolOptions are what NewPool needs beyond the router's config.
type PoolOptions struct {
	Service string
	// Server is the name of instance 0's server in the HAProxy backend
	// (default: the service's name).
	Server string
	// StateFile records the members of a none pool.
	StateFile      string
	ConfirmTimeout time.Duration
	Logger         hclog.Logger
}

// NewPool builds the pool of router r.
func NewPool(r agentconfig.Router, o PoolOptions) (Pool, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = DefaultConfirmTimeout
	}
	if o.Server == "" {
		o.Server = o.Service
	}
	log := o.Logger.Named("pool").With("service", o.Service, "router", string(r.Kind))
	switch r.Kind {
	case agentconfig.RouterNginx:
		if !filepath.IsAbs(r.UpstreamFile) || len(r.Reload) == 0 {
			return nil, errors.New("pool nginx: an absolute upstream file and a reload command are required")
		}
		n := &Nginx{cfg: NginxConfig{Upstream: UpstreamName(o.Service), File: r.UpstreamFile, Reload: r.Reload, ReloadTimeout: 30 * time.Second,
			ProbeURL: r.ProbeURL, ConfirmTimeout: o.ConfirmTimeout, Settle: DefaultNginxSettle, Logger: log},
			probe: newProber(r.ProbeURL, o.ConfirmTimeout, "see NginxUpstream for the add_header line")}
		return &NginxPool{n: n}, nil
	case agentconfig.RouterHAProxy:
		h, err := NewHAProxy(HAProxyConfig{Socket: r.AdminSocket, Backend: r.Backend, ConfirmTimeout: o.ConfirmTimeout, Logger: log})
		if err != nil {
			return nil, err
		}
		return &HAProxyPool{h: h, server: o.Server, log: log}, nil
	case agentconfig.RouterNone, "":
		if o.StateFile == "" {
			return nil, errors.New("pool none: a state file is required")
		}
		return &NonePool{file: o.StateFile}, nil
	}
	return nil, fmt.Errorf("pool: unknown router kind %q", r.Kind)
}

// NginxPool keeps a service's members in an nginx upstream file.
type NginxPool struct {
	n  *Nginx
	mu sync.Mutex
}

const poolMarker = "# golive-pool: "

type poolState struct {
	Members    []Member `json:"members"`
	Generation string   `json:"generation"`
}

// NginxPoolUpstream renders the upstream include file listing members
// (with the same $<name>_generation map as NginxUpstream).
func NginxPoolUpstream(name string, members []Member, generation string) []byte {
	var b bytes.Buffer
	st, _ := json.Marshal(poolState{Members: members, Generation: generation})
	fmt.Fprintf(&b, "%s%s\n", poolMarker, st)
	fmt.Fprintf(&b, "# Written by the golive agent as instances come and go: do not edit.\n")
	fmt.Fprintf(&b, "upstream %s {\n", name)
	for _, m := range members {
		fmt.Fprintf(&b, "    server 127.0.0.1:%d; # instance %d\n", m.Port, m.Index)
	}
	fmt.Fprintf(&b, "    keepalive 32;\n}\n")
	fmt.Fprintf(&b, "map $host $%s_generation {\n    default %q;\n}\n", name, generation)
	return b.Bytes()
}

func (p *NginxPool) read() ([]Member, error) {
	data, err := os.ReadFile(p.n.cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pool nginx: %w", err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	js, ok := bytes.CutPrefix(line, []byte(poolMarker))
	if !ok {
		return nil, nil // another writer's file (an unscaled setup): replaced on the first change
	}
	var st poolState
	if err := json.Unmarshal(js, &st); err != nil {
		return nil, fmt.Errorf("pool nginx: upstream file %s: %w", p.n.cfg.File, err)
	}
	return st.Members, nil
}

// Members reads the members from the upstream file.
func (p *NginxPool) Members(context.Context) ([]Member, error) { return p.read() }

// write puts members in the upstream file, reloads nginx and confirms; on
// failure the previous file is restored.
func (p *NginxPool) write(ctx context.Context, members []Member) error {
	slices.SortFunc(members, func(a, b Member) int { return a.Index - b.Index })
	old, err := os.ReadFile(p.n.cfg.File)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pool nginx: read upstream file: %w", err)
	}
	gen := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := atomicfile.WriteFile(p.n.cfg.File, NginxPoolUpstream(p.n.cfg.Upstream, members, gen), 0o644); err != nil {
		return fmt.Errorf("pool nginx: write upstream file: %w", err)
	}
	workers := listNginxWorkers()
	if err := p.n.reload(ctx); err != nil {
		if rerr := p.n.restore(old); rerr != nil {
			p.n.cfg.Logger.Error("restore previous upstream file", "error", rerr)
		}
		return fmt.Errorf("pool nginx: reload: %w (previous upstream file restored)", err)
	}
	if err := p.n.confirm(ctx, gen, workers); err != nil {
		if rerr := p.n.restore(old); rerr == nil {
			p.n.reload(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("pool nginx: not confirmed: %w (previous upstream file restored)", err)
	}
	p.n.cfg.Logger.Info("instances in the router", "members", portsOf(members), "generation", gen)
	return nil
}

// Add lists m in the upstream file (a no-op when it is there).
func (p *NginxPool) Add(ctx context.Context, m Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.read()
	if err != nil {
		return err
	}
	if slices.Contains(cur, m) {
		return nil
	}
	return p.write(ctx, append(slices.DeleteFunc(cur, func(x Member) bool { return x.Index == m.Index }), m))
}

// Remove drops m from the upstream file and waits until nginx holds no
// connection to its port.
func (p *NginxPool) Remove(ctx context.Context, m Member, drain time.Duration) error {
	p.mu.Lock()
	cur, err := p.read()
	if err == nil && slices.Contains(cur, m) {
		rest := slices.DeleteFunc(slices.Clone(cur), func(x Member) bool { return x == m })
		if len(rest) == 0 {
			err = fmt.Errorf("pool nginx: instance %d: %w", m.Index, ErrLastMember)
		} else {
			err = p.write(ctx, rest)
		}
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return waitDrained(ctx, drain, func() (int, error) { return conns("nginx", m.Port) },
		fmt.Sprintf("pool nginx: drain instance %d (port %d)", m.Index, m.Port))
}

// HAProxyPool keeps a service's members as servers of an HAProxy backend.
type HAProxyPool struct {
	h      *HAProxy
	server string
	log    hclog.Logger
	mu     sync.Mutex
}

// ServerName is the HAProxy server of instance i: the static server for
// instance 0, "<server>-<i>" for the others.
func (p *HAProxyPool) ServerName(i int) string { return p.server + agentconfig.InstanceName(i) }

func (p *HAProxyPool) run(ctx context.Context, cmd string) (string, error) {
	out, err := p.h.command(ctx, cmd)
	return strings.TrimSpace(out), err
}

type haServer struct {
	name      string
	addr      string
	port      int
	op, admin string
}

// servers reads the backend's servers of this pool ("show servers state").
func (p *HAProxyPool) servers(ctx context.Context) (map[int]haServer, error) {
	out, err := p.h.command(ctx, "show servers state "+p.h.cfg.Backend)
	if err != nil {
		return nil, err
	}
	// Columns: be_id be_name srv_id srv_name srv_addr srv_op_state
	// srv_admin_state srv_uweight srv_iweight srv_time_since_last_change
	// srv_check_status srv_check_result srv_check_health srv_check_state
	// srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port ...
	got := map[int]haServer{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 19 || strings.HasPrefix(f[0], "#") || f[1] != p.h.cfg.Backend {
			continue
		}
		idx := -1
		if f[3] == p.server {
			idx = 0
		} else if rest, ok := strings.CutPrefix(f[3], p.server+"-"); ok {
			if n, err := strconv.Atoi(rest); err == nil && n > 0 {
				idx = n
			}
		}
		if idx < 0 {
			continue
		}
		port, _ := strconv.Atoi(f[18])
		got[idx] = haServer{name: f[3], addr: f[4], port: port, op: f[5], admin: f[6]}
	}
	return got, nil
}

// Members lists the servers that take traffic (running, neither in
// maintenance nor draining).
func (p *HAProxyPool) Members(ctx context.Context) ([]Member, error) {
	srv, err := p.servers(ctx)
	if err != nil {
		return nil, fmt.Errorf("pool haproxy: %w", err)
	}
	var out []Member
	for i, s := range srv {
		if s.op == "2" && s.admin == "0" {
			out = append(out, Member{Index: i, Port: s.port})
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return a.Index - b.Index })
	return out, nil
}

// Add makes m's server ready (adding it first for i >= 1) and waits until
// HAProxy counts it as running.
func (p *HAProxyPool) Add(ctx context.Context, m Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, p.h.cfg.ConfirmTimeout)
	defer cancel()
	name := p.ServerName(m.Index)
	srv, err := p.servers(ctx)
	if err != nil {
		return fmt.Errorf("pool haproxy: %w", err)
	}
	s, exists := srv[m.Index]
	full := p.h.cfg.Backend + "/" + name
	if exists && (s.port != m.Port || s.addr != "127.0.0.1") {
		if out, err := p.run(ctx, fmt.Sprintf("set server %s addr 127.0.0.1 port %d", full, m.Port)); err != nil || (out != "" && !strings.Contains(out, "changed")) {
			return fmt.Errorf("pool haproxy: set address of %s: %v %s", full, err, out)
		}
	}
	if !exists {
		if m.Index == 0 {
			return fmt.Errorf("pool haproxy: backend %s has no server %q for instance 0 (declare it in the configuration)", p.h.cfg.Backend, name)
		}
		out, err := p.run(ctx, fmt.Sprintf("add server %s 127.0.0.1:%d", full, m.Port))
		if err != nil {
			return fmt.Errorf("pool haproxy: %w", err)
		}
		if !strings.Contains(out, "New server registered") {
			return fmt.Errorf("pool haproxy: add server %s: %s", full, out)
		}
	}
	for _, cmd := range []string{"set server " + full + " state ready"} {
		if out, err := p.run(ctx, cmd); err != nil || out != "" {
			return fmt.Errorf("pool haproxy: %q: %v %s", cmd, err, out)
		}
	}
	for {
		srv, err := p.servers(ctx)
		if err != nil {
			return fmt.Errorf("pool haproxy: %w", err)
		}
		if s := srv[m.Index]; s.op == "2" && s.admin == "0" {
			p.log.Info("instance in the router", "server", full, "port", m.Port)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pool haproxy: server %s does not take traffic (op %s admin %s): %w", full, srv[m.Index].op, srv[m.Index].admin, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Remove drains m's server, waits for its sessions to end, puts it in
// maintenance and, for i >= 1, deletes it.
func (p *HAProxyPool) Remove(ctx context.Context, m Member, drain time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := p.ServerName(m.Index)
	full := p.h.cfg.Backend + "/" + name
	srv, err := p.servers(ctx)
	if err != nil {
		return fmt.Errorf("pool haproxy: %w", err)
	}
	if _, ok := srv[m.Index]; !ok {
		return nil
	}
	serving := 0
	for i, s := range srv {
		if i != m.Index && s.op == "2" && s.admin == "0" {
			serving++
		}
	}
	if serving == 0 {
		return fmt.Errorf("pool haproxy: instance %d: %w", m.Index, ErrLastMember)
	}
	if out, err := p.run(ctx, "set server "+full+" state drain"); err != nil || out != "" {
		return fmt.Errorf("pool haproxy: drain %s: %v %s", full, err, out)
	}
	if err := p.h.waitUnpicked(ctx, Slot(name)); err != nil {
		return fmt.Errorf("pool haproxy: %w", err)
	}
	if err := waitDrained(ctx, drain, func() (int, error) {
		st, err := p.h.serverStat(ctx, Slot(name), "scur", "qcur")
		return st["scur"] + st["qcur"], err
	}, "pool haproxy: drain "+full); err != nil {
		return err
	}
	if out, err := p.run(ctx, "set server "+full+" state maint"); err != nil || out != "" {
		return fmt.Errorf("pool haproxy: maintenance %s: %v %s", full, err, out)
	}
	if m.Index == 0 {
		return nil
	}
	// HAProxy refuses to delete a server while it still has idle
	// connections to it; they are closed shortly after maintenance.
	deadline := time.Now().Add(p.h.cfg.ConfirmTimeout)
	for {
		out, err := p.run(ctx, "del server "+full)
		if err == nil && strings.Contains(out, "Server deleted") {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.log.Warn("server left in maintenance: not deleted", "server", full, "error", err, "output", out)
			return nil // in maintenance it takes no traffic; Add reuses it
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NonePool records its members in a JSON file.
type NonePool struct {
	file string
	mu   sync.Mutex
}

func (p *NonePool) read() ([]Member, error) {
	data, err := os.ReadFile(p.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st poolState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("pool none: %s: %w", p.file, err)
	}
	return st.Members, nil
}

func (p *NonePool) write(ms []Member) error {
	slices.SortFunc(ms, func(a, b Member) int { return a.Index - b.Index })
	data, _ := json.Marshal(poolState{Members: ms})
	return atomicfile.WriteFile(p.file, data, 0o644)
}

// Members reads the recorded members.
func (p *NonePool) Members(context.Context) ([]Member, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.read()
}

// Add records m.
func (p *NonePool) Add(_ context.Context, m Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.read()
	if err != nil {
		return err
	}
	if slices.Contains(cur, m) {
		return nil
	}
	return p.write(append(slices.DeleteFunc(cur, func(x Member) bool { return x.Index == m.Index }), m))
}

// Remove forgets m.
func (p *NonePool) Remove(_ context.Context, m Member, _ time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.read()
	if err != nil {
		return err
	}
	return p.write(slices.DeleteFunc(cur, func(x Member) bool { return x.Index == m.Index }))
}

func portsOf(ms []Member) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.Port
	}
	return out
}
