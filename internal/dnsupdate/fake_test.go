package dnsupdate

import (
	"context"
	"errors"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/dnsconfig"
)

// fakeTransport answers from a script, for the paths a real server does
// not take on demand (a lost reply, an unsigned NOERROR, a lagging answer).
type fakeTransport struct {
	mu        sync.Mutex
	updateErr error
	upd       reply
	answers   []reply // successive query replies; the last repeats
	queryErr  error
	queries   int
}

func (f *fakeTransport) update(context.Context, updateMsg) (reply, error) {
	return f.upd, f.updateErr
}

func (f *fakeTransport) query(context.Context, string, string) (reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.queryErr != nil {
		return reply{}, f.queryErr
	}
	r := f.answers[min(f.queries, len(f.answers))-1]
	return r, nil
}

func (f *fakeTransport) canonical(_, _ string, v []string) ([]string, error) { return v, nil }

const fakeSecret = "RkFLRS1jYW5hcnktc2VjcmV0" // what redaction must remove

func fakeClient(f *fakeTransport) *Client {
	secret, err := dnsconfig.NewSecret(fakeSecret)
	if err != nil {
		panic(err)
	}
	return &Client{zone: "example.test.", server: "192.0.2.53:53", secret: secret, confirm: 200 * time.Millisecond, t: f}
}

func answer(values ...string) reply {
	r := reply{rcode: "NOERROR", signed: true, authoritative: true}
	for _, v := range values {
		r.records = append(r.records, record{ttl: 30, value: v})
	}
	return r
}

var change = Change{Name: "www.example.test.", Type: "A", TTL: 30 * time.Second, Old: []string{"192.0.2.1"}, New: []string{"192.0.2.2"}}

func TestFakePaths(t *testing.T) {
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout with " + fakeSecret)} // a lower layer that leaks
	tests := []struct {
		name        string
		give        *fakeTransport
		wantKind    error // nil: success
		wantChanged bool
		wantUnknown bool
		wantText    string
	}{
		{name: "confirmed after lag", give: &fakeTransport{upd: answer(), answers: []reply{answer("192.0.2.1"), answer("192.0.2.1"), answer("192.0.2.2")}}},
		{name: "reply lost, change landed", give: &fakeTransport{updateErr: netErr, answers: []reply{answer("192.0.2.2")}}},
		{name: "reply lost, old records", give: &fakeTransport{updateErr: netErr, answers: []reply{answer("192.0.2.1")}},
			wantKind: ErrUnreachable, wantText: "the server answers the old records"},
		{name: "reply lost, server gone", give: &fakeTransport{updateErr: netErr, queryErr: netErr},
			wantKind: ErrUnreachable, wantUnknown: true, wantText: "either all old or all new"},
		{name: "reply lost, someone else", give: &fakeTransport{updateErr: netErr, answers: []reply{answer("192.0.2.9")}},
			wantKind: ErrUnreachable, wantText: "answers [192.0.2.9], neither the old nor the new"},
		{name: "never sent", give: &fakeTransport{updateErr: errNotSent{errors.New("connect: connection refused")}},
			wantKind: ErrUnreachable, wantText: "nothing was changed"},
		{name: "unsigned NOERROR", give: &fakeTransport{upd: reply{rcode: "NOERROR"}},
			wantKind: ErrNotConfirmed, wantUnknown: true, wantText: "not signed"},
		{name: "never answers the new data", give: &fakeTransport{upd: answer(), answers: []reply{answer("192.0.2.1")}},
			wantKind: ErrNotConfirmed, wantChanged: true, wantText: "it answers [192.0.2.1]"},
		{name: "servfail", give: &fakeTransport{upd: reply{rcode: "SERVFAIL", signed: true}}, wantKind: ErrServer},
		{name: "not authoritative", give: &fakeTransport{upd: answer(), answers: []reply{{rcode: "NOERROR", signed: true}}},
			wantKind: ErrNotConfirmed, wantChanged: true, wantText: "not authoritative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := fakeClient(tt.give).Apply(context.Background(), change)
			if tt.wantKind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.Latency < 0 || res.Queries < 1 {
					t.Fatalf("result = %+v", res)
				}
				return
			}
			var e *Error
			if !errors.Is(err, tt.wantKind) || !errors.As(err, &e) {
				t.Fatalf("error = %v, want %v", err, tt.wantKind)
			}
			if e.Changed != tt.wantChanged || e.Unknown != tt.wantUnknown || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error = %v (changed %v unknown %v), want changed %v unknown %v containing %q", err, e.Changed, e.Unknown, tt.wantChanged, tt.wantUnknown, tt.wantText)
			}
			if strings.Contains(err.Error(), fakeSecret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeClient(&fakeTransport{upd: answer(), answers: []reply{answer("192.0.2.2")}})
	c.metrics = m
	m.initZone(c.zone)
	if _, err := c.Apply(context.Background(), change); err != nil {
		t.Fatal(err)
	}
	c.t = &fakeTransport{upd: reply{rcode: "NXRRSET", signed: true}}
	if _, err := c.Apply(context.Background(), change); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"golive_controller_dns_updates_total result=confirmed zone=example.test.":     1,
		"golive_controller_dns_updates_total result=conflict zone=example.test.":      1,
		"golive_controller_dns_updates_total result=refused zone=example.test.":       0,
		"golive_controller_dns_updates_total result=unreachable zone=example.test.":   0,
		"golive_controller_dns_updates_total result=not_confirmed zone=example.test.": 0,
		"golive_controller_dns_updates_total result=server_error zone=example.test.":  0,
		"golive_controller_dns_updates_total result=invalid zone=example.test.":       0,
		"golive_controller_dns_update_duration_seconds zone=example.test.":            1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("metrics = %v\nwant      %v", got, want)
	}
}
