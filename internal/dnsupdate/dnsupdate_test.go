package dnsupdate_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
)

const www = "www.example.test."

// eachServer runs f against a fresh BIND and a fresh Knot.
func eachServer(t *testing.T, f func(t *testing.T, s *dnstest.Server)) {
	for _, kind := range dnstest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			f(t, dnstest.Start(t, kind))
		})
	}
}

func newClient(t *testing.T, z *dnsconfig.Zone) *dnsupdate.Client {
	t.Helper()
	c, err := dnsupdate.New(z, dnsupdate.Options{ConfirmTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertNoSecret(t *testing.T, s *dnstest.Server, err error) {
	t.Helper()
	if err == nil {
		return
	}
	text := fmt.Sprintf("%v %+v %#v", err, err, err)
	for name, sec := range s.Secrets {
		if strings.Contains(text, sec) {
			t.Errorf("error leaks the secret of key %s: %s", name, text)
		}
	}
}

// assertRecords checks what the server answers for www A.
func assertRecords(t *testing.T, c *dnsupdate.Client, want []string, ttl time.Duration) {
	t.Helper()
	a, err := c.Query(t.Context(), www, "A")
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(a.Values, w) || (len(w) > 0 && a.TTL != ttl) || a.Exists != (len(w) > 0) || !a.Authoritative {
		t.Fatalf("server answers %v ttl %s (exists %v, aa %v), want %v ttl %s", a.Values, a.TTL, a.Exists, a.Authoritative, w, ttl)
	}
}

func assertRecordsOf(t *testing.T, c *dnsupdate.Client, name, typ string, want []string) {
	t.Helper()
	a, err := c.Query(t.Context(), name, typ)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if !slices.Equal(a.Values, want) {
		t.Fatalf("%s %s: server answers %v, want %v", name, typ, a.Values, want)
	}
}

func sortLatencies(l dnsupdate.Latencies) dnsupdate.Latencies {
	return slices.Sorted(slices.Values(l))
}

func TestApplyConfirmed(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		c := newClient(t, s.ZoneConfig(dnstest.KeyGolive))
		ctx := t.Context()
		assertRecords(t, c, dnstest.InitialRecords, 30*time.Second)

		res, err := c.Apply(ctx, dnsupdate.Change{Name: "WWW.example.test", Type: "a", TTL: 20 * time.Second,
			Old: []string{"192.0.2.11", "192.0.2.10"}, New: []string{"198.51.100.7", "198.51.100.8"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Rcode != "NOERROR" || res.Queries < 1 || res.Latency <= 0 || res.ConfirmedAt.Before(res.SentAt) ||
			res.Change.Name != www || res.Change.Type != "A" {
			t.Fatalf("result = %+v", res)
		}
		assertRecords(t, c, []string{"198.51.100.7", "198.51.100.8"}, 20*time.Second)

		// A new name (must not exist), then its deletion.
		add := dnsupdate.Change{Name: "api.example.test", Type: "AAAA", TTL: 10 * time.Second, New: []string{"2001:db8::0:1"}}
		res, err = c.Apply(ctx, add)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Change.New, []string{"2001:db8::1"}) {
			t.Fatalf("values not canonical: %v", res.Change.New)
		}
		if _, err := c.Apply(ctx, add); !errors.Is(err, dnsupdate.ErrConflict) {
			t.Fatalf("adding an existing RRset again: %v, want ErrConflict", err)
		}
		if _, err := c.Apply(ctx, dnsupdate.Change{Name: "api.example.test", Type: "AAAA", Old: []string{"2001:db8::1"}}); err != nil {
			t.Fatal(err)
		}
		a, err := c.Query(ctx, "api.example.test", "AAAA")
		if err != nil || a.Exists || a.Rcode != "NXDOMAIN" {
			t.Fatalf("after delete: %+v, %v", a, err)
		}
	})
}

func TestWrongKeyRefused(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		good := newClient(t, s.ZoneConfig(dnstest.KeyGolive))
		ch := dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: dnstest.InitialRecords, New: []string{"203.0.113.66"}}
		tests := []struct {
			name string
			give *dnsconfig.Zone
		}{
			{name: "wrong secret", give: s.WrongSecret(dnstest.KeyGolive)},
			{name: "unknown key", give: s.ZoneConfig("nosuchkey")},
			{name: "key without update rights", give: s.ZoneConfig(dnstest.KeyReadonly)},
		}
		for _, tt := range tests {
			_, err := newClient(t, tt.give).Apply(t.Context(), ch)
			var de *dnsupdate.Error
			if !errors.Is(err, dnsupdate.ErrRefused) || !errors.As(err, &de) || (de.Rcode != "REFUSED" && de.Rcode != "NOTAUTH") || de.Changed {
				t.Fatalf("%s: %v, want ErrRefused (REFUSED or NOTAUTH)", tt.name, err)
			}
			t.Logf("%s: %v", tt.name, err)
			assertNoSecret(t, s, err)
			assertRecords(t, good, dnstest.InitialRecords, 30*time.Second)
		}
	})
}

func TestServerStopped(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		c := newClient(t, s.ZoneConfig(dnstest.KeyGolive))
		// A confirmed change first: it must survive the restart (journal).
		applied := []string{"198.51.100.1"}
		if _, err := c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: dnstest.InitialRecords, New: applied}); err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: applied, New: []string{"203.0.113.1"}})
		var de *dnsupdate.Error
		if !errors.Is(err, dnsupdate.ErrUnreachable) || !errors.As(err, &de) || de.Changed || de.Unknown {
			t.Fatalf("update with the server stopped: %v, want ErrUnreachable with nothing changed", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s to fail", d)
		}
		t.Logf("stopped: %v", err)
		assertNoSecret(t, s, err)
		if _, err := c.Query(t.Context(), www, "A"); !errors.Is(err, dnsupdate.ErrUnreachable) {
			t.Fatalf("query with the server stopped: %v, want ErrUnreachable", err)
		}
		if err := s.Restart(); err != nil {
			t.Fatal(err)
		}
		assertRecords(t, c, applied, 30*time.Second)
	})
}

// TestChangedBySomeoneElse: nsupdate with another key changes the record
// between golive's read and its write; golive's update is refused by its
// prerequisite and the other change stands.
func TestChangedBySomeoneElse(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		c := newClient(t, s.ZoneConfig(dnstest.KeyGolive))
		a, err := c.Query(t.Context(), www, "A") // golive reads
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Nsupdate(t.Context(), dnstest.KeyOther, "update add www.example.test. 30 IN A 192.0.2.99")
		if err != nil {
			t.Fatalf("nsupdate: %v\n%s", err, out)
		}
		theirs := append(slices.Clone(dnstest.InitialRecords), "192.0.2.99")
		assertRecords(t, c, theirs, 30*time.Second)

		_, err = c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: a.Values, New: []string{"203.0.113.5"}})
		var de *dnsupdate.Error
		if !errors.Is(err, dnsupdate.ErrConflict) || !errors.As(err, &de) || (de.Rcode != "NXRRSET" && de.Rcode != "YXRRSET") {
			t.Fatalf("update over someone else's change: %v, want ErrConflict (NXRRSET)", err)
		}
		t.Logf("conflict: %v", err)
		assertNoSecret(t, s, err)
		assertRecords(t, c, theirs, 30*time.Second)

		// A subset of the values is not the RRset either.
		if _, err := c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: dnstest.InitialRecords[:1], New: []string{"203.0.113.5"}}); !errors.Is(err, dnsupdate.ErrConflict) {
			t.Fatalf("update with a subset as the old values: %v, want ErrConflict", err)
		}
		assertRecords(t, c, theirs, 30*time.Second)
	})
}

// TestConcurrentUpdates: two writers (golive and "other") start from the
// same values at once; exactly one wins, the other is refused, and the
// server answers the winner's values.
func TestConcurrentUpdates(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		clients := []*dnsupdate.Client{newClient(t, s.ZoneConfig(dnstest.KeyGolive)), newClient(t, s.ZoneConfig(dnstest.KeyOther))}
		values := [][]string{{"203.0.113.10"}, {"203.0.113.20"}}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Go(func() {
				_, errs[i] = c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: dnstest.InitialRecords, New: values[i]})
			})
		}
		wg.Wait()
		var winner = -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatal("both updates succeeded")
				}
				winner = i
			case !errors.Is(err, dnsupdate.ErrConflict):
				t.Fatalf("writer %d: %v, want success or ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("no update succeeded: %v", errs)
		}
		assertRecords(t, clients[0], values[winner], 30*time.Second)
	})
}

func TestInvalidChange(t *testing.T) {
	z := &dnsconfig.Zone{Name: "example.test.", Server: "127.0.0.1:1", Timeout: time.Second}
	z.Key.Name, z.Key.Algorithm = "golive.", dnsconfig.HMACSHA256
	if _, err := dnsupdate.New(z, dnsupdate.Options{}); err == nil {
		t.Fatal("New accepted a zone without a secret")
	}
	z.Key.Secret, _ = dnsconfig.NewSecret("c2VjcmV0")
	c, err := dnsupdate.New(z, dnsupdate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give dnsupdate.Change
	}{
		{name: "outside the zone", give: dnsupdate.Change{Name: "www.other.test", Type: "A", New: []string{"192.0.2.1"}}},
		{name: "bad value", give: dnsupdate.Change{Name: www, Type: "A", New: []string{"not-an-ip"}}},
		{name: "injected record", give: dnsupdate.Change{Name: www, Type: "A", New: []string{"192.0.2.1\nwww 30 IN A 192.0.2.2"}}},
		{name: "soa", give: dnsupdate.Change{Name: "example.test", Type: "SOA"}},
		{name: "unknown type", give: dnsupdate.Change{Name: www, Type: "BOGUS"}},
		{name: "fractional ttl", give: dnsupdate.Change{Name: www, Type: "A", TTL: 1500 * time.Millisecond, New: []string{"192.0.2.1"}}},
	}
	for _, tt := range tests {
		if _, err := c.Apply(context.Background(), tt.give); !errors.Is(err, dnsupdate.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
}
