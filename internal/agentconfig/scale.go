package agentconfig

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Scale defaults.
const (
	DefaultScaleTolerance       = 0.1
	DefaultScaleInterval        = 15 * time.Second
	DefaultScaleDownWindow      = 300 * time.Second
	DefaultScaleUpCooldown      = 60 * time.Second
	DefaultScaleInstanceDrain   = 30 * time.Second
	maxScaleInstances           = 64
	scaleTargetKindsDescription = "target_rps, target_cpu, or query with target_value"
)

// Scale is a service's scale block: how many instances of it may run on
// this host, what demand one instance is sized for (the controller's policy
// reads it), and how the instances are reached.
//
// Instance 0 is the service as it runs unscaled (its port, unit and
// process); instance i >= 1 listens on Port(i): the service's port + i, or
// the i-th port (0-based) of Ports when a range is declared.
type Scale struct {
	Min, Max        int
	TargetRPS       float64
	TargetCPU       float64
	Query           string
	TargetValue     float64
	Tolerance       float64
	Interval        time.Duration
	ScaleUpCooldown time.Duration
	ScaleDownWindow time.Duration
	MaxStep         int
	// PortsFrom..PortsTo is the declared port range (0: none); instance i
	// listens on PortsFrom + i.
	PortsFrom, PortsTo int
	// DrainTimeout bounds how long an instance taken out of the router
	// keeps finishing its requests before it is stopped.
	DrainTimeout time.Duration
	// Router is what sends traffic to the instances of a restart-mode
	// service (kind none: nobody the agent drives).
	Router Router
}

func defaultScale() *Scale {
	return &Scale{Min: 1, Tolerance: DefaultScaleTolerance, Interval: DefaultScaleInterval,
		ScaleUpCooldown: DefaultScaleUpCooldown, ScaleDownWindow: DefaultScaleDownWindow,
		DrainTimeout: DefaultScaleInstanceDrain, Router: Router{Kind: RouterNone}}
}

// InstancePort is the port instance i of the service listens on; base is
// the port of instance 0 (the service's port, or its blue-green slot's).
func (s *Service) InstancePort(base, i int) int {
	if s.Scale != nil && s.Scale.PortsFrom != 0 {
		return s.Scale.PortsFrom + i
	}
	return base + i
}

// InstanceName suffixes an instance's name (unit, process, log file): ""
// for instance 0, "-i" for the others.
func InstanceName(i int) string {
	if i == 0 {
		return ""
	}
	return "-" + strconv.Itoa(i)
}

// MaxInstances is the scale block's max (1 without a scale block).
func (s *Service) MaxInstances() int {
	if s.Scale == nil {
		return 1
	}
	return s.Scale.Max
}

type scaleHCL struct {
	DefRange        hcl.Range      `hcl:",def_range"`
	Min             hcl.Expression `hcl:"min,optional"`
	Max             hcl.Expression `hcl:"max,optional"`
	TargetRPS       hcl.Expression `hcl:"target_rps,optional"`
	TargetCPU       hcl.Expression `hcl:"target_cpu,optional"`
	Query           hcl.Expression `hcl:"query,optional"`
	TargetValue     hcl.Expression `hcl:"target_value,optional"`
	Tolerance       hcl.Expression `hcl:"tolerance,optional"`
	Interval        hcl.Expression `hcl:"interval,optional"`
	ScaleUpCooldown hcl.Expression `hcl:"scale_up_cooldown,optional"`
	ScaleDownWindow hcl.Expression `hcl:"scale_down_window,optional"`
	MaxStep         hcl.Expression `hcl:"max_step,optional"`
	Ports           hcl.Expression `hcl:"ports,optional"`
	DrainTimeout    hcl.Expression `hcl:"drain_timeout,optional"`
	Router          *routerHCL     `hcl:"router,block"`
}

func (f fields) scale(b *scaleHCL, s *Service) {
	s.pos["scale"] = b.DefRange
	sc := defaultScale()
	s.Scale = sc
	f.int(b.Min, "scale.min", &sc.Min)
	f.int(b.Max, "scale.max", &sc.Max)
	f.float(b.TargetRPS, "scale.target_rps", &sc.TargetRPS)
	f.float(b.TargetCPU, "scale.target_cpu", &sc.TargetCPU)
	f.str(b.Query, "scale.query", &sc.Query)
	f.float(b.TargetValue, "scale.target_value", &sc.TargetValue)
	f.float(b.Tolerance, "scale.tolerance", &sc.Tolerance)
	f.duration(b.Interval, "scale.interval", &sc.Interval)
	f.duration(b.ScaleUpCooldown, "scale.scale_up_cooldown", &sc.ScaleUpCooldown)
	f.duration(b.ScaleDownWindow, "scale.scale_down_window", &sc.ScaleDownWindow)
	f.int(b.MaxStep, "scale.max_step", &sc.MaxStep)
	f.duration(b.DrainTimeout, "scale.drain_timeout", &sc.DrainTimeout)
	var ports string
	f.str(b.Ports, "scale.ports", &ports)
	if ports != "" {
		from, to, err := parsePortRange(ports)
		if err != nil {
			f.fail(b.Ports.Range(), "scale.ports", "%v", err)
			delete(f.pos, "scale.ports")
		} else {
			sc.PortsFrom, sc.PortsTo = from, to
		}
	}
	if r := b.Router; r != nil {
		f.router(r, "scale.router", &sc.Router)
	}
}

// router decodes a router block at key (blue_green.router, scale.router).
func (f fields) router(r *routerHCL, key string, dst *Router) {
	f.pos[key] = r.DefRange
	var kind string
	f.str(r.Kind, key+".kind", &kind)
	dst.Kind = RouterKind(kind)
	f.str(r.UpstreamFile, key+".upstream_file", &dst.UpstreamFile)
	f.strList(r.Reload, key+".reload", &dst.Reload)
	f.str(r.ProbeURL, key+".probe_url", &dst.ProbeURL)
	f.str(r.AdminSocket, key+".admin_socket", &dst.AdminSocket)
	f.str(r.Backend, key+".backend", &dst.Backend)
	f.str(r.AccessLog, key+".access_log", &dst.AccessLog)
	if dst.Kind == RouterNginx && !f.pos.has(key+".reload") {
		dst.Reload = defaultNginxReload()
	}
}

// parsePortRange reads "8080-8083" (or a single port).
func parsePortRange(v string) (int, int, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(v), "-")
	if !ok {
		b = a
	}
	from, err1 := strconv.Atoi(strings.TrimSpace(a))
	to, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not a port range such as \"8080-8083\"", v)
	case from < 1 || to > 65535 || from > to:
		return 0, 0, fmt.Errorf("%q: want FIRST-LAST with 1 <= FIRST <= LAST <= 65535", v)
	}
	return from, to, nil
}

// scale checks a service's scale block.
func (v *validator) scale(o owner, s *Service) {
	sc := s.Scale
	if sc == nil {
		return
	}
	if s.SwapMode == SwapBlueGreen {
		o.failAt("scale", `block is only supported with swap_mode = "restart" by this agent (blue-green services run one instance per slot)`)
		return
	}
	if sc.Min < 1 {
		o.failAt("scale.min", "must be at least 1, got %d", sc.Min)
	}
	switch {
	case sc.Max < sc.Min:
		o.fail("scale.max", []string{"scale"}, "must be at least min (%d), got %d", sc.Min, sc.Max)
	case sc.Max > maxScaleInstances:
		o.failAt("scale.max", "must be at most %d, got %d", maxScaleInstances, sc.Max)
	}
	kinds := 0
	if sc.TargetRPS != 0 || o.pos.has("scale.target_rps") {
		kinds++
		if sc.TargetRPS <= 0 {
			o.failAt("scale.target_rps", "must be positive, got %g", sc.TargetRPS)
		}
	}
	if sc.TargetCPU != 0 || o.pos.has("scale.target_cpu") {
		kinds++
		if sc.TargetCPU <= 0 {
			o.failAt("scale.target_cpu", "must be positive (in cores, 0.5 = half a core), got %g", sc.TargetCPU)
		}
	}
	if sc.Query != "" || o.pos.has("scale.query") {
		kinds++
		if strings.TrimSpace(sc.Query) == "" {
			o.failAt("scale.query", "must be a PromQL expression")
		}
		if sc.TargetValue <= 0 {
			o.fail("scale.target_value", []string{"scale.query"}, "must be positive with query, got %g", sc.TargetValue)
		}
	} else if o.pos.has("scale.target_value") {
		o.failAt("scale.target_value", "is only used with query")
	}
	if kinds != 1 {
		o.fail("scale", nil, "set exactly one target: %s (got %d)", scaleTargetKindsDescription, kinds)
	}
	if sc.Tolerance < 0 || sc.Tolerance >= 1 {
		o.failAt("scale.tolerance", "must be in [0, 1), got %g", sc.Tolerance)
	}
	o.positive("scale.interval", sc.Interval)
	if sc.ScaleUpCooldown < 0 {
		o.failAt("scale.scale_up_cooldown", "must not be negative, got %s", sc.ScaleUpCooldown)
	}
	if sc.ScaleDownWindow < 0 {
		o.failAt("scale.scale_down_window", "must not be negative, got %s", sc.ScaleDownWindow)
	}
	if sc.MaxStep < 0 {
		o.failAt("scale.max_step", "must not be negative (0: no limit), got %d", sc.MaxStep)
	}
	o.positive("scale.drain_timeout", sc.DrainTimeout)
	if s.Port == 0 && sc.PortsFrom == 0 {
		o.fail("port", []string{"scale"}, "is required with a scale block: instance i listens on port + i (or declare scale.ports)")
	}
	if sc.PortsFrom != 0 {
		if n := sc.PortsTo - sc.PortsFrom + 1; n < sc.Max {
			o.failAt("scale.ports", "holds %d ports (%d-%d): it needs at least max = %d", n, sc.PortsFrom, sc.PortsTo, sc.Max)
		}
		if s.Port != 0 && s.Port != sc.PortsFrom {
			o.failAt("scale.ports", "must start at port (%d): instance 0 is the service's own instance, got %d-%d", s.Port, sc.PortsFrom, sc.PortsTo)
		}
	} else if s.Port != 0 && s.Port+sc.Max-1 > 65535 {
		o.failAt("scale.max", "port %d + %d instances runs past 65535", s.Port, sc.Max)
	}
	v.router(o, "scale.router.", sc.Router)
	if sc.Router.Kind == RouterHAProxy && s.Traffic != nil && s.Traffic.Source == TrafficHAProxy && s.Traffic.Backend != sc.Router.Backend {
		o.failAt("scale.router.backend", "must be traffic.backend (%q): the instances' counters are read there", s.Traffic.Backend)
	}
}

// portsInUse lists every port a service's instances may listen on.
func (s *Service) portsInUse() []int {
	base := s.Ports()
	if s.Scale == nil || s.Scale.Max <= 1 {
		return base
	}
	var out []int
	if s.Scale.PortsFrom != 0 {
		for p := s.Scale.PortsFrom; p <= s.Scale.PortsTo && p <= 65535; p++ {
			out = append(out, p)
		}
		return out
	}
	for _, b := range base {
		for i := 0; i < s.Scale.Max && b+i <= 65535; i++ {
			out = append(out, b+i)
		}
	}
	return out
}

// portOverlaps reports the services whose instance ports collide.
func (v *validator) portOverlaps(services []*Service) {
	owner := map[int]*Service{}
	for _, s := range services {
		if s == nil {
			continue
		}
		for _, p := range s.portsInUse() {
			first, taken := owner[p]
			if !taken {
				owner[p] = s
				continue
			}
			if first == s || (s.Scale == nil && first.Scale == nil) {
				continue // checked elsewhere (blue/green ports differ), or not this check's concern
			}
			o := owner2(v, s)
			o.fail("scale", []string{"port"}, "port %d is used by service %q too: instances must not share ports (instance i listens on port + i, or declare scale.ports)", p, first.Name)
			return
		}
	}
}

func owner2(v *validator, s *Service) owner {
	return owner{v: v, prefix: serviceField(s.Name, ""), pos: s.pos}
}
