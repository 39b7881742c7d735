package rollout

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults of the gate and the deadline, as the operator CLI offers them.
const (
	DefaultMinHealthy    = 30 * time.Second
	DefaultMaxErrorRate  = 0.001 // 0.1%
	DefaultMaxAvgLatency = 200 * time.Millisecond
	DefaultDataTimeout   = 15 * time.Second
	// DefaultMinRequests is the real traffic a gate must see in its bake
	// before it may pass on the load balancer's counts.
	DefaultMinRequests      = 100
	DefaultProgressDeadline = 10 * time.Minute
)

// Errors of Plan, for callers that map them to status codes. Every error
// Plan returns wraps exactly one of them and says what to do next.
var (
	// ErrInvalid: the spec itself is wrong (syntax, ranges, contradictions).
	ErrInvalid = errors.New("invalid rollout spec")
	// ErrNoHosts: the spec selects no host.
	ErrNoHosts = errors.New("no hosts match")
	// ErrUnknownHost: the spec names a host the controller does not know.
	ErrUnknownHost = errors.New("unknown host")
	// ErrUnavailable: a selected host cannot take part (lost).
	ErrUnavailable = errors.New("host unavailable")
)

// Host is one agent as the planner needs it.
type Host struct {
	ID     string
	Labels map[string]string
	// Services the agent's config declares.
	Services []string
	// Lost is true when the agent's stream is gone (state "lost").
	Lost bool
	// Releases maps a service to the release the host runs now; a fleet
	// rollback puts exactly that release back.
	Releases map[string]string
}

func (h Host) runs(service string) bool {
	for _, s := range h.Services {
		if s == service {
			return true
		}
	}
	return false
}

// Gate is what a wave must show before the next one starts.
type Gate struct {
	// MinHealthy is the bake window: how long every touched host must stay
	// within the limits after the wave's last host finished. 0 is allowed
	// (one fresh healthy sample per host is still required).
	MinHealthy time.Duration `json:"min_healthy"`
	// MaxErrorRate is a fraction: 0.001 is 0.1%. A host's error rate must be
	// strictly below it.
	MaxErrorRate float64 `json:"max_error_rate"`
	// MaxAvgLatency: a host's average latency must be strictly below it.
	MaxAvgLatency time.Duration `json:"max_avg_latency"`
	// DataTimeout is how long after the bake window the gate waits for a
	// host's first sample taken after the window ended, before it counts
	// the host as having no data (and fails).
	DataTimeout time.Duration `json:"data_timeout"`
	// MinRequests is how many real requests (the load balancer's counts,
	// over every touched host with a router) a bake must see; fewer is
	// inconclusive: the rollout halts for a person, it never passes.
	MinRequests uint64 `json:"min_requests,omitempty"`
	// MaxErrorRatioVsStable, when positive, also fails a host whose new
	// slot's error rate is over this many times its stable slot's (and
	// over MaxErrorRate).
	MaxErrorRatioVsStable float64 `json:"max_error_ratio_vs_stable,omitempty"`
	// Analysis says the gate also needs the PromQL analysis to pass (the
	// executor runs it; see internal/analysis).
	Analysis bool `json:"analysis,omitempty"`
}

// DefaultGate returns the gate the CLI uses when no flag changes it.
func DefaultGate() Gate {
	return Gate{MinHealthy: DefaultMinHealthy, MaxErrorRate: DefaultMaxErrorRate,
		MaxAvgLatency: DefaultMaxAvgLatency, DataTimeout: DefaultDataTimeout, MinRequests: DefaultMinRequests}
}

// Spec is what the operator asked for.
type Spec struct {
	Service string
	Release string
	// Selector picks hosts by agent labels (all must match). Ignored when
	// Hosts is set; setting both is an error.
	Selector map[string]string
	// Hosts names the hosts explicitly.
	Hosts []string
	// Canary is the size of the first wave; 0 means no canary.
	Canary int
	// Batch is "N" hosts or "P%" of the selected fleet per wave after the
	// canary; "" means all remaining hosts in one wave.
	Batch            string
	Gate             Gate
	PauseAfterCanary bool
	// ProgressDeadline bounds each phase: preflight, each wave from its
	// start (or resume) until its gate passes, and the fleet rollback.
	ProgressDeadline time.Duration
}

// Wave is a set of hosts deployed together.
type Wave struct {
	Index int      `json:"index"`
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
}

// Kind says what a rollout does to its hosts.
type Kind string

// The kinds of rollout.
const (
	// KindDeploy puts a release on the hosts in waves, gated.
	KindDeploy Kind = "deploy"
	// KindRollback is the operator's rollback: every host at once back to
	// a release (its own previous one, or Schedule.ToRelease), optionally
	// restoring a database backup; allowed without an approval.
	KindRollback Kind = "rollback"
)

// Schedule is a validated plan: what a dry run prints and what a rollout
// executes. Plan and PlanRollback are the only constructors.
type Schedule struct {
	// Kind is KindDeploy ("" in records written before rollbacks were
	// rollouts) or KindRollback.
	Kind    Kind   `json:"kind,omitempty"`
	Service string `json:"service"`
	Release string `json:"release"`
	// ToRelease and RestoreBackupID are a rollback's target ("": each
	// host's previous release) and the database backup it restores.
	ToRelease       string `json:"to_release,omitempty"`
	RestoreBackupID string `json:"restore_backup_id,omitempty"`
	// Hosts are all the selected hosts, sorted.
	Hosts []string `json:"hosts"`
	// Waves in order: the canary (if any) first, then the batches.
	Waves            []Wave        `json:"waves"`
	Gate             Gate          `json:"gate"`
	PauseAfterCanary bool          `json:"pause_after_canary"`
	ProgressDeadline time.Duration `json:"progress_deadline"`
	// Previous maps each host to the release it ran when planned.
	Previous map[string]string `json:"previous,omitempty"`
	// DNS are the records the rollout changes: a deploy's --dns, set after
	// its last gate passed; a rollback's restores (see dns.go).
	DNS []DNSTarget `json:"dns,omitempty"`
}

// IsRollback reports whether the schedule is an operator's rollback.
func (s Schedule) IsRollback() bool { return s.Kind == KindRollback }

// RollbackSpec is an operator's rollback: hosts already chosen by the
// caller (every host of the service, or the named ones).
type RollbackSpec struct {
	Service          string
	Hosts            []string
	ToRelease        string
	RestoreBackupID  string
	ProgressDeadline time.Duration
}

// PlanRollback makes the schedule of an operator's rollback: one wave of
// every host, no gate (each agent health-checks what it put back).
func PlanRollback(spec RollbackSpec) (Schedule, error) {
	if spec.Service == "" {
		return Schedule{}, fmt.Errorf("%w: name the service (--service)", ErrInvalid)
	}
	if len(spec.Hosts) == 0 {
		return Schedule{}, fmt.Errorf("%w: no host to roll back", ErrNoHosts)
	}
	ids := clone(spec.Hosts)
	sort.Strings(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			return Schedule{}, fmt.Errorf("%w: host %q is named twice", ErrInvalid, ids[i])
		}
	}
	if spec.ProgressDeadline <= 0 {
		spec.ProgressDeadline = DefaultProgressDeadline
	}
	return Schedule{Kind: KindRollback, Service: spec.Service, ToRelease: spec.ToRelease, RestoreBackupID: spec.RestoreBackupID,
		Hosts: ids, Waves: []Wave{{Index: 0, Name: "all", Hosts: clone(ids)}}, Gate: DefaultGate(),
		ProgressDeadline: spec.ProgressDeadline}, nil
}

// HasCanary reports whether the first wave is a canary.
func (s Schedule) HasCanary() bool { return len(s.Waves) > 0 && s.Waves[0].Name == canaryName }

const canaryName = "canary"

// Plan selects the hosts of spec among hosts and cuts them into waves:
// the canary first, then batches, each sorted by host id. It is
// deterministic: the same input always gives the same schedule.
func Plan(hosts []Host, spec Spec) (Schedule, error) {
	if spec.Service == "" {
		return Schedule{}, fmt.Errorf("%w: name the service (--service)", ErrInvalid)
	}
	if err := validateParams(spec); err != nil {
		return Schedule{}, err
	}
	batch, err := ParseBatch(spec.Batch)
	if err != nil {
		return Schedule{}, err
	}
	selected, err := selectHosts(hosts, spec)
	if err != nil {
		return Schedule{}, err
	}
	ids := make([]string, len(selected))
	prev := map[string]string{}
	for i, h := range selected {
		ids[i] = h.ID
		if r := h.Releases[spec.Service]; r != "" {
			prev[h.ID] = r
		}
	}
	sort.Strings(ids)
	if spec.Canary > len(ids) {
		return Schedule{}, fmt.Errorf("%w: --canary %d is larger than the %d selected hosts (%s)",
			ErrInvalid, spec.Canary, len(ids), strings.Join(ids, ", "))
	}
	s := Schedule{Kind: KindDeploy, Service: spec.Service, Release: spec.Release, Hosts: ids, Gate: spec.Gate,
		PauseAfterCanary: spec.PauseAfterCanary, ProgressDeadline: spec.ProgressDeadline}
	if len(prev) > 0 {
		s.Previous = prev
	}
	rest := ids
	if spec.Canary > 0 {
		s.Waves = append(s.Waves, Wave{Index: 0, Name: canaryName, Hosts: clone(ids[:spec.Canary])})
		rest = ids[spec.Canary:]
	}
	size := batch.Size(len(ids))
	for n := 1; len(rest) > 0; n++ {
		k := min(size, len(rest))
		s.Waves = append(s.Waves, Wave{Index: len(s.Waves), Name: fmt.Sprintf("wave %d", n), Hosts: clone(rest[:k])})
		rest = rest[k:]
	}
	return s, nil
}

func validateParams(spec Spec) error {
	g := spec.Gate
	switch {
	case spec.Canary < 0:
		return fmt.Errorf("%w: --canary %d: use 0 (no canary) or more", ErrInvalid, spec.Canary)
	case g.MinHealthy < 0:
		return fmt.Errorf("%w: --min-healthy %s: use 0s or more", ErrInvalid, g.MinHealthy)
	case math.IsNaN(g.MaxErrorRate) || g.MaxErrorRate < 0 || g.MaxErrorRate >= 1:
		return fmt.Errorf("%w: --max-error-rate %v: use a rate from 0%% to below 100%% (e.g. 0.1%%)", ErrInvalid, g.MaxErrorRate)
	case g.MaxAvgLatency <= 0:
		return fmt.Errorf("%w: --max-avg-latency %s: use a positive duration (e.g. 200ms)", ErrInvalid, g.MaxAvgLatency)
	case math.IsNaN(g.MaxErrorRatioVsStable) || g.MaxErrorRatioVsStable < 0 || math.IsInf(g.MaxErrorRatioVsStable, 0):
		return fmt.Errorf("%w: --max-error-ratio-vs-stable %v: use 0 (off) or a positive ratio (e.g. 2)", ErrInvalid, g.MaxErrorRatioVsStable)
	case g.DataTimeout <= 0:
		return fmt.Errorf("%w: gate data timeout %s: use a positive duration (e.g. 15s)", ErrInvalid, g.DataTimeout)
	case spec.ProgressDeadline <= g.MinHealthy:
		return fmt.Errorf("%w: --progress-deadline %s must be longer than --min-healthy %s, or no wave could ever pass",
			ErrInvalid, spec.ProgressDeadline, g.MinHealthy)
	}
	return nil
}

func selectHosts(hosts []Host, spec Spec) ([]Host, error) {
	out, err := SelectHosts(hosts, spec.Service, spec.Hosts, spec.Selector)
	if err != nil {
		return nil, err
	}
	var lost []string
	for _, h := range out {
		if h.Lost {
			lost = append(lost, h.ID)
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		return nil, fmt.Errorf("%w: %s lost (no agent stream): bring them back or leave them out with --hosts or --selector",
			ErrUnavailable, quoteList(lost, "is", "are"))
	}
	return out, nil
}

// SelectHosts picks the hosts named (each must be known and run service)
// or, without names, every host running service whose labels match
// selector. Lost hosts are included: the caller decides what they mean (a
// rollout refuses them; preflight reports them).
func SelectHosts(hosts []Host, service string, names []string, selector map[string]string) ([]Host, error) {
	spec := Spec{Service: service, Hosts: names, Selector: selector}
	if len(spec.Hosts) > 0 && len(spec.Selector) > 0 {
		return nil, fmt.Errorf("%w: use --hosts or --selector, not both", ErrInvalid)
	}
	byID := make(map[string]Host, len(hosts))
	for _, h := range hosts {
		byID[h.ID] = h
	}
	var out []Host
	if len(spec.Hosts) > 0 {
		var unknown, lacking []string
		seen := map[string]bool{}
		for _, id := range spec.Hosts {
			if seen[id] {
				return nil, fmt.Errorf("%w: host %q is named twice", ErrInvalid, id)
			}
			seen[id] = true
			h, ok := byID[id]
			switch {
			case !ok:
				unknown = append(unknown, id)
			case !h.runs(spec.Service):
				lacking = append(lacking, id)
			default:
				out = append(out, h)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, fmt.Errorf("%w: %s not known to the controller (see `golive-controller agents`)",
				ErrUnknownHost, quoteList(unknown, "is", "are"))
		}
		if len(lacking) > 0 {
			sort.Strings(lacking)
			return nil, fmt.Errorf("%w: %s not run service %q (check the agents' configs or leave them out of --hosts)",
				ErrInvalid, quoteList(lacking, "does", "do"), spec.Service)
		}
	} else {
		for _, h := range hosts {
			if h.runs(spec.Service) && matches(h.Labels, spec.Selector) {
				out = append(out, h)
			}
		}
		if len(out) == 0 {
			what := fmt.Sprintf("no host runs service %q", spec.Service)
			if len(spec.Selector) > 0 {
				what += " with labels " + FormatSelector(spec.Selector)
			}
			return nil, fmt.Errorf("%w: %s (%d agents known; see `golive-controller agents`)", ErrNoHosts, what, len(hosts))
		}
	}
	return out, nil
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// quoteList says `host "a" is` or `hosts "a", "b" are` (with the verb given).
func quoteList(ids []string, one, many string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = strconv.Quote(id)
	}
	if len(q) == 1 {
		return "host " + q[0] + " " + one
	}
	return "hosts " + strings.Join(q, ", ") + " " + many
}

func clone(s []string) []string { return append([]string(nil), s...) }

// Batch is a parsed --batch: a host count or a percentage of the fleet.
// The zero Batch means "all remaining hosts in one wave".
type Batch struct {
	N       int `json:"n,omitempty"`
	Percent int `json:"percent,omitempty"`
}

// Size is the number of hosts per wave for a fleet of n hosts: N, or
// Percent of n rounded up (at least 1), or n for the zero Batch.
func (b Batch) Size(n int) int {
	switch {
	case b.N > 0:
		return b.N
	case b.Percent > 0:
		return max(1, (n*b.Percent+99)/100)
	}
	return max(1, n)
}

// ParseBatch parses "N" (hosts, N >= 1) or "P%" (1 <= P <= 100); "" is the
// zero Batch.
func ParseBatch(s string) (Batch, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Batch{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 100 {
			return Batch{}, fmt.Errorf("%w: --batch %q: use a whole percentage from 1%% to 100%% (e.g. 25%%)", ErrInvalid, s)
		}
		return Batch{Percent: n}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return Batch{}, fmt.Errorf("%w: --batch %q: use a host count of 1 or more (e.g. 5) or a percentage (e.g. 25%%)", ErrInvalid, s)
	}
	return Batch{N: n}, nil
}

// ParseRate parses an error rate: "0.1%" (percent) or "0.001" (fraction).
// It returns the fraction, from 0 to below 1.
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	p, percent := strings.CutSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
	if err == nil && percent {
		v /= 100
	}
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v >= 1 {
		return 0, fmt.Errorf("%w: error rate %q: use a percentage below 100%% (e.g. 0.1%%) or a fraction below 1 (e.g. 0.001)", ErrInvalid, s)
	}
	return v, nil
}

// ParseSelector parses "key=value,key2=value2". Empty input gives nil.
func ParseSelector(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: selector %q: use key=value pairs separated by commas (e.g. role=web,zone=a)", ErrInvalid, s)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: selector %q names label %q twice", ErrInvalid, s, k)
		}
		out[k] = v
	}
	return out, nil
}

// FormatSelector prints a selector as "k=v,k2=v2", keys sorted.
func FormatSelector(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + sel[k]
	}
	return strings.Join(keys, ",")
}
