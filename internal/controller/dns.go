package controller

// DNS records golive manages (serve --dns-config FILE): the ControlService
// handlers DnsShow, DnsSet, DnsFailover and DnsHistory, and the one write
// path every change of a record takes, whoever asks for it (an operator's
// dns set or dns failover, the leader's health-checked failover in
// dnsfailover.go).
//
// A record is stored once, under dns/<name>/<type> (dnsRecord): the values
// golive last confirmed on the zone's primary, the change in flight, the
// failover state and the last decision. Its history (dns_history/...) holds
// one entry per change, recommendation or alert.
//
//	change(op) --txn If(op's fences [leader, approval], record unchanged, none in flight)
//	              Then(record.pending = intent, audit "started")
//	           --> dnsupdate Apply (UPDATE with Old = stored values, confirmed by query)
//	           --txn If(record is the intent's) Then(record: values, failover state;
//	              history entry; audit "confirmed"|"failed")
//
// Invariants:
//
//   - The Old of every change is the record's stored values, never a fresh
//     read: a record someone else changed fails the prerequisite and is
//     refused, not overwritten. The one exception is golive's first sight
//     of a record (adopt): it stores what the primary answers then, with a
//     history entry saying so.
//   - At most one change of a record is in flight (the intent's txn fails
//     while another is pending). A pending change whose controller died is
//     resolved by whoever finds it after dnsPendingGrace, by asking the
//     primary which of old or new it serves: the record ends in one
//     consistent state.
//   - The TSIG secret never leaves dnsconfig.Secret: nothing here logs,
//     stores, sends or puts in an error anything but dnsupdate's (redacted)
//     errors and record values.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsfailover"
	"github.com/golive/golive/internal/dnsupdate"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// dnsRecordVersion is the version of a dnsRecord's JSON form.
const dnsRecordVersion = 1

// Kinds of history entry.
const (
	dnsKindSet       = "set"       // an operator's dns set
	dnsKindFailover  = "failover"  // an operator's dns failover
	dnsKindAutomatic = "automatic" // the leader's failover, under an approval
	dnsKindRecommend = "recommend" // the leader would switch but may not
	dnsKindHold      = "hold"      // the primary fails, the secondary too
	dnsKindAdopt     = "adopt"     // golive's first reading of the record
	dnsKindRollout   = "rollout"   // a rollout's --dns step, or its restore
)

// Outcomes of history entries.
const (
	dnsInFlight    = "in_flight"
	dnsConfirmed   = "confirmed"
	dnsFailed      = "failed"
	dnsUnknown     = "unknown"
	dnsRecommended = "recommended"
	dnsHeld        = "held"
	dnsAdopted     = "adopted"
)

// dnsDefaultTTL is a dns set's TTL when neither the request nor the
// stored record gives one.
const dnsDefaultTTL = 30 * time.Second

// dnsRecord is one record as stored under dns/<name>/<type>.
type dnsRecord struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	// Values and TTL are what golive last confirmed the primary serves:
	// the prerequisite (Old) of its next change. Exists is false when the
	// RRset did not exist.
	Values []string      `json:"values"`
	TTL    time.Duration `json:"ttl"`
	Exists bool          `json:"exists"`
	// Seq is the last history entry's sequence number.
	Seq uint64 `json:"seq"`
	// Failover is the failover state (records with a failover block).
	Failover *dnsfailover.State `json:"failover,omitempty"`
	// Decision is the failover's last check.
	Decision *dnsDecision `json:"decision,omitempty"`
	// Pending is the change in flight; Last the last one that ended.
	Pending *dnsEntry `json:"pending,omitempty"`
	Last    *dnsEntry `json:"last,omitempty"`

	modRev int64 // the revision it was read at (not stored)
}

// dnsDecision is a failover check's outcome, shown by dns show.
type dnsDecision struct {
	At        time.Time `json:"at"`
	Action    string    `json:"action"`
	Reason    string    `json:"reason,omitempty"`
	To        string    `json:"to,omitempty"`
	Command   string    `json:"command,omitempty"`
	Primary   string    `json:"primary,omitempty"`
	Secondary string    `json:"secondary,omitempty"`
}

// dnsEntry is one history entry (and a record's pending or last change).
type dnsEntry struct {
	Seq     uint64        `json:"seq"`
	At      time.Time     `json:"at"`
	Name    string        `json:"name"`
	Type    string        `json:"type"`
	Kind    string        `json:"kind"`
	Actor   string        `json:"actor"`
	Replica string        `json:"replica,omitempty"`
	Outcome string        `json:"outcome"`
	Old     []string      `json:"old,omitempty"`
	New     []string      `json:"new,omitempty"`
	TTL     time.Duration `json:"ttl,omitempty"`
	Reason  string        `json:"reason,omitempty"`
	Error   string        `json:"error,omitempty"`
	Token   int64         `json:"token,omitempty"`
	Latency time.Duration `json:"latency,omitempty"`
	From    string        `json:"from,omitempty"`
	To      string        `json:"to,omitempty"`
	Command string        `json:"command,omitempty"`
	// Rollout tags a rollout's change (rollout.DNSTag): how any leader
	// finds it done.
	Rollout string `json:"rollout,omitempty"`
}

// dnsService is the controller's DNS part; nil when --dns-config is unset.
type dnsService struct {
	s       *Server
	cfg     *dnsconfig.Config
	set     *dnsupdate.Set
	log     hclog.Logger
	metrics *dnsMetrics
}

// loadDNSConfig reads --dns-config (nil when unset).
func loadDNSConfig(path string) (*dnsconfig.Config, error) {
	if path == "" {
		return nil, nil
	}
	cfg, err := dnsconfig.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--dns-config: %w", err)
	}
	return cfg, nil
}

// newDNS builds the DNS part from a loaded config (nil: none).
func newDNS(s *Server, cfg *dnsconfig.Config, reg prometheus.Registerer) (*dnsService, error) {
	if cfg == nil {
		return nil, nil
	}
	um, err := dnsupdate.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	set, err := dnsupdate.NewSet(cfg, dnsupdate.Options{Metrics: um})
	if err != nil {
		return nil, fmt.Errorf("--dns-config: %w", err)
	}
	m, err := newDNSMetrics(reg, cfg)
	if err != nil {
		return nil, err
	}
	d := &dnsService{s: s, cfg: cfg, set: set, log: s.log.Named("dns"), metrics: m}
	d.log.Info("dns configured", "zones", len(cfg.Zones), "pools", len(cfg.Pools), "failovers", len(cfg.Failovers))
	return d, nil
}

// errNoDNS answers DNS calls on a controller without --dns-config.
var errNoDNS = fmt.Errorf("%w: this controller manages no DNS: start `golive-controller serve` with --dns-config FILE (see deploy/examples/dns.hcl)", apierr.ErrConflict)

// pendingGrace is how long a change may stay in flight before anyone
// resolves it: longer than an update and its confirmation can take.
func (d *dnsService) pendingGrace(name string) time.Duration {
	t := dnsconfig.DefaultTimeout
	if z := d.cfg.ZoneFor(name); z != nil && z.Timeout > 0 {
		t = z.Timeout
	}
	return 2*t + dnsupdate.DefaultConfirmTimeout + 5*time.Second
}

// typeOf is the record type asked for: typ, else the failover's, else A.
func (d *dnsService) typeOf(name, typ string) string {
	if t := strings.ToUpper(strings.TrimSpace(typ)); t != "" {
		return t
	}
	if f := d.cfg.Failover(name); f != nil {
		return string(f.Type)
	}
	return "A"
}

func (d *dnsService) key(name, typ string) string { return d.s.keys.DNSRecord(name, typ) }

// load reads the stored record (nil when golive has none).
func (d *dnsService) load(ctx context.Context, name, typ string) (*dnsRecord, error) {
	resp, err := d.s.cli.Get(ctx, d.key(name, typ))
	if err != nil {
		return nil, fmt.Errorf("%w: read dns record %s %s: %v", apierr.ErrUnavailable, name, typ, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var r dnsRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil || r.Version != dnsRecordVersion {
		return nil, fmt.Errorf("dns record %s %s is unreadable (version %d, %v)", name, typ, r.Version, err)
	}
	r.modRev = resp.Kvs[0].ModRevision
	return &r, nil
}

func (d *dnsService) opPut(r *dnsRecord) clientv3.Op {
	r.Version = dnsRecordVersion
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return clientv3.OpPut(d.key(r.Name, r.Type), string(b))
}

func (d *dnsService) opHistory(e *dnsEntry) clientv3.Op {
	b, _ := json.Marshal(e)
	return clientv3.OpPut(d.s.keys.DNSHistoryEntry(e.Name, e.Type, e.Seq), string(b))
}

// client is the zone client of name, or an ErrInvalid error.
func (d *dnsService) client(name string) (*dnsupdate.Client, error) {
	c, err := d.set.For(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrInvalid, err)
	}
	return c, nil
}

// adopt returns the stored record, first storing what the primary answers
// now when golive has none (its first sight of the record). A failover
// record serving neither pool's addresses is blocked for automation.
func (d *dnsService) adopt(ctx context.Context, name, typ string) (*dnsRecord, error) {
	for range 3 {
		r, err := d.load(ctx, name, typ)
		if err != nil || r != nil {
			return r, err
		}
		c, err := d.client(name)
		if err != nil {
			return nil, err
		}
		a, err := c.Query(ctx, name, typ)
		if err != nil {
			return nil, dnsError(err)
		}
		now := time.Now()
		r = &dnsRecord{Name: name, Type: typ, Values: a.Values, TTL: a.TTL, Exists: a.Exists, Seq: 1}
		e := &dnsEntry{Seq: 1, At: now, Name: name, Type: typ, Kind: dnsKindAdopt, Actor: "controller", Replica: d.s.cfg.ReplicaID,
			Outcome: dnsAdopted, New: a.Values, TTL: a.TTL, Reason: "golive's first reading of the record: it serves what the primary answered"}
		if f := d.cfg.Failover(name); f != nil && string(f.Type) == typ {
			p := dnsfailover.PolicyFrom(f)
			st := dnsfailover.State{}
			switch vals := a.Values; {
			case slices.Equal(vals, sortedValues(d.cfg.Pool(f.Primary).Values(f.Type))):
			case slices.Equal(vals, sortedValues(d.cfg.Pool(f.Secondary).Values(f.Type))):
				st = dnsfailover.Applied(p, st, f.Secondary, now, dnsfailover.Automatic)
			default:
				st = dnsfailover.Block(st, fmt.Sprintf("the record served [%s] when golive first read it, neither pool's addresses; `%s` hands it to automation",
					strings.Join(vals, " "), p.Command(f.Primary)))
			}
			r.Failover = &st
		}
		r.Last = e
		ok, _, err := d.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(d.key(name, typ)), "=", 0)},
			[]clientv3.Op{d.opPut(r), d.opHistory(e)})
		if err != nil {
			return nil, err
		}
		if ok {
			d.log.Info("dns record adopted", "name", name, "type", typ, "values", strings.Join(a.Values, " "), "ttl", a.TTL)
		}
	}
	return d.load(ctx, name, typ)
}

func (d *dnsService) commit(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (bool, *clientv3.TxnResponse, error) {
	resp, err := d.s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, nil, fmt.Errorf("%w: write dns record: %v", apierr.ErrUnavailable, err)
	}
	return resp.Succeeded, resp, nil
}

// dnsChange is one change of a record, as the write path takes it.
type dnsChange struct {
	name, typ string
	kind      string // dnsKindSet, dnsKindFailover, dnsKindAutomatic
	actor     string
	source    string
	reason    string
	values    []string
	ttl       time.Duration
	from, to  string // pools, for failovers
	// fences are the compares beyond the record's own: the leader's
	// election key, the approval's token.
	fences []clientv3.Cmp
	token  int64
	// rollout tags a rollout's change (rollout.DNSTag).
	rollout string
	// failover, when set, is the failover state to store with the intent
	// (the leader's check); confirmed and failed give the state after.
	failover  *dnsfailover.State
	confirmed func(st dnsfailover.State, at time.Time) dnsfailover.State
	failed    func(st dnsfailover.State, err error) dnsfailover.State
}

// errFenced: a change's fence failed (the approval ended, leadership was
// lost): nothing was written or sent.
var errFenced = errors.New("fence failed")

// change is the one write path of a record: intent, update, result.
func (d *dnsService) change(ctx context.Context, ch dnsChange) (*dnsEntry, *dnsRecord, error) {
	c, err := d.client(ch.name)
	if err != nil {
		return nil, nil, err
	}
	// The record moves under the leader's checks (their streaks): a change
	// raced by one is tried again; one whose own fences fail is not.
	for attempt := 0; ; attempt++ {
		r, err := d.adopt(ctx, ch.name, ch.typ)
		if err != nil {
			return nil, nil, err
		}
		e, fin, err := d.changeOnce(ctx, c, r, ch)
		if !errors.Is(err, errFenced) || attempt >= 4 {
			return e, fin, err
		}
		now, lerr := d.load(ctx, ch.name, ch.typ)
		if lerr != nil || now == nil || now.modRev == r.modRev {
			return e, fin, err
		}
	}
}

// changeOnce is one attempt of change, on record r as read.
func (d *dnsService) changeOnce(ctx context.Context, c *dnsupdate.Client, r *dnsRecord, ch dnsChange) (*dnsEntry, *dnsRecord, error) {
	var err error
	if r.Pending != nil {
		if r, err = d.resolvePending(ctx, r, false); err != nil {
			return nil, nil, err
		}
		if r.Pending != nil {
			p := r.Pending
			return nil, r, fmt.Errorf("%w: a change of %s %s is in flight (%s by %s since %s): retry shortly", apierr.ErrConflict,
				ch.name, ch.typ, p.Kind, p.Actor, p.At.Format(time.RFC3339))
		}
	}
	now := time.Now()
	e := &dnsEntry{Seq: r.Seq + 1, At: now, Name: ch.name, Type: ch.typ, Kind: ch.kind, Actor: ch.actor, Replica: d.s.cfg.ReplicaID,
		Outcome: dnsInFlight, Old: r.Values, New: sortedValues(ch.values), TTL: ch.ttl, Reason: ch.reason, Token: ch.token, From: ch.from, To: ch.to, Rollout: ch.rollout}
	intent := *r
	intent.Seq, intent.Pending = e.Seq, e
	if ch.failover != nil {
		st := *ch.failover
		intent.Failover = &st
	}
	cmps := append(slices.Clone(ch.fences), clientv3.Compare(clientv3.ModRevision(d.key(ch.name, ch.typ)), "=", r.modRev))
	_, tr, err := d.s.audit.Append(ctx, d.auditEntry(e, "started", ch.source), cmps, []clientv3.Op{d.opPut(&intent)})
	if errors.Is(err, audit.ErrPrecondition) {
		return nil, r, errFenced
	}
	if err != nil {
		return nil, r, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
	}
	intent.modRev = tr.Header.Revision
	d.log.Info("dns change", "name", ch.name, "type", ch.typ, "kind", ch.kind, "actor", ch.actor, "old", strings.Join(e.Old, " "),
		"new", strings.Join(e.New, " "), "ttl", ch.ttl, "fencing_token", ch.token)

	// From here the change is sent and its outcome must be stored, even if
	// the caller's context ends.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.pendingGrace(ch.name))
	defer cancel()
	res, aerr := c.Apply(wctx, dnsupdate.Change{Name: ch.name, Type: ch.typ, TTL: ch.ttl, Old: e.Old, New: e.New})
	fin := d.outcome(wctx, c, &intent, res, aerr)
	if fin.Failover != nil {
		switch {
		case fin.Last.Outcome == dnsConfirmed && ch.confirmed != nil:
			st := ch.confirmed(*fin.Failover, fin.Last.At)
			fin.Failover = &st
		case fin.Last.Outcome != dnsConfirmed && ch.failed != nil:
			st := ch.failed(*fin.Failover, aerr)
			fin.Failover = &st
		}
	}
	if err := d.finish(wctx, &intent, fin, ch.source); err != nil {
		return fin.Last, fin, err
	}
	if aerr != nil && fin.Last.Outcome != dnsConfirmed {
		return fin.Last, fin, dnsError(aerr)
	}
	return fin.Last, fin, nil
}

// outcome is the record after the update of intent's pending change
// answered (res, err): confirmed, failed, or, when the server cannot tell,
// what one query says.
func (d *dnsService) outcome(ctx context.Context, c *dnsupdate.Client, intent *dnsRecord, res *dnsupdate.Result, err error) *dnsRecord {
	fin := *intent
	e := *intent.Pending
	fin.Pending, fin.Last = nil, &e
	e.At = time.Now()
	if err == nil {
		e.Outcome, e.Latency, e.New = dnsConfirmed, res.Latency, res.Change.New
		fin.Values, fin.TTL, fin.Exists = res.Change.New, res.Change.TTL, len(res.Change.New) > 0
		return &fin
	}
	e.Outcome, e.Error = dnsFailed, err.Error()
	var de *dnsupdate.Error
	if errors.As(err, &de) && (de.Unknown || de.Changed) {
		// The server may have applied it: ask which records it serves.
		if a, qerr := c.Query(ctx, e.Name, e.Type); qerr == nil {
			switch {
			case slices.Equal(a.Values, e.New):
				e.Outcome = dnsConfirmed
				fin.Values, fin.TTL, fin.Exists = a.Values, a.TTL, a.Exists
			case slices.Equal(a.Values, e.Old):
			default:
				e.Outcome = dnsUnknown
				e.Error += fmt.Sprintf("; the primary serves [%s], neither the old nor the new values", strings.Join(a.Values, " "))
			}
		} else {
			e.Outcome = dnsUnknown
		}
	}
	return &fin
}

// finish stores fin (the end of intent's pending change) with its history
// entry and audit entry, if the record is still the intent.
func (d *dnsService) finish(ctx context.Context, intent, fin *dnsRecord, source string) error {
	e := fin.Last
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(d.key(fin.Name, fin.Type)), "=", intent.modRev)}
	_, tr, err := d.s.audit.Append(ctx, d.auditEntry(e, e.Outcome, source), cmps, []clientv3.Op{d.opPut(fin), d.opHistory(e)})
	if errors.Is(err, audit.ErrPrecondition) {
		d.log.Warn("dns change ended but its record moved meanwhile (resolved by another replica)", "name", fin.Name, "type", fin.Type, "seq", e.Seq, "outcome", e.Outcome)
		return fmt.Errorf("%w: the change of %s %s ended %s but another replica resolved it first: see `golive-controller dns history %s`", apierr.ErrConflict, fin.Name, fin.Type, e.Outcome, fin.Name)
	}
	if err != nil {
		d.log.Error("dns change ended but could not be stored; it is resolved from the primary's answer later", "name", fin.Name, "outcome", e.Outcome, "error", err)
		return fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
	}
	fin.modRev = tr.Header.Revision
	lg := d.log.Info
	if e.Outcome != dnsConfirmed {
		lg = d.log.Warn
	}
	lg("dns change "+e.Outcome, "name", fin.Name, "type", fin.Type, "kind", e.Kind, "seq", e.Seq, "latency", e.Latency, "error", e.Error)
	return nil
}

// resolvePending ends a change left in flight by a controller that
// stopped (older than pendingGrace, or at once with force): the primary's
// answer says whether it landed.
func (d *dnsService) resolvePending(ctx context.Context, r *dnsRecord, force bool) (*dnsRecord, error) {
	p := r.Pending
	if p == nil || !force && time.Since(p.At) < d.pendingGrace(r.Name) {
		return r, nil
	}
	c, err := d.client(r.Name)
	if err != nil {
		return nil, err
	}
	a, err := c.Query(ctx, r.Name, r.Type)
	if err != nil {
		return nil, dnsError(err)
	}
	fin := *r
	e := *p
	fin.Pending, fin.Last = nil, &e
	e.At = time.Now()
	switch {
	case slices.Equal(a.Values, p.New):
		e.Outcome = dnsConfirmed
		e.Error = "the controller that sent it stopped before recording it; the primary serves the new values"
		fin.Values, fin.TTL, fin.Exists = a.Values, a.TTL, a.Exists
		if fin.Failover != nil && p.To != "" {
			if f := d.cfg.Failover(r.Name); f != nil {
				src := dnsfailover.Operator
				if p.Kind == dnsKindAutomatic {
					src = dnsfailover.Automatic
				}
				st := dnsfailover.Applied(dnsfailover.PolicyFrom(f), *fin.Failover, p.To, e.At, src)
				fin.Failover = &st
			}
		}
	case slices.Equal(a.Values, p.Old):
		e.Outcome = dnsFailed
		e.Error = "the controller that sent it stopped; the primary serves the old values: not applied"
	default:
		e.Outcome = dnsUnknown
		e.Error = fmt.Sprintf("the controller that sent it stopped; the primary serves [%s], neither the old nor the new values", strings.Join(a.Values, " "))
		if fin.Failover != nil {
			st := dnsfailover.Block(*fin.Failover, "the record changed outside golive: "+e.Error)
			fin.Failover = &st
		}
	}
	if err := d.finish(ctx, r, &fin, "controller"); err != nil {
		return d.load(ctx, r.Name, r.Type)
	}
	return &fin, nil
}

// auditEntry is the audit entry of a change's start or end.
func (d *dnsService) auditEntry(e *dnsEntry, outcome, source string) audit.Entry {
	action := "dns_" + e.Kind
	detail := fmt.Sprintf("name=%s type=%s seq=%d old=[%s] new=[%s] ttl=%s", e.Name, e.Type, e.Seq, strings.Join(e.Old, " "), strings.Join(e.New, " "), e.TTL)
	if e.To != "" {
		detail += fmt.Sprintf(" from=%s to=%s", e.From, e.To)
	}
	if e.Token != 0 {
		detail += fmt.Sprintf(" fencing_token=%d", e.Token)
	}
	if e.Latency > 0 {
		detail += " latency=" + e.Latency.String()
	}
	if e.Error != "" {
		detail += " error=" + e.Error
	}
	if e.Command != "" {
		detail += " command=" + e.Command
	}
	return audit.Entry{Actor: e.Actor, Action: action, Outcome: outcome, Reason: e.Reason, Detail: detail, Source: source}
}

// dnsError maps a dnsupdate error onto the API's classes; its text (which
// never holds the secret) says what to do.
func dnsError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dnsupdate.ErrInvalid):
		return fmt.Errorf("%w: %w", apierr.ErrInvalid, err)
	case errors.Is(err, dnsupdate.ErrConflict), errors.Is(err, dnsupdate.ErrRefused), errors.Is(err, dnsupdate.ErrNotConfirmed):
		return fmt.Errorf("%w: %w", apierr.ErrConflict, err)
	case errors.Is(err, dnsupdate.ErrUnreachable), errors.Is(err, dnsupdate.ErrServer):
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return err
}

func sortedValues(v []string) []string {
	out := slices.Clone(v)
	slices.Sort(out)
	return slices.Compact(out)
}

// --- handlers ---

func (c *control) DnsShow(ctx context.Context, req *golivev1.DnsShowRequest) (*golivev1.DnsShowResponse, error) {
	d := c.s.dns
	if d == nil {
		return nil, apierr.ToStatus(errNoDNS)
	}
	type nt struct{ name, typ string }
	var names []nt
	if req.Name != "" {
		name := dnsconfig.CanonicalName(req.Name)
		if _, err := d.client(name); err != nil {
			return nil, apierr.ToStatus(err)
		}
		names = append(names, nt{name, d.typeOf(name, req.Type)})
	} else {
		seen := map[nt]bool{}
		for _, f := range d.cfg.Failovers {
			seen[nt{f.Name, string(f.Type)}] = true
		}
		resp, err := c.s.cli.Get(ctx, c.s.keys.DNSRecords(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, apierr.ToStatus(fmt.Errorf("%w: %v", apierr.ErrUnavailable, err))
		}
		for _, kv := range resp.Kvs {
			rest := strings.TrimPrefix(string(kv.Key), c.s.keys.DNSRecords())
			if i := strings.LastIndex(rest, "/"); i > 0 {
				seen[nt{rest[:i], rest[i+1:]}] = true
			}
		}
		for k := range seen {
			names = append(names, k)
		}
		sort.Slice(names, func(i, j int) bool {
			return names[i].name < names[j].name || names[i].name == names[j].name && names[i].typ < names[j].typ
		})
	}
	out := &golivev1.DnsShowResponse{}
	for _, n := range names {
		rec, err := d.show(ctx, n.name, n.typ)
		if err != nil {
			return nil, apierr.ToStatus(err)
		}
		out.Records = append(out.Records, rec)
	}
	return out, nil
}

// show is the API view of a record: the primary's answer beside the
// stored record.
func (d *dnsService) show(ctx context.Context, name, typ string) (*golivev1.DnsRecord, error) {
	cl, err := d.client(name)
	if err != nil {
		return nil, err
	}
	r, err := d.load(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	out := &golivev1.DnsRecord{Name: name, Type: typ, Zone: cl.Zone(), Server: cl.Server()}
	a, qerr := cl.Query(ctx, name, typ)
	if qerr != nil {
		out.QueryError = qerr.Error()
	} else {
		out.ServedExists, out.ServedValues, out.ServedTtl = a.Exists, a.Values, durationpb.New(a.TTL)
	}
	if r != nil {
		out.StoredValues, out.StoredTtl = r.Values, durationpb.New(r.TTL)
		out.Drift = qerr == nil && !slices.Equal(a.Values, r.Values)
		out.Last, out.Pending = entryProto(r.Last), entryProto(r.Pending)
	}
	if f := d.cfg.Failover(name); f != nil && string(f.Type) == typ {
		out.Failover = failoverProto(f, r)
		d.fillLastSwitch(ctx, r, out.Failover)
	}
	return out, nil
}

func failoverProto(f *dnsconfig.Failover, r *dnsRecord) *golivev1.DnsFailoverState {
	p := dnsfailover.PolicyFrom(f)
	st := dnsfailover.State{}
	if r != nil && r.Failover != nil {
		st = *r.Failover
	}
	out := &golivev1.DnsFailoverState{Primary: f.Primary, Secondary: f.Secondary, Active: dnsfailover.Active(p, st), Pinned: st.Pinned,
		Blocked: st.Blocked, Bad: uint32(st.Bad), Good: uint32(st.Good), Threshold: uint32(f.Check.Threshold), Interval: durationpb.New(f.Check.Interval),
		Recommended: st.Recommended, Switches: uint32(st.Switches), Failback: string(f.Failback)}
	if !st.LastCheck.IsZero() {
		out.LastCheck = timestamppb.New(st.LastCheck)
	}
	if !st.LastSwitch.IsZero() {
		out.LastSwitch = timestamppb.New(st.LastSwitch)
	}
	if st.Recommended != "" {
		out.Command = p.Command(st.Recommended)
	}
	if r != nil && r.Decision != nil {
		dec := r.Decision
		out.PrimaryHealth, out.SecondaryHealth, out.LastAction, out.LastReason = dec.Primary, dec.Secondary, dec.Action, dec.Reason
		if out.Command == "" {
			out.Command = dec.Command
		}
	}
	return out
}

func entryProto(e *dnsEntry) *golivev1.DnsHistoryEntry {
	if e == nil {
		return nil
	}
	out := &golivev1.DnsHistoryEntry{Seq: e.Seq, At: timestamppb.New(e.At), Name: e.Name, Type: e.Type, Kind: e.Kind, Actor: e.Actor,
		Outcome: e.Outcome, OldValues: e.Old, NewValues: e.New, Reason: e.Reason, Error: e.Error, FencingToken: e.Token,
		FromPool: e.From, ToPool: e.To, Command: e.Command}
	if e.TTL > 0 {
		out.Ttl = durationpb.New(e.TTL)
	}
	if e.Latency > 0 {
		out.Latency = durationpb.New(e.Latency)
	}
	return out
}

// DnsSet replaces a record's values: a production change, like a deploy.
// Without a live approval it is refused and nothing is written or sent.
func (c *control) DnsSet(ctx context.Context, req *golivev1.DnsSetRequest) (*golivev1.DnsSetResponse, error) {
	d := c.s.dns
	if d == nil {
		return nil, apierr.ToStatus(errNoDNS)
	}
	actor, src := actorAndSource(ctx)
	name := dnsconfig.CanonicalName(req.Name)
	if req.Name == "" || len(req.Values) == 0 {
		return nil, apierr.ToStatus(fmt.Errorf("%w: a NAME and at least one --value are required", apierr.ErrInvalid))
	}
	if _, err := d.client(name); err != nil {
		return nil, apierr.ToStatus(err)
	}
	typ := d.typeOf(name, req.Type)
	f := d.cfg.Failover(name)
	if f != nil && string(f.Type) != typ {
		f = nil
	}
	// The approval gate comes first: without it nothing is read or written.
	a, err := c.requireApproval(ctx)
	if err != nil {
		c.s.log.Warn("dns set refused: no approval", "actor", actor, "name", name, "type", typ)
		return nil, apierr.ToStatus(err)
	}
	ttl := req.Ttl.AsDuration()
	if req.Ttl == nil || ttl == 0 {
		ttl = dnsDefaultTTL
		if f != nil {
			ttl = f.TTL
		} else if r, err := d.load(ctx, name, typ); err == nil && r != nil && r.TTL > 0 {
			ttl = r.TTL
		}
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --ttl %s: want a whole number of seconds, at least 1s", apierr.ErrInvalid, ttl))
	}
	if f != nil && ttl > f.MaxTTL {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --ttl %s is above the failover's max_ttl %s for %s", apierr.ErrInvalid, ttl, f.MaxTTL, name))
	}
	ch := dnsChange{name: name, typ: typ, kind: dnsKindSet, actor: actor, source: src, reason: req.Reason, values: req.Values, ttl: ttl,
		fences: []clientv3.Cmp{c.s.approvals.Fence(a.Token)}, token: a.Token}
	if f != nil {
		p := dnsfailover.PolicyFrom(f)
		vals := sortedValues(req.Values)
		ch.confirmed = func(st dnsfailover.State, at time.Time) dnsfailover.State {
			for _, pool := range []string{f.Primary, f.Secondary} {
				if slices.Equal(vals, sortedValues(d.cfg.Pool(pool).Values(f.Type))) {
					return dnsfailover.Applied(p, st, pool, at, dnsfailover.Operator)
				}
			}
			return dnsfailover.Block(st, fmt.Sprintf("set by %s with dns set to [%s], neither pool's addresses; `%s` hands it back to automation",
				actor, strings.Join(vals, " "), p.Command(f.Primary)))
		}
	}
	e, r, err := d.change(ctx, ch)
	if errors.Is(err, errFenced) {
		if _, aerr := c.requireApproval(ctx); aerr != nil {
			return nil, apierr.ToStatus(aerr)
		}
		err = fmt.Errorf("%w: the record %s %s changed while this change was prepared: retry", apierr.ErrConflict, name, typ)
	}
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	view, err := d.show(ctx, name, typ)
	if err != nil {
		view = &golivev1.DnsRecord{Name: name, Type: typ, StoredValues: r.Values}
	}
	return &golivev1.DnsSetResponse{Result: entryProto(e), Record: view}, nil
}

// DnsFailover is the operator's safety path: it points a failover record
// at one of its pools without an approval, audited. Moving it off the
// primary pins it there: automation then only recommends until an operator
// moves it back.
func (c *control) DnsFailover(ctx context.Context, req *golivev1.DnsFailoverRequest) (*golivev1.DnsFailoverResponse, error) {
	d := c.s.dns
	if d == nil {
		return nil, apierr.ToStatus(errNoDNS)
	}
	actor, src := actorAndSource(ctx)
	name := dnsconfig.CanonicalName(req.Name)
	f := d.cfg.Failover(name)
	if req.Name == "" || f == nil {
		return nil, apierr.ToStatus(fmt.Errorf("%w: no failover block for %q in --dns-config (failovers: %s)", apierr.ErrNotFound, name, d.failoverNames()))
	}
	if req.To != f.Primary && req.To != f.Secondary {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --to %q: want the failover's primary %q or secondary %q", apierr.ErrInvalid, req.To, f.Primary, f.Secondary))
	}
	p := dnsfailover.PolicyFrom(f)
	from := f.Primary
	if r, err := d.load(ctx, name, string(f.Type)); err == nil && r != nil && r.Failover != nil {
		from = dnsfailover.Active(p, *r.Failover)
	}
	to := req.To
	ch := dnsChange{name: name, typ: string(f.Type), kind: dnsKindFailover, actor: actor, source: src, reason: req.Reason,
		values: d.cfg.Pool(to).Values(f.Type), ttl: f.TTL, from: from, to: to,
		confirmed: func(st dnsfailover.State, at time.Time) dnsfailover.State {
			return dnsfailover.Applied(p, st, to, at, dnsfailover.Operator)
		}}
	e, r, err := d.change(ctx, ch)
	if errors.Is(err, errFenced) {
		err = fmt.Errorf("%w: the record %s changed while this failover was prepared: retry", apierr.ErrConflict, name)
	}
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	d.metrics.switched(f, r, dnsfailover.Operator)
	c.s.notifier.Notify(dnsNotifyEvent(kindDNSSwitched, actor, e, ""))
	view, err := d.show(ctx, name, string(f.Type))
	if err != nil {
		view = &golivev1.DnsRecord{Name: name, Type: string(f.Type), StoredValues: r.Values}
	}
	return &golivev1.DnsFailoverResponse{Result: entryProto(e), Record: view}, nil
}

func (d *dnsService) failoverNames() string {
	var n []string
	for _, f := range d.cfg.Failovers {
		n = append(n, f.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// DnsHistory lists a record's history (or every record's), newest first.
func (c *control) DnsHistory(ctx context.Context, req *golivev1.DnsHistoryRequest) (*golivev1.DnsHistoryResponse, error) {
	d := c.s.dns
	if d == nil {
		return nil, apierr.ToStatus(errNoDNS)
	}
	prefix := c.s.keys.DNSHistoryAll()
	if req.Name != "" {
		name := dnsconfig.CanonicalName(req.Name)
		prefix = c.s.keys.DNSHistory(name, d.typeOf(name, req.Type))
	}
	resp, err := c.s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, apierr.ToStatus(fmt.Errorf("%w: %v", apierr.ErrUnavailable, err))
	}
	var entries []*dnsEntry
	for _, kv := range resp.Kvs {
		var e dnsEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			c.s.log.Warn("unreadable dns history entry", "key", string(kv.Key), "error", err)
			continue
		}
		entries = append(entries, &e)
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if !entries[i].At.Equal(entries[j].At) {
			return entries[i].At.After(entries[j].At)
		}
		return entries[i].Seq > entries[j].Seq
	})
	limit := int(req.Limit)
	if limit <= 0 {
		limit = 50
	}
	out := &golivev1.DnsHistoryResponse{}
	for i, e := range entries {
		if i >= limit {
			break
		}
		out.Entries = append(out.Entries, entryProto(e))
	}
	return out, nil
}
