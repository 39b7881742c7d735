package dnsupdate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/golive/golive/internal/dnsconfig"
)

// tsigFudge is the clock skew the TSIG signature tolerates (RFC 8945 §10).
const tsigFudge = 300

var algorithms = map[dnsconfig.Algorithm]string{
	dnsconfig.HMACSHA1:   dns.HmacSHA1,
	dnsconfig.HMACSHA224: dns.HmacSHA224,
	dnsconfig.HMACSHA256: dns.HmacSHA256,
	dnsconfig.HMACSHA384: dns.HmacSHA384,
	dnsconfig.HMACSHA512: dns.HmacSHA512,
}

// miekgTransport talks to one server with github.com/miekg/dns v1.
type miekgTransport struct {
	server  string
	keyName string           // canonical
	alg     string           // dns.HmacSHA256, ...
	secret  dnsconfig.Secret // never a string here: a %+v of the client must not show it
	timeout time.Duration
}

var _ transport = (*miekgTransport)(nil)

func newMiekg(server string, key dnsconfig.TSIGKey, timeout time.Duration) (*miekgTransport, error) {
	alg, ok := algorithms[key.Algorithm]
	if !ok {
		return nil, fmt.Errorf("unsupported TSIG algorithm %q", key.Algorithm)
	}
	return &miekgTransport{
		server:  server,
		keyName: dns.CanonicalName(key.Name),
		alg:     alg,
		secret:  key.Secret,
		timeout: timeout,
	}, nil
}

func (t *miekgTransport) exchange(ctx context.Context, m *dns.Msg, network string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: t.timeout, TsigSecret: map[string]string{t.keyName: t.secret.Base64()}}
	m.SetTsig(t.keyName, t.alg, tsigFudge, time.Now().Unix())
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, t.server)
	if err != nil {
		return nil, errNotSent{err}
	}
	defer conn.Close()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if r != nil && err != nil && r.IsTsig() != nil {
		// The server answered but its signature did not verify: an unsigned
		// error reply (BADSIG, BADKEY) or a reply signed with another key.
		return r, &verifyError{err}
	}
	return r, err
}

type verifyError struct{ err error }

func (e *verifyError) Error() string { return "reply signature: " + e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

func (t *miekgTransport) toReply(r *dns.Msg, name string, qtype uint16) reply {
	out := reply{rcode: dns.RcodeToString[r.Rcode], authoritative: r.Authoritative, signed: r.IsTsig() != nil}
	if out.rcode == "" {
		out.rcode = fmt.Sprintf("RCODE%d", r.Rcode)
	}
	if ts := r.IsTsig(); ts != nil && ts.Error != 0 {
		out.tsigError = dns.RcodeToString[int(ts.Error)]
		if out.tsigError == "" {
			out.tsigError = fmt.Sprintf("TSIG%d", ts.Error)
		}
	}
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && strings.EqualFold(h.Name, name) {
			out.records = append(out.records, record{ttl: h.Ttl, value: rdata(rr)})
		}
	}
	return out
}

func (t *miekgTransport) update(ctx context.Context, u updateMsg) (reply, error) {
	qtype, ok := dns.StringToType[u.typ]
	if !ok {
		return reply{}, errNotSent{fmt.Errorf("unknown record type %q", u.typ)}
	}
	old, err := t.rrs(u.name, u.typ, 0, u.old)
	if err != nil {
		return reply{}, errNotSent{err}
	}
	insert, err := t.rrs(u.name, u.typ, u.ttl, u.new)
	if err != nil {
		return reply{}, errNotSent{err}
	}
	m := new(dns.Msg)
	m.SetUpdate(u.zone)
	set := []dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: u.name, Rrtype: qtype, Class: dns.ClassINET}}}
	if len(old) == 0 {
		m.RRsetNotUsed(set)
	} else {
		m.Used(old)
	}
	m.RemoveRRset(set)
	if len(insert) > 0 {
		m.Insert(insert)
	}
	r, err := t.exchange(ctx, m, "tcp")
	if r == nil {
		return reply{}, err
	}
	out := t.toReply(r, u.name, qtype)
	if err != nil {
		out.verifyErr = err
	}
	return out, nil
}

func (t *miekgTransport) query(ctx context.Context, name, typ string) (reply, error) {
	qtype, ok := dns.StringToType[typ]
	if !ok {
		return reply{}, errNotSent{fmt.Errorf("unknown record type %q", typ)}
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	r, err := t.exchange(ctx, m, "udp")
	var ne net.Error
	if (err == nil && r.Truncated) || (r == nil && errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil) {
		// Truncated, or a UDP datagram lost: a query is safe to repeat.
		m.Extra = nil
		r, err = t.exchange(ctx, m, "tcp")
	}
	if r == nil {
		return reply{}, err
	}
	out := t.toReply(r, name, qtype)
	if err != nil {
		out.verifyErr = err
	}
	return out, nil
}

func (t *miekgTransport) canonical(name, typ string, values []string) ([]string, error) {
	if _, ok := dns.StringToType[typ]; !ok {
		return nil, fmt.Errorf("unknown record type %q", typ)
	}
	rrs, err := t.rrs(name, typ, 0, values)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		out[i] = rdata(rr)
	}
	return out, nil
}

// rrs parses values as records name ttl IN typ value.
func (t *miekgTransport) rrs(name, typ string, ttl uint32, values []string) ([]dns.RR, error) {
	out := make([]dns.RR, 0, len(values))
	for _, v := range values {
		if strings.ContainsAny(v, "\n;()") {
			return nil, fmt.Errorf("%s value %q: newlines, ';' and parentheses are not allowed", typ, v)
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, ttl, typ, v))
		if err != nil || rr == nil {
			return nil, fmt.Errorf("%s value %q is not valid", typ, v)
		}
		out = append(out, rr)
	}
	return out, nil
}

// rdata is a record's value in presentation form, without its header.
func rdata(rr dns.RR) string {
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}
