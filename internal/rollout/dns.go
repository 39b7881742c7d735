package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// DNS in rollouts: a deploy with --dns NAME=POOL points NAME at the pool's
// addresses once its last wave passed, as a step of its own:
//
//	validating (the last gate passed) --> validating/dns (ChangeDNS, fenced on
//	State.Token) --> succeeded, or failed (a change failed or the progress
//	deadline passed: the hosts keep the release, which passed every gate)
//
// An abort during the step restores what it set (as the operator's
// rollback, with the hosts); an operator's rollback of the service after
// such a deploy restores the records it set (Schedule.DNS of the rollback,
// Restore targets) while its hosts roll back. A gate's automatic rollback
// never touches DNS: records are set only after the last gate passed.

// StepDNS: every wave passed; the rollout's DNS changes run.
const StepDNS Step = "dns"

// DNSTarget is one record a rollout changes: in a deploy, Name's Type
// records set to the addresses of Pool (Values); in an operator's rollback
// (Restore), Values are what the records served before rollout
// FromRollout set them to Expect: restored only while they still serve
// Expect.
type DNSTarget struct {
	Name        string        `json:"name"`
	Type        string        `json:"type"`
	Pool        string        `json:"pool,omitempty"`
	Values      []string      `json:"values"`
	TTL         time.Duration `json:"ttl,omitempty"`
	Restore     bool          `json:"restore,omitempty"`
	Expect      []string      `json:"expect,omitempty"`
	FromRollout string        `json:"from_rollout,omitempty"`
}

// DNSResult is how one DNS change went. Result is pending (asked for),
// succeeded (the primary answers After), failed (Error), or cancelled
// (skipped: nothing to do, Error says why).
type DNSResult struct {
	Result Result   `json:"result,omitempty"`
	Before []string `json:"before,omitempty"`
	After  []string `json:"after,omitempty"`
	// At is when the primary was seen answering After.
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error,omitempty"`
}

// DNSState is Plan.DNS[i]'s part of the rollout: Set is its change (a
// restore in an operator's rollback), Undo an abort's restore of Set.
type DNSState struct {
	Set  DNSResult `json:"set,omitzero"`
	Undo DNSResult `json:"undo,omitzero"`
}

// DNSObservation is what the executor knows of Plan.DNS[i]'s changes (from
// the DNS record's history): a zero Result means not attempted.
type DNSObservation struct {
	Set, Undo DNSResult
}

// ChangeDNS asks the executor to make the DNS changes of Plan.DNS at
// Index (Undo: restore what Set changed). Operator: the operator's (an
// abort's or a rollback's restore), fenced on the leader only; otherwise
// fenced on State.Token like a wave. The executor runs every change the
// State marks pending and the Observation does not know, so a new leader
// resumes it.
type ChangeDNS struct {
	Index    []int
	Undo     bool
	Operator bool
}

func (ChangeDNS) action() {}

// DNSTag names change i of rollout id (undo: its restore) in the DNS
// record's history, so any leader finds what was done.
func DNSTag(id string, i int, undo bool) string {
	if undo {
		return fmt.Sprintf("%s/dns/%d/undo", id, i)
	}
	return fmt.Sprintf("%s/dns/%d", id, i)
}

func (t DNSTarget) String() string { return t.Name + " " + t.Type }

// recordDNS copies what the executor saw of the DNS changes into the
// State; a final result is never overwritten.
func (m *machine) recordDNS() {
	s := m.s
	for i := range s.DNS {
		d := s.DNS[i]
		if i < len(m.obs.DNS) {
			o := m.obs.DNS[i]
			if !d.Set.Result.Final() && o.Set.Result.Final() {
				d.Set = o.Set
			}
			if !d.Undo.Result.Final() && o.Undo.Result.Final() {
				d.Undo = o.Undo
			}
		}
		if d.Undo.Result == ResultPending && d.Set.Result.Final() && d.Set.Result != ResultSucceeded {
			d.Undo = DNSResult{Result: ResultCancelled, Error: "nothing to restore: the rollout's change did not apply"}
		}
		s.DNS[i] = d
	}
}

// startDNS enters the DNS step after the last gate passed.
func (m *machine) startDNS() {
	s := m.s
	s.Step, s.PhaseStart = StepDNS, m.now
	a := ChangeDNS{}
	for i := range s.Plan.DNS {
		if s.DNS[i].Set.Result == ResultNone {
			s.DNS[i].Set.Result = ResultPending
		}
		a.Index = append(a.Index, i)
	}
	m.do(a)
	m.dnsStep()
}

// dnsStep waits for the DNS changes: all set ends the rollout succeeded;
// one failed (or the deadline) ends it failed, the hosts left as they are.
func (m *machine) dnsStep() {
	s := m.s
	var pending, failed, set []string
	for i, t := range s.Plan.DNS {
		r := s.DNS[i].Set
		switch r.Result {
		case ResultSucceeded:
			set = append(set, t.String())
		case ResultFailed, ResultCancelled, ResultRolledBack:
			failed = append(failed, fmt.Sprintf("%s -> %s: %s", t, t.Pool, orUnknown(r.Error)))
		default:
			pending = append(pending, t.String())
		}
	}
	hint := func() string {
		done := "none"
		if len(set) > 0 {
			done = strings.Join(set, ", ")
		}
		return fmt.Sprintf("; every wave passed: the hosts keep %s@%s; records set by this rollout: %s (the others still serve what they did). "+
			"Fix the cause and point the records with `golive-controller dns set`, or undo hosts and records with `golive-controller rollback --service %s`",
			s.Plan.Service, s.Plan.Release, done, s.Plan.Service)
	}
	switch {
	case len(pending) == 0 && len(failed) == 0:
		m.finish(PhaseSucceeded, "")
	case len(pending) == 0:
		m.finish(PhaseFailed, "DNS step failed: "+strings.Join(failed, "; ")+hint())
	case m.now.Sub(s.PhaseStart) > s.Plan.ProgressDeadline:
		m.finish(PhaseFailed, fmt.Sprintf("DNS step did not finish within the progress deadline (%s), waiting for %s%s",
			s.Plan.ProgressDeadline, strings.Join(pending, ", "), hint()))
	}
}

// undoDNS asks, with an abort's rollback, to restore every record the
// rollout set or may be setting.
func (m *machine) undoDNS() (ChangeDNS, bool) {
	s := m.s
	a := ChangeDNS{Undo: true, Operator: true}
	for i := range s.DNS {
		if r := s.DNS[i].Set.Result; (r == ResultSucceeded || r == ResultPending) && s.DNS[i].Undo.Result == ResultNone {
			s.DNS[i].Undo.Result = ResultPending
			a.Index = append(a.Index, i)
		}
	}
	return a, len(a.Index) > 0
}

// restoreDNS starts an operator's rollback's restores.
func (m *machine) restoreDNS() {
	s := m.s
	a := ChangeDNS{Operator: true}
	for i := range s.Plan.DNS {
		s.DNS[i].Set.Result = ResultPending
		a.Index = append(a.Index, i)
	}
	if len(a.Index) > 0 {
		m.do(a)
	}
}

// dnsRollingBack lists the DNS changes a rollback still waits for and
// those that failed.
func (s State) dnsRollingBack() (pending, broken []string) {
	for i, t := range s.Plan.DNS {
		r := s.DNS[i].Undo
		if s.Plan.IsRollback() {
			r = s.DNS[i].Set
		}
		switch r.Result {
		case ResultNone, ResultSucceeded, ResultCancelled:
		case ResultPending:
			pending = append(pending, "DNS "+t.String())
		default:
			broken = append(broken, fmt.Sprintf("DNS %s (restore %s: %s)", t, r.Result, orUnknown(r.Error)))
		}
	}
	return pending, broken
}

// dnsProto renders the DNS changes for the rollout's view.
func (s State) dnsProto() []*golivev1.RolloutDns {
	var out []*golivev1.RolloutDns
	for i, t := range s.Plan.DNS {
		var d DNSState
		if i < len(s.DNS) {
			d = s.DNS[i]
		}
		v := &golivev1.RolloutDns{Name: t.Name, Type: t.Type, Pool: t.Pool, Action: "set", State: dnsWord(d.Set.Result),
			Before: slices.Clone(d.Set.Before), After: slices.Clone(d.Set.After), Error: d.Set.Error, FromRollout: t.FromRollout}
		if t.Restore {
			v.Action = "restore"
			if len(v.Before) == 0 && len(v.After) == 0 {
				v.Before, v.After = slices.Clone(t.Expect), slices.Clone(t.Values)
			}
		} else if len(v.After) == 0 {
			v.After = slices.Clone(t.Values)
		}
		if !d.Set.At.IsZero() {
			v.ConfirmedAt = timestamppb.New(d.Set.At)
		}
		if d.Undo.Result != ResultNone {
			v.RestoreState = dnsWord(d.Undo.Result)
			if d.Undo.Error != "" {
				v.Error = strings.TrimPrefix(v.Error+"; ", "; ") + "restore: " + d.Undo.Error
			}
			if !d.Undo.At.IsZero() {
				v.RestoredAt = timestamppb.New(d.Undo.At)
			}
		}
		out = append(out, v)
	}
	return out
}

func dnsWord(r Result) string {
	switch r {
	case ResultNone:
		return "waiting"
	case ResultCancelled:
		return "skipped"
	}
	return string(r)
}
