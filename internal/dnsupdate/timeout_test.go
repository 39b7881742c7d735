package dnsupdate_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate"
)

// blackhole accepts TCP connections and UDP datagrams on one loopback port
// and never answers: a server that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		t.Skipf("UDP port %s taken: %v", l.Addr(), err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := u.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		l.Close()
		u.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func TestServerHangs(t *testing.T) {
	z := &dnsconfig.Zone{Name: "example.test.", Server: blackhole(t), Timeout: 300 * time.Millisecond}
	z.Key.Name, z.Key.Algorithm = "golive.", dnsconfig.HMACSHA256
	z.Key.Secret, _ = dnsconfig.NewSecret("c2VjcmV0LXNlY3JldA==")
	c, err := dnsupdate.New(z, dnsupdate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Apply(t.Context(), dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: []string{"192.0.2.1"}, New: []string{"192.0.2.2"}})
	var e *dnsupdate.Error
	if !errors.Is(err, dnsupdate.ErrUnreachable) || !errors.As(err, &e) || !e.Unknown {
		t.Fatalf("update to a hanging server: %v, want ErrUnreachable with an unknown outcome", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s; the zone timeout is 300ms", d)
	}
	t.Log(err)
	if _, err := c.Query(t.Context(), www, "A"); !errors.Is(err, dnsupdate.ErrUnreachable) {
		t.Fatalf("query to a hanging server: %v, want ErrUnreachable", err)
	}
}
