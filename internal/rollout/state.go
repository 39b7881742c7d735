package rollout

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// StateVersion is the version of the State's JSON form. Decode refuses
// any other, so an old controller never misreads a newer record.
const StateVersion = 1

// Phase is where a rollout is; see the package doc for the diagram.
type Phase string

// The phases. Succeeded, RolledBack, Failed and Aborted are terminal.
const (
	PhasePending     Phase = "pending"
	PhasePreflight   Phase = "preflight"
	PhaseCanary      Phase = "canary"
	PhaseWave        Phase = "wave"
	PhaseValidating  Phase = "validating"
	PhaseHalted      Phase = "halted"
	PhaseRollingBack Phase = "rolling_back"
	PhaseSucceeded   Phase = "succeeded"
	PhaseRolledBack  Phase = "rolled_back"
	PhaseFailed      Phase = "failed"
	PhaseAborted     Phase = "aborted"
)

// Terminal reports whether p is an end: Next never leaves it.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseSucceeded, PhaseRolledBack, PhaseFailed, PhaseAborted:
		return true
	}
	return false
}

// Step is the part of a wave in progress.
type Step string

// The steps of a wave.
const (
	// StepDeploying: the wave's hosts are commanded; waiting for results.
	StepDeploying Step = "deploying"
	// StepBaking: every wave host succeeded; the bake window runs.
	StepBaking Step = "baking"
)

// HaltKind says why a rollout is halted.
type HaltKind string

// The halt kinds.
const (
	HaltRevoked HaltKind = "revoked"
	HaltExpired HaltKind = "expired"
	HaltPaused  HaltKind = "paused"
	// HaltInconclusive: a gate saw too little real traffic to judge; a
	// person resumes (the bake runs again) or aborts. It never passes.
	HaltInconclusive HaltKind = "inconclusive"
)

// Result is the outcome of one host command (deploy or rollback), or of
// the preflight.
type Result string

// The results. The zero Result means "not commanded" (or "not reported":
// Next treats both as pending for a commanded host).
const (
	ResultNone      Result = ""
	ResultPending   Result = "pending"
	ResultSucceeded Result = "succeeded"
	// ResultFailed: the step failed (and may or may not have undone itself).
	ResultFailed Result = "failed"
	// ResultRolledBack: the step failed and put the previous release back.
	ResultRolledBack Result = "rolled_back"
	// ResultCancelled: the agent refused or dropped the command without
	// changing anything (outcome REJECTED or CANCELLED).
	ResultCancelled Result = "cancelled"
)

// ResultOf maps an agent's command outcome onto a Result: the one mapping
// of the wire's outcomes to golive's words (the CLI, the executor and the
// API views all use it).
func ResultOf(o golivev1.CommandOutcome) Result {
	switch o {
	case golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED:
		return ResultSucceeded
	case golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK:
		return ResultRolledBack
	case golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED, golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED:
		return ResultCancelled
	case golivev1.CommandOutcome_COMMAND_OUTCOME_UNSPECIFIED:
		return ResultPending
	}
	return ResultFailed
}

// OutcomeWord is the word for an agent's outcome: "succeeded", "failed",
// "rolled_back", "rejected" or "cancelled".
func OutcomeWord(o golivev1.CommandOutcome) string {
	switch o {
	case golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED:
		return "rejected"
	case golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED:
		return "cancelled"
	}
	return string(ResultOf(o))
}

// TerminalState reports whether an API rollout state (Rollout.state) is
// final: the string form of Phase.Terminal, for clients.
func TerminalState(state string) bool { return Phase(state).Terminal() }

// Final reports whether r is an end: a command that will not change its result.
func (r Result) Final() bool {
	switch r {
	case ResultSucceeded, ResultFailed, ResultRolledBack, ResultCancelled:
		return true
	}
	return false
}

// HostState is one host's part of a rollout.
type HostState struct {
	Wave int `json:"wave"`
	// Previous is the release the host ran when planned ("" if unknown:
	// a rollback then goes to the agent's own previous release).
	Previous string `json:"previous,omitempty"`
	// Command is the id of the host's latest deploy command ("" until
	// commanded); Token the fencing token it was issued under; Commands how
	// many deploy commands the host got (more than one only when an earlier
	// one was cancelled under an ended approval).
	Command  string `json:"command,omitempty"`
	Token    int64  `json:"token,omitempty"`
	Commands int    `json:"commands,omitempty"`
	Result   Result `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	// Unchanged: the deploy failed before it changed anything on the host
	// (fetch, verify, unpack): there is nothing to roll back.
	Unchanged bool `json:"unchanged,omitempty"`
	// Rollback is the id of the host's rollback command, if any;
	// RolledBackTo the release the host reported it put back.
	Rollback       string `json:"rollback,omitempty"`
	RollbackResult Result `json:"rollback_result,omitempty"`
	RolledBackTo   string `json:"rolled_back_to,omitempty"`
}

// Touched reports whether the rollout ever commanded the host to deploy.
func (h HostState) Touched() bool { return h.Commands > 0 }

// needsRollback reports whether a fleet rollback must command the host:
// it was commanded and its step may have changed something.
func (h HostState) needsRollback() bool { return h.Touched() && !h.Unchanged }

// State is a rollout as stored in etcd under rollouts/<id>: everything
// Next needs, nothing else. It is a value: Next returns a new one.
type State struct {
	Version int      `json:"version"`
	ID      string   `json:"id"`
	Plan    Schedule `json:"plan"`
	// Token is the fencing token of the approval the rollout runs under;
	// a resume adopts the new approval's token.
	Token int64 `json:"token"`
	Phase Phase `json:"phase"`
	// Wave is the index of the current (or next, when halted after the
	// canary) wave; Step its part.
	Wave int  `json:"wave"`
	Step Step `json:"step,omitempty"`
	// Reason says why the rollout halted, rolls back or ended.
	Reason string   `json:"reason,omitempty"`
	Halt   HaltKind `json:"halt,omitempty"`
	// HaltedIn is the phase a resume returns to.
	HaltedIn Phase `json:"halted_in,omitempty"`
	// Aborted marks a rollback asked for by the operator's abort.
	Aborted bool                 `json:"aborted,omitempty"`
	Hosts   map[string]HostState `json:"hosts"`
	// Seq numbers the commands: ids are <ID>-<Seq>.
	Seq       int       `json:"seq"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// PhaseStart is when the current phase started or resumed: the
	// progress deadline counts from it.
	PhaseStart time.Time `json:"phase_start"`
	// BakeStart is when the current wave's bake window started.
	BakeStart time.Time `json:"bake_start,omitzero"`
	// JudgedOn says, per wave index, what its gate judged: "traffic"
	// (the load balancer's counts), "probe" (the agent's health probe,
	// for hosts with no router), "promql", joined with "+".
	JudgedOn map[int]string `json:"judged_on,omitempty"`
	// DNS is Plan.DNS's progress, index for index.
	DNS []DNSState `json:"dns,omitempty"`
}

// New makes the State of a planned rollout, in PhasePending, running under
// the approval whose fencing token is token.
func New(id string, plan Schedule, token int64, now time.Time) State {
	s := State{Version: StateVersion, ID: id, Plan: plan, Token: token, Phase: PhasePending,
		Hosts: make(map[string]HostState, len(plan.Hosts)), CreatedAt: now, UpdatedAt: now, PhaseStart: now}
	for _, w := range plan.Waves {
		for _, h := range w.Hosts {
			s.Hosts[h] = HostState{Wave: w.Index, Previous: plan.Previous[h]}
		}
	}
	if len(plan.DNS) > 0 {
		s.DNS = make([]DNSState, len(plan.DNS))
	}
	return s
}

func (s State) clone() State {
	c := s
	c.Hosts = maps.Clone(s.Hosts)
	c.JudgedOn = maps.Clone(s.JudgedOn)
	c.DNS = slices.Clone(s.DNS)
	return c
}

// Touched lists the hosts the rollout commanded, sorted.
func (s State) Touched() []string {
	var out []string
	for id, h := range s.Hosts {
		if h.Touched() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Encode is the JSON stored in etcd.
func (s State) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode rollout %s: %w", s.ID, err)
	}
	return b, nil
}

// Decode reads a stored State and refuses an unknown version.
func Decode(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("decode rollout: %w", err)
	}
	if s.Version != StateVersion {
		return State{}, fmt.Errorf("decode rollout %s: version %d, this controller reads version %d: upgrade it", s.ID, s.Version, StateVersion)
	}
	if s.Hosts == nil {
		s.Hosts = map[string]HostState{}
	}
	if len(s.DNS) < len(s.Plan.DNS) {
		s.DNS = append(s.DNS, make([]DNSState, len(s.Plan.DNS)-len(s.DNS))...)
	}
	return s, nil
}

// Proto renders the State for status and watch.
func (s State) Proto() *golivev1.Rollout {
	r := &golivev1.Rollout{Id: s.ID, Service: s.Plan.Service, Release: s.Plan.Release, State: string(s.Phase),
		Reason: s.Reason, CreatedAt: timestamppb.New(s.CreatedAt), UpdatedAt: timestamppb.New(s.UpdatedAt),
		CurrentWave: uint32(s.Wave), FencingToken: s.Token, Kind: string(KindDeploy), Paused: s.Halt == HaltPaused}
	if s.Plan.IsRollback() {
		r.Kind, r.Release = string(KindRollback), s.rolledBackTo()
	}
	if s.Phase.Terminal() {
		r.FinishedAt = timestamppb.New(s.UpdatedAt)
	}
	for _, w := range s.Plan.Waves {
		r.Waves = append(r.Waves, &golivev1.Wave{Index: uint32(w.Index), Name: w.Name, Hosts: clone(w.Hosts), State: s.waveState(w.Index),
			JudgedOn: s.JudgedOn[w.Index]})
	}
	for _, id := range s.Plan.Hosts {
		h := s.Hosts[id]
		p := &golivev1.HostProgress{HostId: id, CommandId: h.Command, State: string(h.Result), Error: h.Error, Release: s.Plan.Release}
		if h.Result == ResultNone {
			p.State = "waiting"
		}
		if h.Rollback != "" {
			p.CommandId, p.Release = h.Rollback, orFirst(h.RolledBackTo, s.Plan.ToRelease, h.Previous)
			p.State = "rollback_" + string(h.RollbackResult)
			if s.Plan.IsRollback() {
				p.State = string(h.RollbackResult)
			}
		}
		r.Hosts = append(r.Hosts, p)
	}
	r.Dns = s.dnsProto()
	return r
}

// rolledBackTo is the release a rollback put back, for its view: the
// requested one, else what the hosts reported ("a, b" when they differ),
// "" while none reported.
func (s State) rolledBackTo() string {
	if s.Plan.ToRelease != "" {
		return s.Plan.ToRelease
	}
	seen := map[string]bool{}
	var out []string
	for _, id := range s.Plan.Hosts {
		if r := s.Hosts[id].RolledBackTo; r != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func orFirst(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func (s State) waveState(i int) string {
	switch {
	case s.Phase == PhaseSucceeded || i < s.Wave:
		return "passed"
	case i > s.Wave:
		return "waiting"
	case s.Phase == PhaseHalted && s.Step == "":
		return "waiting"
	case s.Phase.Terminal() || s.Phase == PhaseHalted || s.Phase == PhaseRollingBack:
		return string(s.Phase)
	case s.Step != "":
		return string(s.Step)
	}
	return "waiting"
}
