// Package etcdtest starts real embedded etcd members for tests: one member,
// or a cluster whose members a test can kill and restart.
package etcdtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/embedetcd"
)

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	// Below Linux's ephemeral range (32768-60999): a port the kernel hands
	// out for ":0" is also what outgoing connections draw from, and one of
	// them can take it before whoever asked binds it (a sample service then
	// exits "address in use"; the CLI watch test failed so under load).
	// A port is handed out once per process: two calls in a row could
	// otherwise draw the same one, free again once its probe closed.
	freePorts.Lock()
	defer freePorts.Unlock()
	for range 500 {
		port := 20000 + rand.IntN(12000)
		if freePorts.given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			freePorts.given[port] = true
			addr := l.Addr().String()
			l.Close()
			return addr
		}
	}
	t.Fatal("free port: none below the ephemeral range")
	return ""
}

var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// Member is one member of a test cluster.
type Member struct {
	Name string
	cfg  embedetcd.Config
	mu   sync.Mutex
	srv  *embedetcd.Server
}

// Endpoint is the member's client URL.
func (m *Member) Endpoint() string { return "http://" + m.cfg.ClientAddr }

// Stop stops the member (like a crash of its process, as far as clients see).
func (m *Member) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		m.srv.Close()
		m.srv = nil
	}
}

// Restart starts a stopped member again on the same data and ports.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		return
	}
	srv, err := embedetcd.Start(t.Context(), m.cfg)
	if err != nil {
		t.Fatalf("restart %s: %v", m.Name, err)
	}
	m.srv = srv
}

// Cluster is a running test cluster.
type Cluster struct {
	Members []*Member
}

// Endpoints lists every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint())
	}
	return eps
}

// Client returns a client to all members, closed at test end.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Start runs an n-member cluster in t.TempDir, stopped at test end.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{}
	var initial []string
	token := fmt.Sprintf("golive-test-%d", time.Now().UnixNano())
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("m%d", i)}
		m.cfg = embedetcd.Config{
			Name:         m.Name,
			Dir:          filepath.Join(t.TempDir(), m.Name),
			ClientAddr:   FreeAddr(t),
			PeerAddr:     FreeAddr(t),
			ClusterToken: token,
			LogLevel:     "error",
		}
		initial = append(initial, m.Name+"=http://"+m.cfg.PeerAddr)
		c.Members = append(c.Members, m)
	}
	if n > 1 {
		for _, m := range c.Members {
			m.cfg.InitialCluster = strings.Join(initial, ",")
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv, err := embedetcd.Start(context.Background(), m.cfg)
			errs[i] = err
			m.srv = srv
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Stop()
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("start etcd: %v", err)
		}
	}
	return c
}
