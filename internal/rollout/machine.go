package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Observation is what the executor saw since the last step: the approval,
// the agents' results and health, and the operator's requests.
type Observation struct {
	Approval  Approval
	Preflight PreflightResult
	// Analysis is the current bake's PromQL analysis (when the gate has
	// one): pending until it passed or failed.
	Analysis PreflightResult
	// Hosts is keyed by host id. A host missing from it has no result, no
	// health data and is not lost.
	Hosts map[string]HostObservation
	// DNS is what the executor knows of each Plan.DNS change, index for
	// index (shorter or nil: nothing known).
	DNS []DNSObservation
	// Pause, Resume and Abort are the operator's requests received since
	// the last step. The executor deletes them in the transaction that
	// stores the State Next returned.
	Pause, Resume, Abort bool
}

// Approval is the live approval as the executor sees it.
type Approval struct {
	Active bool
	// Token is the live approval's fencing token (0 when none).
	Token int64
	// Expired says the last approval ended by expiry, not by revoke.
	Expired bool
}

// PreflightResult is the outcome of the latest RunPreflight: pending,
// succeeded or failed (with the reason).
type PreflightResult struct {
	Result Result
	Reason string
}

// HostObservation is one host as the executor sees it.
type HostObservation struct {
	// Result is the outcome of the host's command named by
	// State.Hosts[id].Command; Error its error, if any.
	Result Result
	Error  string
	// Unchanged: the deploy failed before it changed anything on the host.
	Unchanged bool
	// Serving is the release the host last reported serving for the
	// rollout's service ("" when unknown).
	Serving string
	// RollbackResult is the outcome of the command named by
	// State.Hosts[id].Rollback; RollbackRelease the release it put back.
	RollbackResult  Result
	RollbackRelease string
	// Lost: the host's agent stream is gone.
	Lost   bool
	Health Health
	// Traffic is the load balancer's count of real requests to the slot
	// that runs the rollout's release (and Stable, to the other slot).
	Traffic, Stable Traffic
}

// Traffic is a window of the load balancer's counts for one slot.
type Traffic struct {
	// HasData: the host's service has a router whose counts the agent
	// reads (source "haproxy" or "nginx"); without it the gate judges the
	// agent's probe alone.
	HasData    bool
	Source     string
	Requests   uint64
	Errors     uint64
	AvgLatency time.Duration
	// ObservedAt is when the agent read the counts.
	ObservedAt time.Time
	// Err is why the last read failed (stale figures).
	Err string
}

// ErrorRate is Errors/Requests (0 without requests).
func (t Traffic) ErrorRate() float64 {
	if t.Requests == 0 {
		return 0
	}
	return float64(t.Errors) / float64(t.Requests)
}

// Health is the agent's latest sliding health window of the service.
type Health struct {
	HasData    bool
	Requests   uint64
	Errors     uint64
	AvgLatency time.Duration
	// ObservedAt is when the agent took the window (its last probe).
	ObservedAt time.Time
}

// ErrorRate is Errors/Requests (0 without requests).
func (h Health) ErrorRate() float64 {
	if h.Requests == 0 {
		return 0
	}
	return float64(h.Errors) / float64(h.Requests)
}

// Action is work Next asks the executor to do, in order, in the same etcd
// transaction that stores the returned State.
type Action interface{ action() }

// Command names one host command to write.
type Command struct {
	Host string
	ID   string
}

// RunPreflight asks every host of the rollout for its pre-live checks.
type RunPreflight struct{ Hosts []string }

// StartWave commands the listed hosts of wave Wave to deploy the release.
// Each command carries the rollout's fencing token (State.Token).
type StartWave struct {
	Wave     int
	Name     string
	Commands []Command
}

// Hosts lists the commanded hosts.
func (a StartWave) Hosts() []string {
	out := make([]string, len(a.Commands))
	for i, c := range a.Commands {
		out[i] = c.Host
	}
	return out
}

// RollbackTarget is one host to put back to ToRelease ("" means the
// agent's previous release).
type RollbackTarget struct {
	Host      string
	ID        string
	ToRelease string
}

// RollBack commands hosts back, all at once. Operator is true for an
// abort or an operator's rollback: the executor writes it as the
// operator's audited rollback (unfenced, allowed without approval);
// otherwise it is the automatic rollback, fenced on State.Token.
// RestoreBackupID, when set, restores that database backup too.
type RollBack struct {
	RestoreBackupID string
	Reason          string
	Operator        bool
	Targets         []RollbackTarget
}

// Halt says the rollout stopped starting new steps.
type Halt struct {
	Kind   HaltKind
	Reason string
}

// Finish says the rollout reached the terminal Phase: close its record,
// release the service's one-rollout lock, count the outcome.
type Finish struct {
	Phase  Phase
	Reason string
}

// EventKind names a notification.
type EventKind string

// The notifications: one per transition (plus resume_refused).
const (
	EventStarted       EventKind = "rollout_started"
	EventWaveStarted   EventKind = "wave_started"
	EventWavePassed    EventKind = "wave_passed"
	EventGateFailed    EventKind = "gate_failed"
	EventRollingBack   EventKind = "rolling_back"
	EventRolledBack    EventKind = "rolled_back"
	EventSucceeded     EventKind = "succeeded"
	EventFailed        EventKind = "failed"
	EventHalted        EventKind = "halted"
	EventResumed       EventKind = "resumed"
	EventResumeRefused EventKind = "resume_refused"
	EventAborted       EventKind = "aborted"
)

// EmitEvent is a notification for webhooks, watch and the audit log.
type EmitEvent struct {
	Kind   EventKind
	Wave   int
	Reason string
}

func (RunPreflight) action() {}
func (StartWave) action()    {}
func (RollBack) action()     {}
func (Halt) action()         {}
func (Finish) action()       {}
func (EmitEvent) action()    {}

// Next is one reconcile step: from the stored State and what was observed
// at now, it returns the State to store and the actions to take. It is
// pure: the same input gives the same output, and r is not modified. A
// terminal State comes back unchanged, with no action.
func Next(r State, obs Observation, now time.Time) (State, []Action) {
	if r.Phase.Terminal() {
		return r, nil
	}
	s := r.clone()
	m := &machine{s: &s, obs: obs, now: now}
	m.record()
	m.step()
	if len(m.actions) > 0 || !sameState(r, s) {
		s.UpdatedAt = now
	}
	return s, m.actions
}

func sameDNS(a, b DNSResult) bool {
	return a.Result == b.Result && a.Error == b.Error && a.At.Equal(b.At) && slices.Equal(a.Before, b.Before) && slices.Equal(a.After, b.After)
}

func sameState(a, b State) bool {
	if a.Phase != b.Phase || a.Step != b.Step || a.Wave != b.Wave || a.Seq != b.Seq || a.Token != b.Token {
		return false
	}
	for id, h := range a.Hosts {
		if b.Hosts[id] != h {
			return false
		}
	}
	if len(a.DNS) != len(b.DNS) {
		return false
	}
	for i := range a.DNS {
		if !sameDNS(a.DNS[i].Set, b.DNS[i].Set) || !sameDNS(a.DNS[i].Undo, b.DNS[i].Undo) {
			return false
		}
	}
	return true
}

type machine struct {
	s       *State
	obs     Observation
	now     time.Time
	actions []Action
}

func (m *machine) do(a ...Action) { m.actions = append(m.actions, a...) }

func (m *machine) event(k EventKind, reason string) {
	m.do(EmitEvent{Kind: k, Wave: m.s.Wave, Reason: reason})
}

func (m *machine) nextID() string {
	id := fmt.Sprintf("%s-%d", m.s.ID, m.s.Seq)
	m.s.Seq++
	return id
}

// record copies the final results the executor saw into the State. A
// final result is never overwritten by a pending one.
func (m *machine) record() {
	for id, h := range m.s.Hosts {
		o := m.obs.Hosts[id]
		changed := false
		if h.Touched() && !h.Result.Final() && o.Result.Final() {
			h.Result, h.Error, changed = o.Result, o.Error, true
			h.Unchanged = o.Unchanged && o.Result == ResultFailed
		}
		if h.Rollback != "" && !h.RollbackResult.Final() && o.RollbackResult.Final() {
			h.RollbackResult, h.RolledBackTo, changed = o.RollbackResult, o.RollbackRelease, true
			if o.Error != "" {
				h.Error = o.Error
			}
		}
		if changed {
			m.s.Hosts[id] = h
		}
	}
	m.recordDNS()
}

func (m *machine) approved() bool {
	return m.obs.Approval.Active && m.obs.Approval.Token == m.s.Token
}

func (m *machine) step() {
	s := m.s
	switch s.Phase {
	case PhasePending:
		switch {
		case s.Plan.IsRollback():
			// The operator's rollback: allowed without approval, every
			// host at once.
			m.event(EventStarted, "")
			m.operatorRollback()
		case m.obs.Abort:
			m.abort()
		case !m.approved():
			m.haltNoApproval()
		case m.obs.Pause:
			// Taken before the rollout started: it stops here (the
			// request is consumed with this step; ignoring it lost it).
			m.halt(HaltPaused, "paused by the operator: resume to continue")
		default:
			s.Phase, s.PhaseStart = PhasePreflight, m.now
			m.event(EventStarted, "")
			m.do(RunPreflight{Hosts: clone(s.Plan.Hosts)})
		}
	case PhasePreflight:
		m.preflight()
	case PhaseCanary, PhaseWave, PhaseValidating:
		m.wave()
	case PhaseHalted:
		m.halted()
	case PhaseRollingBack:
		m.rollingBack()
	}
}

func (m *machine) preflight() {
	s := m.s
	switch {
	case m.obs.Abort:
		m.abort()
	case !m.approved():
		m.haltNoApproval()
	case m.obs.Pause:
		m.halt(HaltPaused, "paused by the operator: resume to continue")
	case m.obs.Preflight.Result == ResultFailed:
		m.finish(PhaseFailed, "preflight failed: "+orUnknown(m.obs.Preflight.Reason))
	case m.obs.Preflight.Result == ResultSucceeded:
		m.enterWave(0)
	case m.now.Sub(s.PhaseStart) > s.Plan.ProgressDeadline:
		m.finish(PhaseFailed, fmt.Sprintf("preflight did not finish within the progress deadline (%s)", s.Plan.ProgressDeadline))
	}
}

// enterWave starts wave i from scratch (or from where it stopped).
func (m *machine) enterWave(i int) {
	s := m.s
	s.Wave, s.Step, s.PhaseStart, s.BakeStart = i, StepDeploying, m.now, time.Time{}
	s.Phase = PhaseWave
	if s.Plan.HasCanary() && i == 0 {
		s.Phase = PhaseCanary
	}
	m.dispatch()
	m.wave()
}

// dispatch commands each host of the current wave that has no command, or
// whose command was cancelled under an approval that has since ended. A
// host with a pending, succeeded or failed command is never commanded again.
func (m *machine) dispatch() {
	s := m.s
	w := s.Plan.Waves[s.Wave]
	var cmds []Command
	for _, id := range w.Hosts {
		h := s.Hosts[id]
		if h.Touched() && (h.Result != ResultCancelled || h.Token == s.Token) {
			continue
		}
		h.Command, h.Token, h.Result, h.Error = m.nextID(), s.Token, ResultPending, ""
		h.Commands++
		s.Hosts[id] = h
		cmds = append(cmds, Command{Host: id, ID: h.Command})
	}
	if len(cmds) > 0 {
		m.event(EventWaveStarted, "")
		m.do(StartWave{Wave: w.Index, Name: w.Name, Commands: cmds})
	}
}

func (m *machine) wave() {
	s := m.s
	switch {
	case m.obs.Abort:
		m.abort()
		return
	case !m.approved():
		m.haltNoApproval()
		return
	case m.obs.Pause:
		m.halt(HaltPaused, "paused by the operator: resume to continue")
		return
	}
	if s.Step == StepDNS {
		m.dnsStep()
		return
	}
	if reason := m.brokenHost(); reason != "" {
		m.gateFailed(reason)
		return
	}
	if s.Step == StepDeploying {
		m.dispatch()
		if m.waveDone() {
			s.Step, s.BakeStart = StepBaking, m.now
			if s.Wave == len(s.Plan.Waves)-1 {
				s.Phase = PhaseValidating
			}
		}
	}
	if s.Step == StepBaking {
		passed, reason := m.gate()
		if reason != "" {
			m.gateFailed(reason)
			return
		}
		if passed {
			m.passed()
			return
		}
		if s.Phase == PhaseHalted {
			return // inconclusive: a person decides
		}
	}
	if m.now.Sub(s.PhaseStart) > s.Plan.ProgressDeadline {
		m.gateFailed(fmt.Sprintf("progress deadline (%s) exceeded in %s: %s",
			s.Plan.ProgressDeadline, s.Plan.Waves[s.Wave].Name, m.progress()))
	}
}

// brokenHost fails closed on any touched host that is lost, whose step
// failed, or whose command was refused under the live approval.
func (m *machine) brokenHost() string {
	for _, id := range m.s.Touched() {
		h, o := m.s.Hosts[id], m.obs.Hosts[id]
		switch {
		case o.Lost:
			return fmt.Sprintf("host %s is lost", id)
		case h.Result == ResultFailed || h.Result == ResultRolledBack:
			return fmt.Sprintf("host %s: deploy %s: %s", id, h.Result, orUnknown(h.Error))
		case h.Result == ResultCancelled && h.Token == m.s.Token:
			return fmt.Sprintf("host %s refused the command: %s", id, orUnknown(h.Error))
		}
	}
	return ""
}

func (m *machine) waveDone() bool {
	for _, id := range m.s.Plan.Waves[m.s.Wave].Hosts {
		if m.s.Hosts[id].Result != ResultSucceeded {
			return false
		}
	}
	return true
}

func (m *machine) progress() string {
	w := m.s.Plan.Waves[m.s.Wave]
	done := 0
	var waiting []string
	for _, id := range w.Hosts {
		if m.s.Hosts[id].Result == ResultSucceeded {
			done++
		} else {
			waiting = append(waiting, id)
		}
	}
	if m.s.Step == StepBaking {
		return "bake window did not pass"
	}
	return fmt.Sprintf("%d of %d hosts done, waiting for %s", done, len(w.Hosts), strings.Join(waiting, ", "))
}

// gate judges the bake window over every touched host. A host with a
// router is judged on the load balancer's counts of real requests to the
// slot that runs the release; one without, on the agent's probe. It fails
// at once on a fresh sample over a limit; it passes once the window has
// run fully, every host has a sample taken after it ended, the hosts with
// a router saw at least MinRequests real requests together, and the
// PromQL analysis (if any) passed. It fails closed when a host has no
// sample DataTimeout after the window; too little traffic halts the
// rollout as inconclusive (never a pass).
func (m *machine) gate() (passed bool, reason string) {
	s := m.s
	g := s.Plan.Gate
	end := s.BakeStart.Add(g.MinHealthy)
	var missing []string
	var sources []string
	seen := map[string]bool{}
	source := func(v string) {
		if !seen[v] {
			seen[v] = true
			sources = append(sources, v)
		}
	}
	var trafficHosts int
	var realRequests uint64
	for _, id := range s.Touched() {
		o := m.obs.Hosts[id]
		if tr := o.Traffic; tr.HasData {
			source("traffic")
			trafficHosts++
			fresh := tr.Err == "" && !tr.ObservedAt.Before(s.BakeStart)
			if !fresh {
				missing = append(missing, id)
				continue
			}
			if tr.Requests > 0 {
				if rate := tr.ErrorRate(); !under(rate, g.MaxErrorRate) {
					return false, fmt.Sprintf("host %s: real traffic (%s) error rate %.3g%% (%d of %d requests), limit %.3g%%",
						id, tr.Source, rate*100, tr.Errors, tr.Requests, g.MaxErrorRate*100)
				}
				if tr.AvgLatency >= g.MaxAvgLatency {
					return false, fmt.Sprintf("host %s: real traffic (%s) average latency %s, limit %s", id, tr.Source, tr.AvgLatency, g.MaxAvgLatency)
				}
				if st := o.Stable; g.MaxErrorRatioVsStable > 0 && st.HasData && st.Requests > 0 {
					if rate, base := tr.ErrorRate(), st.ErrorRate(); rate > base*g.MaxErrorRatioVsStable && !under(rate, g.MaxErrorRate) {
						return false, fmt.Sprintf("host %s: new slot's error rate %.3g%% is over %g times the stable slot's %.3g%%",
							id, rate*100, g.MaxErrorRatioVsStable, base*100)
					}
				}
			}
			realRequests += tr.Requests
			if tr.ObservedAt.Before(end) {
				missing = append(missing, id)
			}
			continue
		}
		source("probe")
		hw := o.Health
		fresh := hw.HasData && hw.Requests > 0 && !hw.ObservedAt.Before(s.BakeStart)
		if !fresh {
			missing = append(missing, id)
			continue
		}
		if rate := hw.ErrorRate(); !under(rate, g.MaxErrorRate) {
			return false, fmt.Sprintf("host %s: error rate %.3g%% (%d of %d requests), limit %.3g%%",
				id, rate*100, hw.Errors, hw.Requests, g.MaxErrorRate*100)
		}
		if hw.AvgLatency >= g.MaxAvgLatency {
			return false, fmt.Sprintf("host %s: average latency %s, limit %s", id, hw.AvgLatency, g.MaxAvgLatency)
		}
		if hw.ObservedAt.Before(end) {
			missing = append(missing, id)
		}
	}
	if g.Analysis {
		source("promql")
		if a := m.obs.Analysis; a.Result == ResultFailed {
			return false, "PromQL analysis failed: " + orUnknown(a.Reason)
		}
	}
	if len(sources) > 0 {
		if s.JudgedOn == nil {
			s.JudgedOn = map[int]string{}
		}
		s.JudgedOn[s.Wave] = strings.Join(sources, "+")
	}
	if m.now.Before(end) {
		return false, ""
	}
	if len(missing) > 0 {
		if !m.now.Before(end.Add(g.DataTimeout)) {
			return false, fmt.Sprintf("no health data after the %s bake window from %s (fail closed)", g.MinHealthy, strings.Join(missing, ", "))
		}
		return false, ""
	}
	if trafficHosts > 0 && realRequests < g.MinRequests {
		m.halt(HaltInconclusive, fmt.Sprintf("inconclusive: the gate saw %d real requests in its %s bake (fewer than --min-requests %d): "+
			"it never passes on no data; resume to bake again, or abort", realRequests, g.MinHealthy, g.MinRequests))
		return false, ""
	}
	if g.Analysis && m.obs.Analysis.Result != ResultSucceeded {
		return false, "" // the analysis is still measuring; the progress deadline bounds it
	}
	return true, ""
}

// under is rate < limit; a limit of 0 admits only a rate of 0.
func under(rate, limit float64) bool {
	if limit == 0 {
		return rate == 0
	}
	return rate < limit
}

func (m *machine) passed() {
	s := m.s
	m.event(EventWavePassed, "")
	switch {
	case s.Wave == len(s.Plan.Waves)-1 && len(s.Plan.DNS) > 0:
		m.startDNS()
	case s.Wave == len(s.Plan.Waves)-1:
		m.finish(PhaseSucceeded, "")
	case s.Wave == 0 && s.Plan.HasCanary() && s.Plan.PauseAfterCanary:
		s.Wave, s.Step, s.BakeStart = 1, "", time.Time{}
		s.Phase = PhaseWave
		m.halt(HaltPaused, "paused after the canary: resume to continue")
	default:
		m.enterWave(s.Wave + 1)
	}
}

func (m *machine) gateFailed(reason string) {
	m.event(EventGateFailed, reason)
	m.rollBack(reason, false)
}

// rollBack commands every touched host back to its previous release, all
// at once. With nothing touched the rollout ends at once.
func (m *machine) rollBack(reason string, operator bool) {
	s := m.s
	s.Reason = reason
	touched := s.Touched()
	if len(touched) == 0 {
		if operator {
			m.finish(PhaseAborted, reason)
		} else {
			m.finish(PhaseFailed, reason)
		}
		return
	}
	a := RollBack{Reason: reason, Operator: operator}
	for _, id := range touched {
		h := s.Hosts[id]
		if !h.needsRollback() {
			continue // its step changed nothing: the live release runs untouched
		}
		h.Rollback, h.RollbackResult = m.nextID(), ResultPending
		s.Hosts[id] = h
		a.Targets = append(a.Targets, RollbackTarget{Host: id, ID: h.Rollback, ToRelease: h.Previous})
	}
	undo, hasUndo := ChangeDNS{}, false
	if operator {
		undo, hasUndo = m.undoDNS()
	}
	if len(a.Targets) == 0 && !hasUndo {
		// Every touched host failed before changing anything.
		m.finish(PhaseFailed, reason+"; nothing changed on "+strings.Join(touched, ", ")+": no rollback needed")
		return
	}
	s.Phase, s.Step, s.PhaseStart, s.Halt, s.HaltedIn = PhaseRollingBack, "", m.now, "", ""
	m.event(EventRollingBack, reason)
	if len(a.Targets) > 0 {
		m.do(a)
	}
	if hasUndo {
		m.do(undo)
	}
}

// operatorRollback commands every host of an operator's rollback.
func (m *machine) operatorRollback() {
	s := m.s
	s.Reason = "rollback by the operator"
	a := RollBack{Reason: s.Reason, Operator: true, RestoreBackupID: s.Plan.RestoreBackupID}
	for _, id := range s.Plan.Hosts {
		h := s.Hosts[id]
		h.Rollback, h.RollbackResult = m.nextID(), ResultPending
		s.Hosts[id] = h
		a.Targets = append(a.Targets, RollbackTarget{Host: id, ID: h.Rollback, ToRelease: s.Plan.ToRelease})
	}
	s.Phase, s.PhaseStart = PhaseRollingBack, m.now
	m.do(a)
	m.restoreDNS()
}

func (m *machine) rollingBack() {
	s := m.s
	var pending, broken []string
	for _, id := range s.Plan.Hosts {
		h := s.Hosts[id]
		if h.Rollback == "" {
			continue
		}
		switch h.RollbackResult {
		case ResultSucceeded:
		case ResultFailed, ResultRolledBack, ResultCancelled:
			broken = append(broken, fmt.Sprintf("%s (%s: %s)", id, h.RollbackResult, orUnknown(h.Error)))
		default:
			pending = append(pending, id)
		}
	}
	dnsPending, dnsBroken := s.dnsRollingBack()
	broken = append(broken, dnsBroken...)
	if len(pending) == 0 && len(dnsPending) > 0 {
		if m.now.Sub(s.PhaseStart) > s.Plan.ProgressDeadline {
			broken = append(broken, strings.Join(dnsPending, ", ")+" (did not finish in time)")
		} else {
			return
		}
	}
	switch {
	case len(pending) == 0 && len(broken) > 0:
		m.finish(PhaseFailed, fmt.Sprintf("%s; rollback failed on %s: run `golive-controller rollback`", s.Reason, strings.Join(broken, ", ")))
	case len(pending) == 0 && s.Aborted:
		m.finish(PhaseAborted, s.Reason)
	case len(pending) == 0 && s.Plan.IsRollback():
		m.finish(PhaseSucceeded, "")
	case len(pending) == 0:
		m.finish(PhaseRolledBack, s.Reason)
	case m.now.Sub(s.PhaseStart) > s.Plan.ProgressDeadline:
		var where []string
		for _, id := range pending {
			o := m.obs.Hosts[id]
			w := id
			switch {
			case o.Lost:
				w += " (unreachable"
			default:
				w += " (no answer"
			}
			if o.Serving != "" {
				w += ", last seen serving " + s.Plan.Service + "@" + o.Serving
			}
			where = append(where, w+")")
		}
		m.finish(PhaseFailed, fmt.Sprintf("%s; rollback did not finish within %s on %s. Its rollback command stays queued and runs when the host is back; "+
			"check with `golive-controller agents`, or roll it back by hand: golive-controller rollback --service %s --hosts %s",
			s.Reason, s.Plan.ProgressDeadline, strings.Join(where, ", "), s.Plan.Service, strings.Join(pending, ",")))
	}
}

func (m *machine) abort() {
	m.s.Aborted = true
	m.rollBack("aborted by the operator", true)
}

func (m *machine) haltNoApproval() {
	a := m.obs.Approval
	switch {
	case a.Active:
		m.halt(HaltRevoked, fmt.Sprintf("the approval changed (token %d, rollout ran under %d): resume to continue under the new one", a.Token, m.s.Token))
	case a.Expired:
		m.halt(HaltExpired, "the approval expired: authorize again, then resume")
	default:
		m.halt(HaltRevoked, "the approval was revoked: authorize again, then resume")
	}
}

func (m *machine) halt(kind HaltKind, reason string) {
	s := m.s
	if s.Phase != PhaseHalted {
		s.HaltedIn = s.Phase
	}
	s.Phase, s.Halt, s.Reason = PhaseHalted, kind, reason
	m.event(EventHalted, reason)
	m.do(Halt{Kind: kind, Reason: reason})
}

func (m *machine) halted() {
	s := m.s
	switch {
	case m.obs.Abort:
		m.abort()
	case !m.obs.Resume:
		// A revoke while paused, or the reverse, changes nothing but the
		// reason a resume must clear; the kind stays the first one.
	case !m.obs.Approval.Active:
		m.event(EventResumeRefused, "no live approval: authorize first, then resume")
	default:
		s.Token = m.obs.Approval.Token
		phase := s.HaltedIn
		s.Halt, s.HaltedIn, s.Reason = "", "", ""
		m.event(EventResumed, "")
		switch phase {
		case PhasePending:
			s.Phase, s.PhaseStart = PhasePending, m.now
			m.step()
		case PhasePreflight:
			s.Phase, s.PhaseStart = PhasePreflight, m.now
			m.do(RunPreflight{Hosts: clone(s.Plan.Hosts)})
		default:
			// Re-enter the wave: command what is left, then bake the
			// whole window again.
			m.enterWave(s.Wave)
		}
	}
}

func (m *machine) finish(p Phase, reason string) {
	s := m.s
	s.Phase, s.Step, s.Reason, s.Halt, s.HaltedIn = p, "", reason, "", ""
	kind := map[Phase]EventKind{PhaseSucceeded: EventSucceeded, PhaseRolledBack: EventRolledBack,
		PhaseFailed: EventFailed, PhaseAborted: EventAborted}[p]
	m.event(kind, reason)
	m.do(Finish{Phase: p, Reason: reason})
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
