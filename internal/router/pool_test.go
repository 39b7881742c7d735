package router_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
)

// TestPools: with real nginx and HAProxy, members added to a pool take
// requests, removed ones stop taking them, and the last one stays.
func TestPools(t *testing.T) {
	b := []*routertest.Backend{routertest.StartBackend(t, "i0"), routertest.StartBackend(t, "i1"), routertest.StartBackend(t, "i2")}
	m := func(i int) router.Member { return router.Member{Index: i, Port: b[i].Port} }
	for _, kind := range []string{"nginx", "haproxy"} {
		t.Run(kind, func(t *testing.T) {
			var pool router.Pool
			var url string
			var err error
			switch kind {
			case "nginx":
				n := routertest.StartNginxPool(t, router.UpstreamName("app"), m(0))
				url = n.URL("/")
				pool, err = router.NewPool(agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: n.UpstreamFile, Reload: n.ReloadCommand(), ProbeURL: url},
					router.PoolOptions{Service: "app"})
			case "haproxy":
				h := routertest.StartHAProxyPool(t, "be_app", "app", b[0].Port)
				url = h.URL("/")
				pool, err = router.NewPool(agentconfig.Router{Kind: agentconfig.RouterHAProxy, AdminSocket: h.Socket, Backend: "be_app"},
					router.PoolOptions{Service: "app"})
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			for i := 0; i < 2; i++ { // twice: the second round re-adds deleted servers
				for _, i := range []int{1, 2} {
					if err := pool.Add(ctx, m(i)); err != nil {
						t.Fatal(err)
					}
				}
				assertMembers(t, pool, m(0), m(1), m(2))
				assertServes(t, url, "i0", "i1", "i2")
				for _, i := range []int{2, 1} {
					if err := pool.Remove(ctx, m(i), 5*time.Second); err != nil {
						t.Fatal(err)
					}
				}
				assertMembers(t, pool, m(0))
				assertServes(t, url, "i0")
			}
			if err := pool.Remove(ctx, m(0), time.Second); err == nil {
				t.Fatal("the last member was removed")
			}
		})
	}
}

func assertMembers(t *testing.T, p router.Pool, want ...router.Member) {
	t.Helper()
	got, err := p.Members(t.Context())
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("members %v (%v), want %v", got, err, want)
	}
}

// assertServes: 60 fresh requests reach exactly the backends want.
func assertServes(t *testing.T, url string, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for range 60 {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Backend")] = true
	}
	var got []string
	for k := range seen {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("answered by %v, want %v", got, want)
	}
}
