package notify

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind names what happened.
type Kind string

// The kinds of event the controller notifies.
const (
	KindApprovalGranted  Kind = "approval_granted"
	KindApprovalRevoked  Kind = "approval_revoked"
	KindApprovalExpired  Kind = "approval_expired"
	KindRolloutStarted   Kind = "rollout_started"
	KindWavePassed       Kind = "wave_passed"
	KindGateFailed       Kind = "gate_failed"
	KindRolledBack       Kind = "rolled_back"
	KindRolloutSucceeded Kind = "rollout_succeeded"
	KindRolloutHalted    Kind = "rollout_halted"
	// DNS failover (internal/controller/dnsfailover.go).
	KindDNSSwitched            Kind = "dns_switched"
	KindDNSFailoverRecommended Kind = "dns_failover_recommended"
	KindDNSFailoverHeld        Kind = "dns_failover_held"
	KindDNSSwitchFailed        Kind = "dns_switch_failed"
	// Scaling (internal/controller/scaling.go): an action written, automatic or an operator's.
	KindScaled Kind = "scaled"
)

// Kinds lists every Kind, in the order of a rollout's life.
var Kinds = []Kind{
	KindApprovalGranted, KindApprovalRevoked, KindApprovalExpired,
	KindRolloutStarted, KindWavePassed, KindGateFailed, KindRolledBack,
	KindRolloutSucceeded, KindRolloutHalted,
	KindDNSSwitched, KindDNSFailoverRecommended, KindDNSFailoverHeld, KindDNSSwitchFailed,
	KindScaled,
}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool { return slices.Contains(Kinds, k) }

// title is the kind as a few words for the summary line.
func (k Kind) title() string {
	if k == "" {
		return "event"
	}
	return strings.ReplaceAll(string(k), "_", " ")
}

// Event is one notification. It deliberately has no field for a secret:
// put in Details only what may be posted to a chat channel.
type Event struct {
	Kind         Kind
	Time         time.Time // zero: the time of Notify
	Actor        string    // who caused it; "controller" for automation
	RolloutID    string
	Service      string
	Release      string
	Reason       string
	FencingToken int64             // the approval's fencing token, 0 if none
	Details      map[string]string // event specific, e.g. {"wave": "2", "hosts": "4"}
}

// wireEvent is Event as the "json" format sends it (see the package doc).
type wireEvent struct {
	ID           string            `json:"id"`
	Version      int               `json:"version"`
	Kind         Kind              `json:"kind"`
	Time         time.Time         `json:"time"`
	Summary      string            `json:"summary"`
	Actor        string            `json:"actor,omitempty"`
	RolloutID    string            `json:"rollout_id,omitempty"`
	Service      string            `json:"service,omitempty"`
	Release      string            `json:"release,omitempty"`
	Reason       string            `json:"reason,omitempty"`
	FencingToken int64             `json:"fencing_token,omitempty"`
	Details      map[string]string `json:"details,omitempty"`
}

// queued is an event as it waits in a receiver's queue.
type queued struct {
	id       string
	ev       Event
	enqueued time.Time
}

// newQueued copies ev (its Details may be reused by the caller) and gives it
// an id and, if it has none, a time.
func newQueued(ev Event, now time.Time) queued {
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = ev.Time.UTC()
	ev.Details = maps.Clone(ev.Details)
	return queued{id: newID(), ev: ev, enqueued: now}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand doc)
	return hex.EncodeToString(b[:])
}

// Summary is the one readable line that describes ev, e.g.
//
//	golive: gate failed for checkout v2.4.1 (rollout r-42) by controller: error rate 0.8% > 0.1% [wave=2]
//	golive: approval granted by alice [token=1187]
func (ev Event) Summary() string {
	var b strings.Builder
	b.WriteString("golive: ")
	b.WriteString(ev.Kind.title())
	if ev.Service != "" {
		b.WriteString(" for ")
		b.WriteString(ev.Service)
		if ev.Release != "" {
			b.WriteString(" ")
			b.WriteString(ev.Release)
		}
	} else if ev.Release != "" {
		b.WriteString(" for release ")
		b.WriteString(ev.Release)
	}
	if ev.RolloutID != "" {
		b.WriteString(" (rollout ")
		b.WriteString(ev.RolloutID)
		b.WriteString(")")
	}
	if ev.Actor != "" {
		b.WriteString(" by ")
		b.WriteString(ev.Actor)
	}
	if ev.Reason != "" {
		b.WriteString(": ")
		b.WriteString(ev.Reason)
	}
	var extra []string
	if ev.FencingToken != 0 && ev.RolloutID == "" {
		// Approval events: the token is what identifies the approval.
		extra = append(extra, "token="+strconv.FormatInt(ev.FencingToken, 10))
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Details)) {
		extra = append(extra, k+"="+ev.Details[k])
	}
	if len(extra) > 0 {
		b.WriteString(" [")
		b.WriteString(strings.Join(extra, " "))
		b.WriteString("]")
	}
	return oneLine(b.String())
}

// oneLine replaces line breaks and other control characters with spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// slackEscaper escapes the three characters Slack's text format reserves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// encode renders q in format f.
func encode(f Format, q queued) ([]byte, error) {
	if f == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{slackEscaper.Replace(q.ev.Summary())})
	}
	ev := q.ev
	return json.Marshal(wireEvent{
		ID: q.id, Version: 1, Kind: ev.Kind, Time: ev.Time, Summary: ev.Summary(),
		Actor: ev.Actor, RolloutID: ev.RolloutID, Service: ev.Service, Release: ev.Release,
		Reason: ev.Reason, FencingToken: ev.FencingToken, Details: ev.Details,
	})
}
