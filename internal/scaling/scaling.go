// Package scaling is the policy of scaling a service by demand: pure
// functions from a service's scale block (its agent's config), its
// instances on one host and one measurement of demand to a recommendation.
// It does no I/O; the controller's leader (internal/controller/scaling.go)
// measures, calls Evaluate every interval, and acts on the decision only
// under a live approval.
//
// The unit is one service on one host: each host's router fronts that
// host's own instances, so the demand a host's instances share is the
// demand of that host, and a ScaleAction is per host.
//
// One evaluation:
//
//	demand missing, stale or failed ------------------------> Hold (nothing changes, no sample kept)
//	per   = total / serving instances
//	ratio = per / target
//	raw   = current                  when |ratio - 1| <= tolerance
//	        ceil(serving x per / target) otherwise, clamped to [min, max]
//	history += raw (run-length, kept for the scale-down window)
//	rec   = raw                      when raw >= current
//	        max(history in window)   otherwise (the highest recommendation wins)
//	rec == current --------------------------------------------> None
//	agent still converging (instances starting, draining) -----> Hold
//	rec >  current: within the scale-up cooldown --------------> Hold
//	                else Up,   at most max_step
//	rec <  current: Down, at most max_step
//
// Invariants (tested as properties): a decision's To is within [min, max]
// or equal to current; |To - current| <= max_step; without a usable
// measurement To == current; a Down's To is at least every recommendation
// of the window; an Up never falls within the cooldown of the last.
package scaling

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Defaults of a scale block's optional fields (agentconfig's defaults).
const (
	DefaultTolerance  = 0.1
	DefaultInterval   = 15 * time.Second
	DefaultDownWindow = 300 * time.Second
	DefaultUpCooldown = 60 * time.Second
)

// Metric is the kind of demand a policy targets.
type Metric string

// The metrics.
const (
	// RPS is the real traffic's requests per second (the load balancer's
	// counts of the serving slot).
	RPS Metric = "rps"
	// CPU is the instances' CPU use in cores.
	CPU Metric = "cpu"
	// Query is the value of a PromQL query for the service on the host.
	Query Metric = "query"
)

// Unit is how the metric's figures are shown.
func (m Metric) Unit() string {
	switch m {
	case RPS:
		return "rps"
	case CPU:
		return "cores"
	}
	return ""
}

// Policy is a service's scale block, with defaults applied.
type Policy struct {
	Min, Max int
	Metric   Metric
	// Target is the demand one instance is sized for.
	Target float64
	// Query is the PromQL expression (Metric Query); its value is the
	// demand of all of the host's instances together.
	Query      string
	Tolerance  float64
	Interval   time.Duration
	UpCooldown time.Duration
	DownWindow time.Duration
	// MaxStep bounds the instances added or removed per action (0: none).
	MaxStep int
}

// FromProto is the policy of an agent's reported scale block.
func FromProto(sp *golivev1.ScalePolicy) (Policy, error) {
	if sp == nil {
		return Policy{}, errors.New("no scale block")
	}
	p := Policy{Min: int(sp.Min), Max: int(sp.Max), Tolerance: sp.Tolerance, MaxStep: int(sp.MaxStep),
		Interval: sp.GetInterval().AsDuration(), UpCooldown: sp.GetScaleUpCooldown().AsDuration(), DownWindow: sp.GetScaleDownWindow().AsDuration()}
	if sp.Interval == nil {
		p.Interval = DefaultInterval
	}
	if sp.ScaleUpCooldown == nil {
		p.UpCooldown = DefaultUpCooldown
	}
	if sp.ScaleDownWindow == nil {
		p.DownWindow = DefaultDownWindow
	}
	if p.Tolerance == 0 {
		p.Tolerance = DefaultTolerance
	}
	switch {
	case sp.TargetRps > 0:
		p.Metric, p.Target = RPS, sp.TargetRps
	case sp.TargetCpu > 0:
		p.Metric, p.Target = CPU, sp.TargetCpu
	case sp.Query != "":
		p.Metric, p.Target, p.Query = Query, sp.TargetValue, sp.Query
	}
	return p, p.Validate()
}

// Validate names the field that is wrong.
func (p Policy) Validate() error {
	var errs []error
	if p.Min < 1 {
		errs = append(errs, fmt.Errorf("scale.min %d: must be at least 1", p.Min))
	}
	if p.Max < p.Min {
		errs = append(errs, fmt.Errorf("scale.max %d: must be at least min (%d)", p.Max, p.Min))
	}
	if p.Metric == "" {
		errs = append(errs, errors.New("scale: no target (target_rps, target_cpu, or query with target_value)"))
	} else if !(p.Target > 0) || math.IsInf(p.Target, 0) {
		errs = append(errs, fmt.Errorf("scale: target %v of %s must be positive", p.Target, p.Metric))
	}
	if p.Tolerance < 0 || p.Tolerance >= 1 {
		errs = append(errs, fmt.Errorf("scale.tolerance %v: must be in [0, 1)", p.Tolerance))
	}
	if p.Interval <= 0 {
		errs = append(errs, fmt.Errorf("scale.interval %s: must be positive", p.Interval))
	}
	if p.UpCooldown < 0 || p.DownWindow < 0 || p.MaxStep < 0 {
		errs = append(errs, errors.New("scale: cooldown, window and max_step must not be negative"))
	}
	return errors.Join(errs...)
}

// Demand is one measurement of the demand on a service's instances on
// one host.
type Demand struct {
	// Total is the demand of all serving instances together (requests per
	// second, cores, or the query's value).
	Total float64
	// Missing, when set, says why there is no usable measurement: none
	// yet, stale, or the source failed. Such a demand never scales.
	Missing string
}

// Input is what one evaluation sees.
type Input struct {
	Now time.Time
	// Current is the count the agent runs or converges to.
	Current int
	// Serving is how many instances serve (healthy, in the router): the
	// ones the demand is spread over (0: Current is used).
	Serving int
	// Converging, when set, says why the agent is not settled (an
	// instance starting or draining): no action until it is.
	Converging string
	Demand     Demand
}

// Point is a recommendation that held from Since until the next point.
type Point struct {
	Since     time.Time `json:"since"`
	Instances int       `json:"instances"`
}

// State is what evaluations carry forward for one service on one host.
type State struct {
	// History is the run-length list of raw recommendations, oldest
	// first, pruned to the scale-down window.
	History []Point `json:"history,omitempty"`
	// LastUp and LastDown are the last actions' times.
	LastUp   time.Time `json:"last_up,omitzero"`
	LastDown time.Time `json:"last_down,omitzero"`
}

// Action is what a decision says to do.
type Action string

// The actions.
const (
	None Action = "none"
	Up   Action = "scale_up"
	Down Action = "scale_down"
	Hold Action = "hold"
)

// Decision is one evaluation's outcome.
type Decision struct {
	Action Action
	// From is the current count; To is the count to set (From unless Up or
	// Down).
	From, To int
	// Recommended is the stabilised recommendation (before the cooldown
	// and max_step; From when no measurement).
	Recommended int
	// Raw is ceil(serving x per / target) clamped (From when within the
	// tolerance or without a measurement).
	Raw int
	// Total, PerInstance and Ratio are the figures that caused it.
	Total, PerInstance, Ratio float64
	Reason                    string
}

// Evaluate decides once. It returns the state to carry forward.
func Evaluate(p Policy, st State, in Input) (State, Decision) {
	d := Decision{Action: Hold, From: in.Current, To: in.Current, Recommended: in.Current, Raw: in.Current}
	next := State{History: slices.Clone(st.History), LastUp: st.LastUp, LastDown: st.LastDown}
	dm := in.Demand
	if dm.Missing == "" && (math.IsNaN(dm.Total) || math.IsInf(dm.Total, 0) || dm.Total < 0) {
		dm.Missing = fmt.Sprintf("the metric's value %v is not a demand", dm.Total)
	}
	if dm.Missing != "" {
		d.Reason = "no scaling: " + dm.Missing + " (a missing, stale or failed metric never scales)"
		return next, d
	}
	base := in.Serving
	if base <= 0 {
		base = max(in.Current, 1)
	}
	d.Total, d.PerInstance = dm.Total, dm.Total/float64(base)
	d.Ratio = d.PerInstance / p.Target
	unit := p.Metric.Unit()
	figures := fmt.Sprintf("%s %s over %d serving = %s/instance, target %s (ratio %.2f)",
		num(d.Total), unit, base, num(d.PerInstance), num(p.Target), d.Ratio)
	raw := in.Current
	within := math.Abs(d.Ratio-1) <= p.Tolerance
	if !within {
		raw = int(math.Ceil(float64(base)*d.PerInstance/p.Target - 1e-9))
	}
	raw = min(max(raw, p.Min), p.Max)
	d.Raw = raw
	next.History = record(next.History, in.Now, raw, p.DownWindow)
	rec := raw
	if raw < in.Current {
		rec = max(rec, windowMax(next.History))
	}
	d.Recommended = rec
	switch {
	case rec == in.Current && within:
		d.Action, d.Reason = None, figures+": within the tolerance "+num(p.Tolerance)
		return next, d
	case rec == in.Current && raw < in.Current:
		d.Action, d.Reason = None, fmt.Sprintf("%s: %d would do, but the highest recommendation of the last %s is %d", figures, raw, p.DownWindow, rec)
		return next, d
	case rec == in.Current:
		d.Action, d.Reason = None, fmt.Sprintf("%s: %d instances are right", figures, rec)
		return next, d
	case in.Converging != "":
		d.Reason = fmt.Sprintf("%s: %d recommended, held: %s", figures, rec, in.Converging)
		return next, d
	case rec > in.Current:
		if !st.LastUp.IsZero() && in.Now.Sub(st.LastUp) < p.UpCooldown {
			d.Reason = fmt.Sprintf("%s: %d recommended, held: scale-up cooldown until %s", figures, rec,
				st.LastUp.Add(p.UpCooldown).UTC().Format(time.RFC3339))
			return next, d
		}
		d.Action, d.To = Up, rec
		if p.MaxStep > 0 {
			d.To = min(rec, in.Current+p.MaxStep)
		}
	default:
		d.Action, d.To = Down, rec
		if p.MaxStep > 0 {
			d.To = max(rec, in.Current-p.MaxStep)
		}
	}
	d.Reason = fmt.Sprintf("%s: ceil(%d x %s / %s) = %d", figures, base, num(d.PerInstance), num(p.Target), raw)
	if d.Action == Down {
		d.Reason += fmt.Sprintf(", the highest of the last %s", p.DownWindow)
	}
	if d.To != rec {
		d.Reason += fmt.Sprintf(", %d -> %d (max_step %d)", in.Current, d.To, p.MaxStep)
	} else {
		d.Reason += fmt.Sprintf(", %d -> %d", in.Current, d.To)
	}
	return next, d
}

// Acted is st after an action of d was written at at: the cooldown starts
// (scale-up). An operator's count is recorded too (SetByOperator).
func Acted(st State, d Decision, at time.Time) State {
	switch d.Action {
	case Up:
		st.LastUp = at
	case Down:
		st.LastDown = at
	}
	return st
}

// SetByOperator is st after an operator set the count from `from` to n:
// n enters the window as a recommendation (so automation does not take
// it back down before the window passed) and an increase starts the
// cooldown.
func SetByOperator(p Policy, st State, from, n int, at time.Time) State {
	st.History = record(slices.Clone(st.History), at, n, p.DownWindow)
	if n > from {
		st.LastUp = at
	} else if n < from {
		st.LastDown = at
	}
	return st
}

// WindowMax is the highest recommendation of st's window (0: none).
func (st State) WindowMax() int { return windowMax(st.History) }

// record appends n at now (merged with an equal last point) and drops the
// points whose span ended before now - window.
func record(h []Point, now time.Time, n int, window time.Duration) []Point {
	if len(h) == 0 || h[len(h)-1].Instances != n {
		if len(h) > 0 && now.Before(h[len(h)-1].Since) {
			now = h[len(h)-1].Since // a clock step back: keep order
		}
		h = append(h, Point{Since: now, Instances: n})
	}
	cut := now.Add(-window)
	// Point i spans [Since_i, Since_i+1): drop it when Since_i+1 <= cut.
	drop := 0
	for drop < len(h)-1 && !h[drop+1].Since.After(cut) {
		drop++
	}
	return h[drop:]
}

func windowMax(h []Point) int {
	m := 0
	for _, p := range h {
		m = max(m, p.Instances)
	}
	return m
}

// num formats a figure compactly: 50, 62.5, 0.35.
func num(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
