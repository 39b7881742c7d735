package dnsfailover

import (
	"fmt"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
)

// Verdict is a pool's health at one check.
type Verdict string

// Verdicts.
const (
	Healthy   Verdict = "healthy"
	Unhealthy Verdict = "unhealthy"
	// Unknown: no data (no agent reported, too little traffic). Never good.
	Unknown Verdict = "unknown"
)

// Health is one pool's verdict at one check, with the figures behind it
// ("2/3 hosts healthy; error rate 4.1% over 812 requests"), which go to the
// audit log with any switch they cause.
type Health struct {
	Verdict Verdict `json:"verdict"`
	Reason  string  `json:"reason,omitempty"`
}

// Check is one judgement of both pools.
type Check struct {
	At        time.Time `json:"at"`
	Primary   Health    `json:"primary"`
	Secondary Health    `json:"secondary"`
}

// Policy is one record's failover configuration.
type Policy struct {
	// Name is the record ("www.example.test."); Type is "A" or "AAAA".
	Name      string
	Type      string
	Primary   string
	Secondary string
	// Threshold consecutive bad checks move the record to the secondary.
	Threshold int
	// Interval is the time between checks.
	Interval time.Duration
	// AutoFailback: return after HoldDown of good checks; else recommend.
	AutoFailback bool
	HoldDown     time.Duration
}

// PolicyFrom builds the policy of a validated config's failover.
func PolicyFrom(f *dnsconfig.Failover) Policy {
	return Policy{
		Name: f.Name, Type: string(f.Type), Primary: f.Primary, Secondary: f.Secondary,
		Threshold: f.Check.Threshold, Interval: f.Check.Interval,
		AutoFailback: f.Failback == dnsconfig.FailbackAuto, HoldDown: f.HoldDown,
	}
}

// MaxGap is the longest time between two checks that keeps a streak.
func (p Policy) MaxGap() time.Duration { return 3 * p.Interval }

// Command is the operator command that moves the record to pool.
func (p Policy) Command(pool string) string {
	return fmt.Sprintf("golive-controller dns failover %s --to %s", p.Name, pool)
}

// State is one record's failover state, stored by the leader (JSON).
type State struct {
	// Active is the pool the record publishes ("" = the primary, before
	// any switch).
	Active string `json:"active,omitempty"`
	// Pinned: an operator moved the record off its primary; automation
	// only recommends until an operator moves it back.
	Pinned bool `json:"pinned,omitempty"`
	// Blocked, when set, says why automation may not switch this record
	// (the executor's update found the record changed by someone else):
	// it recommends until a switch is applied (an operator's).
	Blocked string `json:"blocked,omitempty"`
	// LastCheck is the time of the last check taken into account.
	LastCheck time.Time `json:"last_check,omitzero"`
	// Bad counts consecutive checks with the primary not healthy, since
	// BadSince.
	Bad      int       `json:"bad,omitempty"`
	BadSince time.Time `json:"bad_since,omitzero"`
	// Good counts consecutive checks with the primary healthy, since
	// GoodSince.
	Good      int       `json:"good,omitempty"`
	GoodSince time.Time `json:"good_since,omitzero"`
	// Recommended is the pool last recommended (without approval), so the
	// caller alerts once per recommendation; "" when none stands.
	Recommended string `json:"recommended,omitempty"`
	// LastSwitch and Switches record applied switches.
	LastSwitch time.Time `json:"last_switch,omitzero"`
	Switches   int       `json:"switches,omitempty"`
}

// active returns the active pool, defaulting to the primary.
func (s State) active(p Policy) string {
	if s.Active == "" {
		return p.Primary
	}
	return s.Active
}

// Action is what the caller should do.
type Action string

// Actions.
const (
	// None: nothing to do.
	None Action = "none"
	// Switch: move the record to Decision.To now (a live approval exists).
	Switch Action = "switch"
	// Recommend: the record should move to Decision.To but automation may
	// not do it (no live approval, manual failback, or pinned): alert with
	// Decision.Command; change nothing.
	Recommend Action = "recommend"
	// Hold: the primary is failing but the secondary is not healthy
	// either: switch nothing, alert.
	Hold Action = "hold"
)

// Kind says which way a switch goes.
type Kind string

// Kinds.
const (
	Failover Kind = "failover" // primary -> secondary
	Failback Kind = "failback" // secondary -> primary
)

// Decision is the outcome of one check.
type Decision struct {
	Action Action `json:"action"`
	Kind   Kind   `json:"kind,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	// Reason says why, with the figures, for the audit log and the alert.
	Reason string `json:"reason,omitempty"`
	// Command is the operator command that makes the switch by hand.
	Command string `json:"command,omitempty"`
	// Repeat: the same recommendation was made at an earlier check (the
	// caller already alerted).
	Repeat bool `json:"repeat,omitempty"`
	// Ignored: the check was at or before the last one, and not counted.
	Ignored bool `json:"ignored,omitempty"`
}

// Step takes one check into account. approved says whether a live
// automation approval exists now (the executor's fencing token is valid).
// It returns the next state and what to do; a Switch is applied by the
// caller, who then records it with Applied.
func Step(p Policy, s State, c Check, approved bool) (State, Decision) {
	if !s.LastCheck.IsZero() && !c.At.After(s.LastCheck) {
		return s, Decision{Action: None, Ignored: true, Reason: fmt.Sprintf("check at %s is not after the last one (%s)", c.At.Format(time.RFC3339Nano), s.LastCheck.Format(time.RFC3339Nano))}
	}
	threshold := max(p.Threshold, 2) // whatever the caller passed
	if !s.LastCheck.IsZero() && p.Interval > 0 && c.At.Sub(s.LastCheck) > p.MaxGap() {
		// Stale evidence: start counting again.
		s.Bad, s.BadSince, s.Good, s.GoodSince = 0, time.Time{}, 0, time.Time{}
	}
	s.LastCheck = c.At
	if c.Primary.Verdict == Healthy {
		if s.Good == 0 {
			s.GoodSince = c.At
		}
		s.Good++
		s.Bad, s.BadSince = 0, time.Time{}
	} else {
		if s.Bad == 0 {
			s.BadSince = c.At
		}
		s.Bad++
		s.Good, s.GoodSince = 0, time.Time{}
	}

	var d Decision
	active := s.active(p)
	switch {
	case active == p.Primary && s.Bad >= threshold:
		d = Decision{Kind: Failover, From: p.Primary, To: p.Secondary, Command: p.Command(p.Secondary)}
		reason := fmt.Sprintf("primary pool %s not healthy on %d consecutive checks since %s (last: %s)", p.Primary, s.Bad, s.BadSince.Format(time.RFC3339), describe(c.Primary))
		switch {
		case c.Secondary.Verdict != Healthy:
			d.Action, d.Command = Hold, ""
			d.Reason = reason + fmt.Sprintf("; secondary pool %s is not healthy either (%s): not switching", p.Secondary, describe(c.Secondary))
		case s.Pinned:
			d.Action, d.Reason = Recommend, reason+"; the record is pinned by an operator"
		case s.Blocked != "":
			d.Action, d.Reason = Recommend, reason+"; automation is blocked: "+s.Blocked
		case !approved:
			d.Action, d.Reason = Recommend, reason+"; no live automation approval: not switching"
		default:
			d.Action, d.Reason = Switch, reason
		}
	case active == p.Secondary && s.Good >= threshold && c.At.Sub(s.GoodSince) >= p.HoldDown:
		d = Decision{Kind: Failback, From: p.Secondary, To: p.Primary, Command: p.Command(p.Primary)}
		reason := fmt.Sprintf("primary pool %s healthy on %d consecutive checks for %s (hold-down %s; last: %s)", p.Primary, s.Good, c.At.Sub(s.GoodSince), p.HoldDown, describe(c.Primary))
		switch {
		case s.Pinned:
			d.Action, d.Reason = Recommend, reason+"; the record is pinned by an operator"
		case !p.AutoFailback:
			d.Action, d.Reason = Recommend, reason+"; failback is manual"
		case s.Blocked != "":
			d.Action, d.Reason = Recommend, reason+"; automation is blocked: "+s.Blocked
		case !approved:
			d.Action, d.Reason = Recommend, reason+"; no live automation approval: not switching"
		default:
			d.Action, d.Reason = Switch, reason
		}
	default:
		d = Decision{Action: None}
	}
	if d.Action == Recommend {
		d.Repeat = s.Recommended == d.To
		s.Recommended = d.To
	} else {
		s.Recommended = ""
	}
	return s, d
}

// Source says who made a switch.
type Source string

// Sources.
const (
	Automatic Source = "automatic" // the executor, under an approval
	Operator  Source = "operator"  // `golive-controller dns failover`
)

// Applied records that the record now publishes pool to (confirmed by
// query), at time at, switched by src. Streaks restart: the new active
// pool must earn its next switch from fresh checks.
func Applied(p Policy, s State, to string, at time.Time, src Source) State {
	if to != s.active(p) {
		s.Switches++
		s.LastSwitch = at
	}
	s.Active = to
	if to == p.Primary {
		s.Active = ""
	}
	switch {
	case src == Operator:
		s.Pinned = to != p.Primary
	case to == p.Primary:
		s.Pinned = false
	}
	s.Bad, s.BadSince, s.Good, s.GoodSince = 0, time.Time{}, 0, time.Time{}
	s.Recommended, s.Blocked = "", ""
	return s
}

// Block stops automation from switching the record (it recommends
// instead) until a switch is applied: the executor calls it when its
// update was refused because someone else changed the record, so it does
// not retry against records it does not know.
func Block(s State, reason string) State {
	s.Blocked = reason
	return s
}

// Active is the pool the record publishes in state s.
func Active(p Policy, s State) string { return s.active(p) }

func describe(h Health) string {
	if h.Reason == "" {
		return string(h.Verdict)
	}
	return string(h.Verdict) + ": " + h.Reason
}
