package dnsupdate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
)

// Defaults.
const (
	DefaultConfirmTimeout = 10 * time.Second
	// firstPoll and maxPoll bound the wait between confirmation queries.
	firstPoll = 2 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// Change replaces one RRset (name and type) on the zone's primary.
type Change struct {
	// Name is the owner name, in the zone ("www.example.test").
	Name string `json:"name"`
	// Type is the record type ("A", "AAAA", "CNAME", "TXT").
	Type string `json:"type"`
	// TTL of the new records, whole seconds.
	TTL time.Duration `json:"ttl"`
	// Old is what the caller knows is there now: the last confirmed values
	// (from its own record of them, not a fresh read, or the prerequisite
	// protects nothing). Empty: the RRset must not exist.
	Old []string `json:"old"`
	// New replaces it. Empty deletes the RRset.
	New []string `json:"new"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s [%s] -> [%s] ttl %s", c.Name, c.Type, strings.Join(c.Old, " "), strings.Join(c.New, " "), c.TTL)
}

// Result is a change the server applied and answers.
type Result struct {
	// Change as sent: names canonical, values canonical and sorted.
	Change Change `json:"change"`
	// Rcode is the server's answer to the UPDATE ("NOERROR").
	Rcode string `json:"rcode"`
	// SentAt is when the UPDATE was sent; ConfirmedAt when the server first
	// answered the new data; Latency is between the two.
	SentAt      time.Time     `json:"sent_at"`
	ConfirmedAt time.Time     `json:"confirmed_at"`
	Latency     time.Duration `json:"latency"`
	// Queries is how many queries the confirmation took.
	Queries int `json:"queries"`
}

// Answer is what the zone's primary answers now for a name and type.
type Answer struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Exists is false when the server has no such RRset (NXDOMAIN or
	// NODATA); Values is then empty.
	Exists bool `json:"exists"`
	// Values are the records' values, canonical and sorted.
	Values []string `json:"values"`
	// TTL of the RRset (0 when it does not exist).
	TTL           time.Duration `json:"ttl"`
	Rcode         string        `json:"rcode"`
	Authoritative bool          `json:"authoritative"`
	Server        string        `json:"server"`
	At            time.Time     `json:"at"`
}

// Options tune a Client.
type Options struct {
	// ConfirmTimeout bounds how long Apply queries for the new data after
	// the server accepted it. Default DefaultConfirmTimeout.
	ConfirmTimeout time.Duration
	// Metrics, when set, count updates and their latency.
	Metrics *Metrics
}

// Client updates and queries one zone on its primary. It is safe for
// concurrent use; each call is its own exchange.
type Client struct {
	zone    string
	server  string
	secret  dnsconfig.Secret // only to redact lower layers' errors
	confirm time.Duration
	metrics *Metrics
	t       transport
}

// New returns a client for zone z, whose key must be loaded
// (dnsconfig.Config.LoadSecrets).
func New(z *dnsconfig.Zone, opts Options) (*Client, error) {
	if z.Key.Secret.IsZero() {
		return nil, fmt.Errorf("dns zone %s: key %s has no secret loaded", z.Name, z.Key.Name)
	}
	timeout := z.Timeout
	if timeout <= 0 {
		timeout = dnsconfig.DefaultTimeout
	}
	t, err := newMiekg(z.Server, z.Key, timeout)
	if err != nil {
		return nil, fmt.Errorf("dns zone %s: %w", z.Name, err)
	}
	confirm := opts.ConfirmTimeout
	if confirm <= 0 {
		confirm = DefaultConfirmTimeout
	}
	c := &Client{zone: dnsconfig.CanonicalName(z.Name), server: z.Server, secret: z.Key.Secret, confirm: confirm, metrics: opts.Metrics, t: t}
	c.metrics.initZone(c.zone)
	return c, nil
}

// Zone is the zone's canonical name.
func (c *Client) Zone() string { return c.zone }

// Server is the primary's host:port.
func (c *Client) Server() string { return c.server }

func (c *Client) fail(op, name, typ string, kind error, r *reply, detail string) *Error {
	e := &Error{Op: op, Server: c.server, Name: name, Type: typ, Kind: kind, Detail: redact(detail, c.secret.Base64())}
	if r != nil {
		e.Rcode, e.TSIGError = r.rcode, r.tsigError
	}
	return e
}

// check canonicalises a name and type and checks the name is in the zone.
func (c *Client) check(op, name, typ string) (string, string, error) {
	n, ty := dnsconfig.CanonicalName(name), strings.ToUpper(strings.TrimSpace(typ))
	if !dnsconfig.InZone(n, c.zone) {
		return n, ty, &Error{Op: op, Server: c.server, Name: n, Type: ty, Kind: ErrInvalid, Detail: "the name is not in zone " + c.zone}
	}
	switch ty {
	case "SOA", "ANY", "AXFR", "IXFR", "TSIG", "OPT", "":
		return n, ty, &Error{Op: op, Server: c.server, Name: n, Type: ty, Kind: ErrInvalid, Detail: "record type " + ty + " cannot be set or shown this way"}
	}
	if _, err := c.t.canonical(n, ty, nil); err != nil {
		return n, ty, &Error{Op: op, Server: c.server, Name: n, Type: ty, Kind: ErrInvalid, Detail: err.Error()}
	}
	return n, ty, nil
}

// Query asks the zone's primary what it answers now for name and type.
func (c *Client) Query(ctx context.Context, name, typ string) (*Answer, error) {
	n, ty, err := c.check("query", name, typ)
	if err != nil {
		return nil, err
	}
	return c.query(ctx, n, ty)
}

func (c *Client) query(ctx context.Context, name, typ string) (*Answer, error) {
	r, err := c.t.query(ctx, name, typ)
	if err != nil {
		return nil, c.fail("query", name, typ, classifyNet(err), nil, err.Error())
	}
	if r.verifyErr != nil || !r.signed {
		if kind := rcodeKind(r.rcode); kind == ErrRefused {
			// BADSIG/BADKEY replies are unsigned by necessity.
			return nil, c.fail("query", name, typ, kind, &r, "")
		}
		detail := "the reply is not signed"
		if r.verifyErr != nil {
			detail = r.verifyErr.Error()
		}
		return nil, c.fail("query", name, typ, ErrNotConfirmed, &r, detail)
	}
	switch r.rcode {
	case "NOERROR", "NXDOMAIN":
	default:
		return nil, c.fail("query", name, typ, rcodeKindOr(r.rcode, ErrServer), &r, "")
	}
	if !r.authoritative {
		return nil, c.fail("query", name, typ, ErrServer, &r, "the server is not authoritative for the zone")
	}
	a := &Answer{Name: name, Type: typ, Rcode: r.rcode, Authoritative: r.authoritative, Server: c.server, At: time.Now()}
	for i, rec := range r.records {
		if i == 0 || time.Duration(rec.ttl)*time.Second < a.TTL {
			a.TTL = time.Duration(rec.ttl) * time.Second
		}
		a.Values = append(a.Values, rec.value)
	}
	a.Values = sortedSet(a.Values)
	a.Exists = len(a.Values) > 0
	return a, nil
}

// Apply sends ch as one UPDATE and waits until the primary answers the new
// data (bounded by Options.ConfirmTimeout and ctx). On error nothing was
// changed, except as the *Error says (Kind ErrNotConfirmed, or Unknown).
func (c *Client) Apply(ctx context.Context, ch Change) (*Result, error) {
	res, err := c.apply(ctx, ch)
	c.metrics.observe(c.zone, res, err)
	return res, err
}

func (c *Client) apply(ctx context.Context, ch Change) (*Result, error) {
	n, ty, err := c.check("update", ch.Name, ch.Type)
	if err != nil {
		return nil, err
	}
	ch.Name, ch.Type = n, ty
	if ch.TTL < 0 || ch.TTL%time.Second != 0 || ch.TTL > (1<<31-1)*time.Second {
		return nil, c.fail("update", n, ty, ErrInvalid, nil, fmt.Sprintf("TTL %s is not a whole number of seconds in range", ch.TTL))
	}
	if ch.Old, err = c.t.canonical(n, ty, ch.Old); err != nil {
		return nil, c.fail("update", n, ty, ErrInvalid, nil, "old values: "+err.Error())
	}
	if ch.New, err = c.t.canonical(n, ty, ch.New); err != nil {
		return nil, c.fail("update", n, ty, ErrInvalid, nil, "new values: "+err.Error())
	}
	ch.Old, ch.New = sortedSet(ch.Old), sortedSet(ch.New)
	sent := time.Now()
	r, err := c.t.update(ctx, updateMsg{zone: c.zone, name: n, typ: ty, ttl: uint32(ch.TTL / time.Second), old: ch.Old, new: ch.New})
	if err != nil {
		return c.lostReply(ctx, ch, sent, err)
	}
	if kind := rcodeKind(r.rcode); kind != nil {
		return nil, c.fail("update", n, ty, kind, &r, "")
	}
	if r.verifyErr != nil || !r.signed {
		detail := "the reply is not signed"
		if r.verifyErr != nil {
			detail = r.verifyErr.Error()
		}
		e := c.fail("update", n, ty, ErrNotConfirmed, &r, detail)
		e.Unknown = true
		return nil, e
	}
	return c.confirmApplied(ctx, ch, sent, r.rcode)
}

// lostReply handles an update that got no reply: if it was never sent,
// nothing changed; otherwise one query tells whether it landed.
func (c *Client) lostReply(ctx context.Context, ch Change, sent time.Time, err error) (*Result, error) {
	kind := classifyNet(err)
	e := c.fail("update", ch.Name, ch.Type, kind, nil, err.Error())
	if notSent(err) {
		return nil, e
	}
	if ctx.Err() != nil {
		e.Unknown = true
		return nil, e
	}
	a, qerr := c.query(ctx, ch.Name, ch.Type)
	switch {
	case qerr != nil:
		e.Unknown = true
	case slices.Equal(a.Values, ch.New) && (!a.Exists || a.TTL == ch.TTL):
		now := time.Now()
		return &Result{Change: ch, Rcode: "NOERROR", SentAt: sent, ConfirmedAt: now, Latency: now.Sub(sent), Queries: 1}, nil
	case slices.Equal(a.Values, ch.Old):
		e.Detail += "; the server answers the old records"
	default:
		e.Detail += fmt.Sprintf("; the server answers [%s], neither the old nor the new records", strings.Join(a.Values, " "))
	}
	return nil, e
}

// confirmApplied queries until the server answers ch.New.
func (c *Client) confirmApplied(ctx context.Context, ch Change, sent time.Time, rcode string) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.confirm)
	defer cancel()
	wait := firstPoll
	var last string
	for q := 1; ; q++ {
		a, err := c.query(ctx, ch.Name, ch.Type)
		if err == nil && slices.Equal(a.Values, ch.New) && (!a.Exists || a.TTL == ch.TTL) {
			return &Result{Change: ch, Rcode: rcode, SentAt: sent, ConfirmedAt: a.At, Latency: a.At.Sub(sent), Queries: q}, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("it answers [%s] ttl %s", strings.Join(a.Values, " "), a.TTL)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			e := c.fail("update", ch.Name, ch.Type, ErrNotConfirmed, &reply{rcode: rcode}, fmt.Sprintf("after %d queries in %s, %s", q, time.Since(sent).Round(time.Millisecond), last))
			e.Changed = true
			return nil, e
		case <-timer.C:
		}
		wait = min(2*wait, maxPoll)
	}
}

// rcodeKind maps a failing rcode to its kind; nil for NOERROR.
func rcodeKind(rcode string) error {
	switch rcode {
	case "NOERROR":
		return nil
	case "REFUSED", "NOTAUTH":
		return ErrRefused
	case "YXRRSET", "NXRRSET", "YXDOMAIN", "NXDOMAIN":
		return ErrConflict
	}
	return ErrServer
}

func rcodeKindOr(rcode string, def error) error {
	if k := rcodeKind(rcode); k != nil && k != ErrConflict {
		return k
	}
	return def
}

// classifyNet maps a transport error to its kind.
func classifyNet(err error) error {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.As(err, &ne) && ne.Timeout(), errors.As(err, &oe):
		return ErrUnreachable
	case notSent(err):
		return ErrUnreachable
	}
	return ErrServer
}

func sortedSet(v []string) []string {
	out := slices.Clone(v)
	slices.Sort(out)
	return slices.Compact(out)
}
