package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/hashicorp/go-hclog"
)

// rig is a router in front of two backends, through a real proxy.
type rig struct {
	r           router.Router
	url         func(path string) string
	blue, green *routertest.Backend
	diag        func() string
	nginx       *routertest.Nginx
	haproxy     *routertest.HAProxy
}

func (rg rig) backend(s router.Slot) *routertest.Backend {
	if s == router.Blue {
		return rg.blue
	}
	return rg.green
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: tWriter{t}, Level: hclog.Debug})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func backends(t *testing.T) (*routertest.Backend, *routertest.Backend, router.Ports) {
	blue := routertest.StartBackend(t, router.Blue)
	green := routertest.StartBackend(t, router.Green)
	return blue, green, router.Ports{Blue: blue.Port, Green: green.Port}
}

func nginxRig(t *testing.T) rig {
	blue, green, ports := backends(t)
	name := router.UpstreamName("app")
	n := routertest.StartNginx(t, name, ports)
	r, err := router.NewNginx(router.NginxConfig{
		Upstream: name, File: n.UpstreamFile, Reload: n.ReloadCommand(),
		ProbeURL: n.URL("/"), Ports: ports, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return rig{r: r, url: n.URL, blue: blue, green: green, diag: n.ErrorLog, nginx: n}
}

func haproxyRig(t *testing.T) rig {
	blue, green, ports := backends(t)
	h := routertest.StartHAProxy(t, "app", ports)
	r, err := router.NewHAProxy(router.HAProxyConfig{Socket: h.Socket, Backend: h.Backend, ProbeURL: h.URL("/"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return rig{r: r, url: h.URL, blue: blue, green: green, diag: h.Log, haproxy: h}
}

var kinds = []struct {
	name string
	rig  func(t *testing.T) rig
}{
	{"nginx", nginxRig},
	{"haproxy", haproxyRig},
}

func forEachKind(t *testing.T, f func(t *testing.T, rg rig)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			rg := k.rig(t)
			f(t, rg)
			if t.Failed() {
				t.Logf("proxy log:\n%s", rg.diag())
			}
		})
	}
}

// get fetches url and returns the status and the slot that answered.
func get(t *testing.T, c *http.Client, url string) (int, router.Slot) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, router.Slot(resp.Header.Get("X-Backend"))
}

func wantActive(t *testing.T, r router.Router, want router.Traffic) {
	t.Helper()
	got, err := r.Active(t.Context())
	if err != nil {
		t.Fatalf("Active: %v", err)
	}
	if got != want {
		t.Fatalf("Active = %s, want %s", got, want)
	}
}

func TestSwitchConfirmed(t *testing.T) {
	forEachKind(t, func(t *testing.T, rg rig) {
		c := &http.Client{}
		if _, s := get(t, c, rg.url("/")); s != router.Blue {
			t.Fatalf("before the switch: answered by %q, want blue", s)
		}
		wantActive(t, rg.r, router.Traffic{Blue: 100})
		if err := rg.r.Switch(t.Context(), router.Green, 100); err != nil {
			t.Fatal(err)
		}
		wantActive(t, rg.r, router.Traffic{Green: 100})
		// Both kept-alive and fresh connections now reach green only.
		fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; i < 50; i++ {
			for _, cl := range []*http.Client{c, fresh} {
				if code, s := get(t, cl, rg.url("/")); code != 200 || s != router.Green {
					t.Fatalf("request %d after the switch: %d from %q, want 200 from green", i, code, s)
				}
			}
		}
		// Switching to the active slot again is a no-op that succeeds.
		if err := rg.r.Switch(t.Context(), router.Green, 0); err != nil {
			t.Fatal(err)
		}
		wantActive(t, rg.r, router.Traffic{Green: 100})
	})
}

// timeline says, for a request sent at a given time and answered now, what
// body it must carry: the slot of the last confirmed switch before it was
// sent, unless another switch started before the answer came (the request
// may have reached the proxy after that start, or during a switch), in
// which case either slot may answer.
type timeline struct {
	mu     sync.Mutex
	at     []time.Time
	expect []string
}

func (tl *timeline) add(expect string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.at = append(tl.at, time.Now())
	tl.expect = append(tl.expect, expect)
}

// want is called by the load generator once the answer has been read, so
// every event recorded after sent happened before the answer.
func (tl *timeline) want(sent time.Time) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.at) - 1; i >= 0; i-- {
		if !sent.Before(tl.at[i]) {
			if i != len(tl.at)-1 {
				return ""
			}
			return tl.expect[i]
		}
	}
	return ""
}

// load runs a load generator in the background.
type load struct {
	name string
	rate float64
	gen  *loadgen.Generator
	done chan loadResult
}

type loadResult struct {
	res loadgen.Result
	err error
}

func startLoad(t *testing.T, name string, opts loadgen.Options) *load {
	t.Helper()
	gen, err := loadgen.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := &load{name: name, rate: opts.Rate, gen: gen, done: make(chan loadResult, 1)}
	go func() {
		res, err := gen.Run(context.Background())
		l.done <- loadResult{res, err}
	}()
	t.Cleanup(func() { gen.Stop() })
	return l
}

// TestSwitchUnderLoad switches back and forth 10 times under ~800 requests
// per second: no request may fail, and every request sent after a confirmed
// switch must be answered by the new slot.
//
// With nginx the last check runs on a second load of new connections only:
// a kept-alive client connection that an old nginx worker accepted before
// the reload, and that carries its first request only after the switch,
// is still served by the old worker (nginx 1.22 does not close such
// connections when a worker shuts down), so it may reach the old slot.
// Those requests must still succeed.
func TestSwitchUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	forEachKind(t, func(t *testing.T, rg rig) {
		tl := &timeline{}
		tl.add(routertest.Body(router.Blue))
		strictKeepAlive := rg.nginx == nil
		mainExpect := tl.want
		if !strictKeepAlive {
			mainExpect = func(time.Time) string { return "slot=" }
		}
		rate := 800.0
		if raceEnabled {
			rate = 200
		}
		loads := []*load{startLoad(t, "keep-alive", loadgen.Options{
			// Many workers and a long timeout: the test machine is shared,
			// and a stalled client must not count as a failed switch.
			URL: rg.url("/"), Rate: rate, Duration: 2 * time.Minute, Timeout: 5 * time.Second, Concurrency: 2000,
			ExpectBody: mainExpect, Phase: "steady",
		})}
		if !strictKeepAlive {
			loads = append(loads, startLoad(t, "new connections", loadgen.Options{
				URL: rg.url("/"), Rate: rate / 4, Duration: 2 * time.Minute, Timeout: 5 * time.Second, Concurrency: 256,
				DisableKeepAlives: true, ExpectBody: tl.want, Phase: "steady",
			}))
		}
		mark := func(phase string) {
			for _, l := range loads {
				l.gen.Mark(phase)
			}
		}
		finish := func() []loadResult {
			var out []loadResult
			for _, l := range loads {
				l.gen.Stop()
			}
			for _, l := range loads {
				out = append(out, <-l.done)
			}
			return out
		}
		pace := func() { time.Sleep(500 * time.Millisecond) } // traffic flows between switches
		pace()
		var took []time.Duration
		to := router.Green
		for i := 0; i < 10; i++ {
			tl.add("") // during the switch either slot may answer
			mark("switching")
			start := time.Now()
			err := rg.r.Switch(t.Context(), to, 100)
			took = append(took, time.Since(start))
			tl.add(routertest.Body(to))
			mark("steady")
			if err != nil {
				finish()
				t.Fatalf("switch %d to %s: %v", i, to, err)
			}
			pace()
			to = to.Other()
		}
		results := finish()
		lat := loadgen.Latencies(took)
		t.Logf("%s: %d switches, switch time p50 %s p99 %s max %s (all: %v)", t.Name(), len(took), lat.P50, lat.P99, lat.Max, took)
		for i, o := range results {
			l := loads[i]
			if o.err != nil {
				t.Fatal(o.err)
			}
			sum := o.res.Summary()
			t.Logf("%s load (%s): requests %d, failed %d, by class %v; latency steady p50 %s p99 %s, switching p50 %s p99 %s; rate %.0f/s",
				t.Name(), l.name, sum.Requests, sum.Failed, sum.ByClass,
				o.res.Phase("steady").Latency.P50, o.res.Phase("steady").Latency.P99,
				o.res.Phase("switching").Latency.P50, o.res.Phase("switching").Latency.P99, sum.OfferedRate())
			for i, f := range o.res.Failures() {
				if i == 10 {
					break
				}
				t.Errorf("%s: failed request %d (sent %s, phase %s): %s %d %s", l.name, f.Seq, f.Sent.Format("15:04:05.000000"), f.Phase, f.Class, f.Status, f.Err)
			}
			if sum.Failed != 0 {
				t.Errorf("%s: %d of %d requests failed", l.name, sum.Failed, sum.Requests)
			}
			if sum.Requests < int(l.rate*10*0.4) {
				t.Errorf("%s: only %d requests offered", l.name, sum.Requests)
			}
		}
		if rg.blue.Served.Load() == 0 || rg.green.Served.Load() == 0 {
			t.Fatalf("served: blue %d green %d, want both", rg.blue.Served.Load(), rg.green.Served.Load())
		}
	})
}

// TestCanaryWeight sends 10% to green and checks the share over 2000
// requests, then the full switch.
func TestCanaryWeight(t *testing.T) {
	forEachKind(t, func(t *testing.T, rg rig) {
		if err := rg.r.Switch(t.Context(), router.Green, 10); err != nil {
			t.Fatal(err)
		}
		wantActive(t, rg.r, router.Traffic{Blue: 90, Green: 10})
		const total, workers = 2000, 8
		var mu sync.Mutex
		count := map[router.Slot]int{}
		var wg sync.WaitGroup
		c := &http.Client{}
		for w := 0; w < workers; w++ {
			wg.Go(func() {
				for i := 0; i < total/workers; i++ {
					resp, err := c.Get(rg.url("/"))
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					if resp.StatusCode != 200 {
						count["status"]++
					}
					count[router.Slot(resp.Header.Get("X-Backend"))]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		share := float64(count[router.Green]) * 100 / total
		t.Logf("%s: weight 10%%: %v over %d requests: green %.1f%%", t.Name(), count, total, share)
		if count["status"] != 0 || count[router.Blue]+count[router.Green] != total {
			t.Fatalf("answers %v, want %d from blue or green", count, total)
		}
		if share < 5 || share > 15 {
			t.Fatalf("green got %.1f%% of requests, want 10±5%%", share)
		}
		// Back to blue entirely, as a failed bake would.
		if err := rg.r.Switch(t.Context(), router.Blue, 100); err != nil {
			t.Fatal(err)
		}
		wantActive(t, rg.r, router.Traffic{Blue: 100})
		for i := 0; i < 20; i++ {
			if _, s := get(t, c, rg.url("/")); s != router.Blue {
				t.Fatalf("after the canary was pulled: answered by %q", s)
			}
		}
	})
}

// TestDrainWaitsForSlowRequest: a slow request to blue is in flight when
// traffic moves to green; Drain(blue) times out while it runs and returns
// once it has finished, and the request itself succeeds.
func TestDrainWaitsForSlowRequest(t *testing.T) {
	forEachKind(t, func(t *testing.T, rg rig) {
		if err := rg.r.Drain(t.Context(), router.Blue, time.Second); err == nil || errors.Is(err, router.ErrDrainTimeout) {
			t.Fatalf("Drain of the active slot: %v, want a refusal", err)
		}
		type result struct {
			code int
			slot router.Slot
			err  error
		}
		slow := make(chan result, 1)
		go func() {
			resp, err := http.Get(rg.url("/slow?d=2s"))
			if err != nil {
				slow <- result{err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			slow <- result{code: resp.StatusCode, slot: router.Slot(resp.Header.Get("X-Backend"))}
		}()
		waitFor(t, 5*time.Second, func() bool { return rg.blue.InFlight() == 1 })
		if err := rg.r.Switch(t.Context(), router.Green, 100); err != nil {
			t.Fatal(err)
		}
		if len(rg.blue.SlowFinished()) != 0 {
			t.Fatal("the slow request finished before the switch returned: make it slower")
		}
		err := rg.r.Drain(t.Context(), router.Blue, 100*time.Millisecond)
		if !errors.Is(err, router.ErrDrainTimeout) {
			t.Fatalf("Drain with the slow request in flight: %v, want ErrDrainTimeout", err)
		}
		start := time.Now()
		if err := rg.r.Drain(t.Context(), router.Blue, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		drained := time.Now()
		fin := rg.blue.SlowFinished()
		if len(fin) != 1 || drained.Before(fin[0]) {
			t.Fatalf("Drain returned at %s, slow request finished at %v", drained.Format("15:04:05.000"), fin)
		}
		r := <-slow
		if r.err != nil || r.code != 200 || r.slot != router.Blue {
			t.Fatalf("slow request: %d from %q, %v; want 200 from blue", r.code, r.slot, r.err)
		}
		t.Logf("%s: drain returned %s after it started, %s after the slow request finished",
			t.Name(), drained.Sub(start).Round(time.Millisecond), drained.Sub(fin[0]).Round(time.Millisecond))
		// Nothing in flight: Drain returns at once.
		if err := rg.r.Drain(t.Context(), router.Blue, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	})
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNginxSwitchFails: a failing reload, or a switch nginx does not
// confirm, leaves the previous upstream file in place and traffic where it
// was.
func TestNginxSwitchFails(t *testing.T) {
	rg := nginxRig(t)
	ports := router.Ports{Blue: rg.blue.Port, Green: rg.green.Port}
	before, err := os.ReadFile(rg.nginx.UpstreamFile)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		give    router.NginxConfig
		wantErr string
	}{{
		name:    "reload fails",
		give:    router.NginxConfig{Reload: []string{"sh", "-c", "echo config test failed >&2; exit 1"}, ProbeURL: rg.url("/")},
		wantErr: "config test failed",
	}, {
		// The probe bypasses nginx, so it never sees the new generation.
		name:    "not confirmed",
		give:    router.NginxConfig{Reload: rg.nginx.ReloadCommand(), ProbeURL: fmt.Sprintf("http://127.0.0.1:%d/", rg.blue.Port), ConfirmTimeout: time.Second},
		wantErr: "lack the X-Golive-Generation header",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.give
			cfg.Upstream, cfg.File, cfg.Ports, cfg.Logger = router.UpstreamName("app"), rg.nginx.UpstreamFile, ports, testLogger(t)
			r, err := router.NewNginx(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Switch(t.Context(), router.Green, 100)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Switch: %v, want an error containing %q", err, tt.wantErr)
			}
			t.Logf("error: %v", err)
			wantActive(t, r, router.Traffic{Blue: 100})
			wantActive(t, rg.r, router.Traffic{Blue: 100})
			if after, _ := os.ReadFile(rg.nginx.UpstreamFile); string(after) != string(before) {
				t.Fatalf("upstream file changed:\n%s\nwant\n%s", after, before)
			}
			fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			// The restoring reload is not confirmed (the probe is what
			// failed): wait for nginx to serve the initial file again.
			waitFor(t, 5*time.Second, func() bool {
				resp, err := fresh.Get(rg.url("/"))
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.Header.Get(router.GenerationHeader) == "initial"
			})
			time.Sleep(router.DefaultNginxSettle) // old workers stop taking requests
			for i := 0; i < 20; i++ {
				if _, s := get(t, fresh, rg.url("/")); s != router.Blue {
					t.Fatalf("answered by %q, want blue", s)
				}
			}
		})
	}
	// The real router still works afterwards.
	if err := rg.r.Switch(t.Context(), router.Green, 100); err != nil {
		t.Fatal(err)
	}
}

// TestHAProxyErrors: a missing socket and a wrong backend give errors that
// say what to fix.
func TestHAProxyErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "admin.sock")
	r, err := router.NewHAProxy(router.HAProxyConfig{Socket: missing, Backend: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		r.Switch(t.Context(), router.Green, 100),
		func() error { _, err := r.Active(t.Context()); return err }(),
		r.Drain(t.Context(), router.Blue, time.Second),
	} {
		if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "stats socket") {
			t.Fatalf("with a missing socket: %v, want an error naming the socket and the stats socket line", err)
		}
	}

	rg := haproxyRig(t)
	wrong, err := router.NewHAProxy(router.HAProxyConfig{Socket: rg.haproxy.Socket, Backend: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if err := wrong.Switch(t.Context(), router.Green, 100); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("with an unknown backend: %v", err)
	}
	wantActive(t, rg.r, router.Traffic{Blue: 100})
}

func TestNone(t *testing.T) {
	file := filepath.Join(t.TempDir(), "router.json")
	r := router.NewNone(file)
	if _, err := r.Active(t.Context()); !errors.Is(err, router.ErrNoState) {
		t.Fatalf("Active before any switch: %v, want ErrNoState", err)
	}
	if err := r.Switch(t.Context(), router.Green, 25); err != nil {
		t.Fatal(err)
	}
	wantActive(t, router.NewNone(file), router.Traffic{Blue: 75, Green: 25})
	if err := r.Drain(t.Context(), router.Blue, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch(t.Context(), "purple", 100); err == nil {
		t.Fatal("switch to an unknown slot succeeded")
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		to      router.Slot
		weight  int
		want    router.Traffic
		wantErr bool
	}{
		{router.Green, 0, router.Traffic{Green: 100}, false},
		{router.Green, 100, router.Traffic{Green: 100}, false},
		{router.Blue, 100, router.Traffic{Blue: 100}, false},
		{router.Green, 10, router.Traffic{Blue: 90, Green: 10}, false},
		{router.Blue, 1, router.Traffic{Blue: 1, Green: 99}, false},
		{router.Green, 101, router.Traffic{}, true},
		{router.Green, -1, router.Traffic{}, true},
		{"", 100, router.Traffic{}, true},
	}
	for _, tt := range tests {
		got, err := router.Split(tt.to, tt.weight)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Split(%q, %d) = %v, %v; want %v, error %v", tt.to, tt.weight, got, err, tt.want, tt.wantErr)
		}
	}
	if got := (router.Traffic{Blue: 90, Green: 10}).Primary(); got != router.Blue {
		t.Errorf("Primary = %s", got)
	}
}

func TestNginxUpstream(t *testing.T) {
	got := string(router.NginxUpstream(router.UpstreamName("my-app.v2"), router.Ports{Blue: 8081, Green: 8082}, router.Traffic{Blue: 90, Green: 10}, "42"))
	for _, want := range []string{
		`# golive-state: {"blue":90,"green":10,"generation":"42"}`,
		"upstream golive_my_app_v2 {",
		"server 127.0.0.1:8081 weight=90; # blue",
		"server 127.0.0.1:8082 weight=10; # green",
		`map $host $golive_my_app_v2_generation {`,
		`default "42";`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	got = string(router.NginxUpstream("golive_app", router.Ports{Blue: 8081, Green: 8082}, router.Traffic{Green: 100}, "43"))
	if !strings.Contains(got, "server 127.0.0.1:8081 backup; # blue") {
		t.Errorf("blue not backup in\n%s", got)
	}
}

// TestNew builds each kind from the agent's config.
func TestNew(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		give    agentconfig.Router
		want    string
		wantErr string
	}{
		{"nginx", agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: filepath.Join(dir, "up.conf"), Reload: []string{"nginx", "-s", "reload"}}, "*router.Nginx", ""},
		{"nginx relative file", agentconfig.Router{Kind: agentconfig.RouterNginx, UpstreamFile: "up.conf", Reload: []string{"true"}}, "", "absolute"},
		{"haproxy", agentconfig.Router{Kind: agentconfig.RouterHAProxy, AdminSocket: "/run/haproxy/admin.sock", Backend: "api"}, "*router.HAProxy", ""},
		{"none", agentconfig.Router{Kind: agentconfig.RouterNone}, "*router.None", ""},
		{"unknown", agentconfig.Router{Kind: "traefik"}, "", "unknown kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := router.New(agentconfig.BlueGreen{BluePort: 8081, GreenPort: 8082, Router: tt.give},
				router.Options{Service: "api", StateDir: dir})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%T", r); got != tt.want {
				t.Fatalf("New = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestNginxWithoutProbe: without a probe URL the switch is confirmed from
// nginx's worker processes alone.
func TestNginxWithoutProbe(t *testing.T) {
	rg := nginxRig(t)
	r, err := router.NewNginx(router.NginxConfig{
		Upstream: router.UpstreamName("app"), File: rg.nginx.UpstreamFile, Reload: rg.nginx.ReloadCommand(),
		Ports: router.Ports{Blue: rg.blue.Port, Green: rg.green.Port}, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []router.Slot{router.Green, router.Blue, router.Green} {
		if err := r.Switch(t.Context(), to, 100); err != nil {
			t.Fatal(err)
		}
		fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; i < 20; i++ {
			if _, s := get(t, fresh, rg.url("/")); s != to {
				t.Fatalf("after the switch to %s: answered by %q", to, s)
			}
		}
	}
}

// TestHAProxyNewSlotDown: a switch to a slot whose health check fails is
// refused and leaves traffic on the old slot; the old slot is never
// drained, so no request fails.
func TestHAProxyNewSlotDown(t *testing.T) {
	blue := routertest.StartBackend(t, router.Blue)
	ports := router.Ports{Blue: blue.Port, Green: routertest.FreePort(t)} // nothing listens on green
	h := routertest.StartHAProxyWith(t, "app", ports, routertest.HAProxyOptions{HealthCheck: true})
	r, err := router.NewHAProxy(router.HAProxyConfig{Socket: h.Socket, Backend: h.Backend, ProbeURL: h.URL("/"),
		ConfirmTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Servers start up; green goes down at its first failed check.
	waitFor(t, 5*time.Second, func() bool {
		for _, line := range strings.Split(h.Command(t, "show stat"), "\n") {
			if strings.HasPrefix(line, "app,green,") {
				return strings.Contains(line, ",DOWN")
			}
		}
		return false
	})
	c := &http.Client{}
	done := make(chan struct{})
	var failed []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			resp, err := c.Get(h.URL("/"))
			if err != nil {
				failed = append(failed, err.Error())
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "blue" {
				failed = append(failed, fmt.Sprintf("%d from %q", resp.StatusCode, resp.Header.Get("X-Backend")))
			}
		}
	})
	err = r.Switch(t.Context(), router.Green, 100)
	close(done)
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), "health check") {
		t.Fatalf("Switch to a down slot: %v, want an error about its health check", err)
	}
	t.Logf("error: %v", err)
	wantActive(t, r, router.Traffic{Blue: 100})
	if len(failed) != 0 {
		t.Fatalf("%d requests failed during the refused switch, first: %s", len(failed), failed[0])
	}
}

// TestDeploySequenceUnderLoad runs a blue-green deploy's traffic steps
// under load: canary 10%, full switch, drain the old slot, stop it; then
// the reverse for the next deploy. No request may fail, including after the
// old slot has stopped.
func TestDeploySequenceUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	forEachKind(t, func(t *testing.T, rg rig) {
		rate := 600.0
		if raceEnabled {
			rate = 150
		}
		l := startLoad(t, "keep-alive", loadgen.Options{
			URL: rg.url("/"), Rate: rate, Duration: 2 * time.Minute, Timeout: 5 * time.Second, Concurrency: 2000,
			ExpectBody: func(time.Time) string { return "slot=" },
		})
		pause := func() { time.Sleep(300 * time.Millisecond) } // traffic flows between steps
		pause()
		var stopped []router.Slot
		for _, to := range []router.Slot{router.Green, router.Blue} {
			old := to.Other()
			if to == router.Blue {
				// The next deploy starts the idle slot again.
				rg.backend(to).Restart(t)
			}
			steps := []struct {
				name string
				do   func() error
			}{
				{"canary 10%", func() error { return rg.r.Switch(t.Context(), to, 10) }},
				{"bake", func() error { pause(); return nil }},
				{"switch", func() error { return rg.r.Switch(t.Context(), to, 100) }},
				{"drain", func() error { return rg.r.Drain(t.Context(), old, 10*time.Second) }},
				{"stop old slot", func() error { return rg.backend(old).Stop(t.Context()) }},
				{"run on the new slot", func() error { pause(); return nil }},
			}
			for _, s := range steps {
				if err := s.do(); err != nil {
					l.gen.Stop()
					<-l.done
					t.Fatalf("deploy to %s: %s: %v", to, s.name, err)
				}
			}
			stopped = append(stopped, old)
		}
		l.gen.Stop()
		o := <-l.done
		if o.err != nil {
			t.Fatal(o.err)
		}
		sum := o.res.Summary()
		t.Logf("%s: 2 deploys (stopped %v): requests %d, failed %d, by class %v, latency p50 %s p99 %s",
			t.Name(), stopped, sum.Requests, sum.Failed, sum.ByClass, sum.Latency.P50, sum.Latency.P99)
		for i, f := range o.res.Failures() {
			if i == 10 {
				break
			}
			t.Errorf("failed request %d (sent %s): %s %d %s", f.Seq, f.Sent.Format("15:04:05.000000"), f.Class, f.Status, f.Err)
		}
		if sum.Failed != 0 {
			t.Fatalf("%d of %d requests failed", sum.Failed, sum.Requests)
		}
	})
}

// TestNginxWorkersHidden: when the agent cannot see nginx's workers, a
// switch is confirmed by probes answering from the new file for
// DefaultNginxSettle; under load no request fails and requests on new
// connections sent after the switch reach the new slot.
func TestNginxWorkersHidden(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	t.Cleanup(router.HideNginxWorkers())
	rg := nginxRig(t)
	tl := &timeline{}
	tl.add(routertest.Body(router.Blue))
	rate := 400.0
	if raceEnabled {
		rate = 100
	}
	l := startLoad(t, "new connections", loadgen.Options{
		URL: rg.url("/"), Rate: rate, Duration: time.Minute, Timeout: 5 * time.Second, Concurrency: 1000,
		DisableKeepAlives: true, ExpectBody: tl.want,
	})
	to := router.Green
	var took []time.Duration
	for i := 0; i < 4; i++ {
		tl.add("")
		start := time.Now()
		err := rg.r.Switch(t.Context(), to, 100)
		took = append(took, time.Since(start))
		tl.add(routertest.Body(to))
		if err != nil {
			l.gen.Stop()
			<-l.done
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // traffic flows between switches
		to = to.Other()
	}
	l.gen.Stop()
	o := <-l.done
	sum := o.res.Summary()
	t.Logf("%s: switch times %v; requests %d, failed %d, by class %v", t.Name(), took, sum.Requests, sum.Failed, sum.ByClass)
	for _, d := range took {
		if d < router.DefaultNginxSettle {
			t.Errorf("a switch took %s, less than the settle time %s", d, router.DefaultNginxSettle)
		}
	}
	if sum.Failed != 0 {
		t.Fatalf("%d of %d requests failed: first %+v", sum.Failed, sum.Requests, o.res.Failures()[0])
	}
}
