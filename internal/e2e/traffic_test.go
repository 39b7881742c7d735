package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/analysis/promtest"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/testenv"
	"github.com/golive/golive/internal/traffic"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// The real-traffic gate's settings in these tests: a short bake and a
// request floor the load (gateRate) clears several times over even on a
// loaded machine, where the generator may fall behind its rate.
const (
	gateRate        = 80 // requests/s through the router during a bake
	gateBake        = 3 * time.Second
	gateMinRequests = 50
)

// gateEnv is a real controller on embedded etcd serving the sample
// releases, with a live approval.
type gateEnv struct {
	bin               string
	sums              map[string]string
	ctlAddr, httpAddr string
	ctl               golivev1.ControlServiceClient
	ctx               context.Context
}

// startGateEnv starts the controller with extra serve flags; httpAddr, if
// not "", is its --metrics-addr (chosen before, for Prometheus's SD URL).
func startGateEnv(t *testing.T, httpAddr string, extra ...string) *gateEnv {
	t.Helper()
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	if httpAddr == "" {
		httpAddr = etcdtest.FreeAddr(t)
	}
	e := &gateEnv{bin: bin, sums: sums, ctlAddr: etcdtest.FreeAddr(t), httpAddr: httpAddr}
	args := append([]string{"serve", "--listen", e.ctlAddr, "--metrics-addr", e.httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s"}, extra...)
	start(t, "controller", filepath.Join(bin, "golive-controller"), args...)
	e.ctl, e.ctx = testenv.Control(t, e.ctlAddr, "alice")
	testenv.WaitFor(t, 30*time.Second, "controller serving", func() bool {
		_, err := e.ctl.Status(e.ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	if _, err := e.ctl.Authorize(e.ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return e
}

// gateRouter is a real nginx or HAProxy in front of one host's two slots,
// and the agent's router block that switches it and reads its counts.
type gateRouter struct {
	kind  string
	url   func(path string) string
	block string
}

// startGateRouter starts a router of kind ("nginx" or "haproxy") in front
// of ports. nginx writes the golive JSON access log, named in the block
// only when accessLog (without it the gate falls back to the probe).
//
// The block has no probe_url: with one, the agent's health prober goes
// through the router from the agent's start, before any release runs, and
// nginx logs those 502s as failed attempts to both slots; a slot's traffic
// window is not reset when a release starts in it, so the first release
// would be judged on errors from before it existed (reported as a bug).
func startGateRouter(t *testing.T, kind string, ports router.Ports, accessLog bool) gateRouter {
	t.Helper()
	switch kind {
	case "haproxy":
		h := routertest.StartHAProxy(t, "app", ports)
		return gateRouter{kind: kind, url: h.URL, block: fmt.Sprintf(`
    router {
      kind         = "haproxy"
      admin_socket = %q
      backend      = "app"
    }`, h.Socket)}
	case "nginx":
		n := startNginxJSONLog(t, ports)
		var reload []string
		for _, a := range n.ReloadCommand() {
			reload = append(reload, fmt.Sprintf("%q", a))
		}
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(n.Dir, "access.log"))
				if len(b) > 8000 {
					b = b[:8000]
				}
				t.Logf("--- nginx access log (head) for ports %v:\n%s", ports, b)
			}
		})
		log := ""
		if accessLog {
			log = fmt.Sprintf("\n      access_log    = %q", filepath.Join(n.Dir, "access.log"))
		}
		return gateRouter{kind: kind, url: n.URL, block: fmt.Sprintf(`
    router {
      kind          = "nginx"
      upstream_file = %q
      reload        = [%s]%s
    }`, n.UpstreamFile, strings.Join(reload, ", "), log)}
	}
	t.Fatalf("router kind %q", kind)
	return gateRouter{}
}

var testLogFormat = regexp.MustCompile(`log_format golive '[^']*';`)

// startNginxJSONLog starts nginx with routertest's test configuration, its
// access log (Dir/access.log) in the documented golive JSON format
// (traffic.LogFormat), all traffic to blue at first. The returned value's
// Stop must not be called: the test's cleanup stops nginx.
func startNginxJSONLog(t *testing.T, ports router.Ports) *routertest.Nginx {
	t.Helper()
	n := &routertest.Nginx{Bin: routertest.LookPath(t, "nginx"), Dir: t.TempDir(), Upstream: router.UpstreamName("app")}
	n.Conf = filepath.Join(n.Dir, "nginx.conf")
	n.UpstreamFile = filepath.Join(n.Dir, "upstream.conf")
	if err := os.MkdirAll(filepath.Join(n.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.UpstreamFile, router.NginxUpstream(n.Upstream, ports, router.Traffic{Blue: 100}, "initial"), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n.Port = freePort(t)
		conf := routertest.NginxConfig(n.Dir, n.Port, n.Upstream, n.UpstreamFile)
		if !testLogFormat.MatchString(conf) {
			t.Fatalf("routertest.NginxConfig has no log_format golive line to replace:\n%s", conf)
		}
		conf = testLogFormat.ReplaceAllLiteralString(conf, traffic.LogFormat)
		if err := os.WriteFile(n.Conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = runNginx(t, n); lastErr == nil {
			return n
		}
	}
	t.Fatal(lastErr)
	return nil
}

// runNginx runs n in the foreground until the test ends and waits until it
// listens; an error if it exits first (its port was taken meanwhile).
func runNginx(t *testing.T, n *routertest.Nginx) error {
	argv := append(n.ReloadCommand()[:len(n.ReloadCommand())-2], "-g", "daemon off;")
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := os.Create(filepath.Join(n.Dir, "stderr.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("nginx exited:\n%s", n.ErrorLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.Port), time.Second); err == nil {
			c.Close()
			t.Cleanup(stop)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	return fmt.Errorf("nginx did not listen on port %d within 20s\n%s", n.Port, n.ErrorLog())
}

// gateHost is an agent process with the blue-green sample service "app"
// behind its own router.
type gateHost struct {
	id     string
	router gateRouter
}

// startGateHost starts agent id with the sample service behind a new router
// of kind; metrics_path makes its serving slot a Prometheus SD target.
func (e *gateEnv) startGateHost(t *testing.T, id, kind string, accessLog bool) *gateHost {
	t.Helper()
	ports := router.Ports{Blue: freePort(t), Green: freePort(t)}
	r := startGateRouter(t, kind, ports, accessLog)
	state := t.TempDir()
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = %q
state_dir = %q
service "app" {
  swap_mode     = "blue-green"
  keep_releases = 3
  metrics_path  = "/metrics"
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "10s"
  }
  blue_green {
    blue_port     = %d
    green_port    = %d
    keep_warm     = "10m"
    drain_timeout = "2s"%s
  }
}
`, id, state, ports.Blue, ports.Green, r.block)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, id, filepath.Join(e.bin, "golive-agent"), "run", "--controller", e.ctlAddr, "--config", conf,
		"--metrics-addr", "", "--grpc-addr", "")
	waitToken(t, e.ctl, id)
	return &gateHost{id: id, router: r}
}

// deploy starts a rollout of release v to h with the gate's test settings.
func (e *gateEnv) deploy(t *testing.T, h *gateHost, v string, analysisHCL string) string {
	t.Helper()
	req := &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{h.id},
		ArtifactUrl: "http://" + e.httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: e.sums[v],
		MinHealthy: durationpb.New(gateBake), MinRequests: gateMinRequests}
	if analysisHCL != "" {
		req.Analysis = []*golivev1.AnalysisFile{{Name: "error-rate.hcl", Hcl: analysisHCL}}
	}
	resp, err := e.ctl.Deploy(e.ctx, req)
	if err != nil {
		t.Fatalf("deploy %s: %v", v, err)
	}
	return resp.Rollout.Id
}

// rollout is rollout id as the controller shows it now (nil on error).
func (e *gateEnv) rollout(id string) *golivev1.Rollout {
	resp, err := e.ctl.GetRollout(e.ctx, &golivev1.GetRolloutRequest{Id: id})
	if err != nil {
		return nil
	}
	return resp.Rollout
}

// waitRollout waits until rollout id is in a state that stays (a
// terminal one, or halted) and returns it.
func (e *gateEnv) waitRollout(t *testing.T, id string) *golivev1.Rollout {
	t.Helper()
	var r *golivev1.Rollout
	testenv.WaitFor(t, 90*time.Second, "rollout "+id+" to end or halt", func() bool {
		r = e.rollout(id)
		switch r.GetState() {
		case "succeeded", "failed", "rolled_back", "aborted", "halted":
			return true
		}
		return false
	})
	return r
}

// shows waits until the controller shows h running release v.
func (e *gateEnv) shows(t *testing.T, h *gateHost, v string) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, h.id+" running "+v, func() bool {
		la, err := e.ctl.ListAgents(e.ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return false
		}
		for _, a := range la.Agents {
			if a.HostId == h.id {
				for _, s := range a.Services {
					if s.Name == "app" && s.CurrentRelease == v && s.State == "running" && s.ActiveSlot != "" {
						return true
					}
				}
			}
		}
		return false
	})
}

// serves waits until the router answers release v at /version.
func serves(t *testing.T, r gateRouter, v string) {
	t.Helper()
	testenv.WaitFor(t, 15*time.Second, r.kind+" serving "+v, func() bool {
		return versionAt(r.url("/version")) == v
	})
}

// versionAt is what url answers ("" on error).
func versionAt(url string) string {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// load is real traffic through a router, from internal/loadgen: an open
// loop at gateRate until stopped (or the test ends).
type load struct {
	gen  *loadgen.Generator
	wg   sync.WaitGroup
	res  loadgen.Result
	stop sync.Once
}

func startLoad(t *testing.T, url string) *load {
	t.Helper()
	g, err := loadgen.New(loadgen.Options{URL: url, Rate: gateRate, Duration: 10 * time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l := &load{gen: g}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.res, _ = g.Run(context.Background())
	}()
	t.Cleanup(l.Stop)
	return l
}

// Stop ends the load and waits for its requests in flight.
func (l *load) Stop() {
	l.stop.Do(func() { l.gen.Stop(); l.wg.Wait() })
}

// deployV1 puts v1 on h as the stable release, with real traffic from the
// moment it serves (the gate needs real requests to pass it), and returns
// that load.
func (e *gateEnv) deployV1(t *testing.T, h *gateHost) *load {
	t.Helper()
	id := e.deploy(t, h, "v1", "")
	e.shows(t, h, "v1")
	l := startLoad(t, h.router.url("/"))
	r := e.waitRollout(t, id)
	if r.State == "halted" && strings.Contains(r.Reason, "inconclusive") {
		// The load started late on a loaded machine: bake again with it on.
		if _, err := e.ctl.ResumeRollout(e.ctx, &golivev1.ResumeRolloutRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 30*time.Second, "v1 resumed", func() bool { return e.rollout(id).GetState() != "halted" })
		r = e.waitRollout(t, id)
	}
	if r.State != "succeeded" {
		t.Fatalf("v1: %s %q %v", r.State, r.Reason, r.Hosts)
	}
	serves(t, h.router, "v1")
	return l
}

func judgedOn(r *golivev1.Rollout) []string {
	var out []string
	for _, w := range r.Waves {
		out = append(out, w.JudgedOn)
	}
	return out
}

// TestTrafficGate: the gate judges the load balancer's counts of real
// requests, on both routers. Each case is a fresh host (agent, router, two
// slots) with v1 serving under real traffic, then a deploy of the case's
// release into the other slot while the load goes on: v2 passes, judged on
// "traffic"; v4 (healthz fine, 5% of / answer 500) and v5 (300 ms more on
// /) fail the gate on the real error rate and latency and roll back on
// their own, the router serving v1 again; with the load stopped the gate
// never passes: the rollout halts inconclusive and is aborted.
func TestTrafficGate(t *testing.T) {
	tests := []struct {
		name    string
		give    string // release
		noLoad  bool
		want    string // rollout state
		wantWhy []string
	}{
		{name: "good release passes", give: "v2", want: "succeeded"},
		{name: "5% errors roll back", give: "v4", want: "rolled_back", wantWhy: []string{"real traffic", "error rate"}},
		{name: "latency rolls back", give: "v5", want: "rolled_back", wantWhy: []string{"real traffic", "average latency"}},
		{name: "no traffic is inconclusive", give: "v2", noLoad: true, want: "halted", wantWhy: []string{"inconclusive: the gate saw", "--min-requests 50"}},
	}
	e := startGateEnv(t, "")
	for _, kind := range []string{"nginx", "haproxy"} {
		t.Run(kind, func(t *testing.T) {
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					h := e.startGateHost(t, fmt.Sprintf("%s-%d", kind, i), kind, true)
					l := e.deployV1(t, h)
					if tt.noLoad {
						l.Stop()
					}
					id := e.deploy(t, h, tt.give, "")
					r := e.waitRollout(t, id)
					t.Logf("%s on %s: %s %q judged on %v", tt.give, kind, r.State, r.Reason, judgedOn(r))
					if r.State != tt.want {
						t.Fatalf("%s: state %s %q %v, want %s", tt.give, r.State, r.Reason, r.Hosts, tt.want)
					}
					for _, w := range tt.wantWhy {
						if !strings.Contains(r.Reason, w) {
							t.Errorf("reason %q does not say %q", r.Reason, w)
						}
					}
					if got := judgedOn(r); len(got) == 0 || got[0] != "traffic" {
						t.Errorf("judged on %v, want traffic", got)
					}
					switch r.State {
					case "succeeded":
						serves(t, h.router, tt.give)
					case "rolled_back":
						serves(t, h.router, "v1")
						e.shows(t, h, "v1")
					case "halted":
						// Never passed on no data: it waits for the operator.
						if _, err := e.ctl.AbortRollout(e.ctx, &golivev1.AbortRolloutRequest{Id: id, Reason: "no traffic to judge on"}); err != nil {
							t.Fatal(err)
						}
						var ended *golivev1.Rollout
						testenv.WaitFor(t, 60*time.Second, "the aborted rollout to end", func() bool {
							ended = e.rollout(id)
							switch ended.GetState() {
							case "aborted", "rolled_back", "failed":
								return true
							}
							return false
						})
						if ended.State != "aborted" {
							t.Fatalf("after abort: %s %q", ended.State, ended.Reason)
						}
						serves(t, h.router, "v1")
					}
					l.Stop()
					if !tt.noLoad {
						t.Logf("load through %s: %+v", kind, l.res.Summary())
					}
				})
			}
		})
	}
}

// errorRateAnalysis is an analysis on the sample app's own counters of
// requests to /: the 5xx ratio of the release being deployed, over the
// last 10s. The analysis measures from the bake's start, but Prometheus
// scrapes the new slot only a few seconds after the switch (the agent's
// heartbeat, the SD refresh, two scrapes for a rate): those empty answers
// are inconclusive and count as failures, hence the failure_limit. count
// must stay above failure_limit: a metric "passes" after count
// measurements of any verdict within the limit, so with failure_limit >=
// count a run of nothing but failures passes (reported as a bug).
func errorRateAnalysis(count int) string {
	return fmt.Sprintf(`
metric "error-rate" {
  query    = "(sum(rate(sampleapp_http_requests_total{service=\"{{service}}\",release=\"{{release}}\",path=\"/\",code=~\"5..\"}[10s])) or vector(0)) / sum(rate(sampleapp_http_requests_total{service=\"{{service}}\",release=\"{{release}}\",path=\"/\"}[10s]))"
  interval = "2s"
  count    = %d
  fail_if  = "> 0.01"
  failure_limit           = 8
  consecutive_error_limit = 2
}
`, count)
}

// TestPromQLGate: a real Prometheus scrapes the sample app through
// golive's HTTP SD endpoint; the gate's PromQL analysis (deploy
// --analysis) fails v4 on its 5xx ratio although its probe passes (nginx
// without an access log: the gate judges probe+promql), and a good
// release's analysis fails, never passes, when Prometheus stops mid-bake.
func TestPromQLGate(t *testing.T) {
	httpAddr := etcdtest.FreeAddr(t)
	prom := promtest.Start(t, promtest.Options{Config: fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: golive
    http_sd_configs:
      - url: http://%s/v1/prometheus/sd
        refresh_interval: 1s
`, httpAddr)})
	e := startGateEnv(t, httpAddr, "--prometheus-url", prom.URL)
	h := e.startGateHost(t, "prom-1", "nginx", false)
	if r := e.waitRollout(t, e.deploy(t, h, "v1", "")); r.State != "succeeded" {
		t.Fatalf("v1: %s %q %v", r.State, r.Reason, r.Hosts)
	}
	l := startLoad(t, h.router.url("/"))
	promtest.WaitFor(t, 60*time.Second, func() (bool, string) {
		ts, err := prom.Targets(t.Context())
		if err != nil {
			return false, err.Error()
		}
		for _, tg := range ts {
			if tg.Labels["service"] == "app" && tg.Labels["release"] == "v1" && tg.Health == "up" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no target up for app v1: %+v", ts)
	})

	t.Run("v4 fails on its 5xx ratio", func(t *testing.T) {
		r := e.waitRollout(t, e.deploy(t, h, "v4", errorRateAnalysis(12)))
		t.Logf("v4: %s %q judged on %v", r.State, r.Reason, judgedOn(r))
		var breached []string
		for _, m := range r.GetAnalysis().GetMeasurements() {
			t.Logf("  %s %s = %s: %s %s", m.At.AsTime().Format("15:04:05.000"), m.Metric, m.Value, m.Verdict, m.Message)
			if v, err := strconv.ParseFloat(m.Value, 64); err == nil && m.Verdict == "fail" && v > 0.01 {
				breached = append(breached, m.Value)
			}
		}
		if r.State != "rolled_back" || !strings.Contains(r.Reason, "PromQL analysis failed") {
			t.Fatalf("v4: %s %q, want rolled_back by the PromQL analysis", r.State, r.Reason)
		}
		if got := judgedOn(r); len(got) == 0 || got[0] != "probe+promql" {
			t.Errorf("judged on %v, want probe+promql", got)
		}
		if len(breached) == 0 {
			ts, err := prom.Targets(t.Context())
			t.Logf("targets: %+v %v", ts, err)
			t.Fatalf("no measurement failed on a 5xx ratio over 1%%: %v", r.GetAnalysis())
		}
		serves(t, h.router, "v1")
	})

	t.Run("Prometheus stopped mid-bake never passes", func(t *testing.T) {
		id := e.deploy(t, h, "v2", errorRateAnalysis(12))
		testenv.WaitFor(t, 60*time.Second, "a first passing measurement of v2", func() bool {
			for _, m := range e.rollout(id).GetAnalysis().GetMeasurements() {
				if m.Verdict == "pass" {
					return true
				}
			}
			return false
		})
		prom.Stop()
		r := e.waitRollout(t, id)
		t.Logf("v2 with Prometheus stopped: %s %q", r.State, r.Reason)
		if r.State != "rolled_back" || !strings.Contains(r.Reason, "PromQL analysis failed") {
			t.Fatalf("v2: %s %q, want rolled_back by the PromQL analysis", r.State, r.Reason)
		}
		errs := 0
		for _, m := range r.GetAnalysis().GetMeasurements() {
			t.Logf("  %s %s = %q: %s %s", m.At.AsTime().Format("15:04:05.000"), m.Metric, m.Value, m.Verdict, m.Message)
			if m.Verdict == "error" {
				errs++
			}
		}
		if errs == 0 {
			t.Fatalf("no measurement errored after Prometheus stopped")
		}
		serves(t, h.router, "v1")
	})
	l.Stop()
}

// TestTrafficGateSlotReuse: a good release deployed right after a bad one
// was rolled back lands in the bad one's slot, and must be judged on its
// own requests (the agent starts the serving slot's window again once a
// release is live in it).
func TestTrafficGateSlotReuse(t *testing.T) {
	e := startGateEnv(t, "")
	h := e.startGateHost(t, "reuse-1", "nginx", true)
	l := e.deployV1(t, h)
	defer l.Stop()
	if r := e.waitRollout(t, e.deploy(t, h, "v4", "")); r.State != "rolled_back" {
		t.Fatalf("v4: %s %q, want rolled_back", r.State, r.Reason)
	}
	serves(t, h.router, "v1")
	r := e.waitRollout(t, e.deploy(t, h, "v2", ""))
	t.Logf("v2 right after v4: %s %q", r.State, r.Reason)
	if r.State != "succeeded" {
		t.Fatalf("v2 (no errors of its own) in v4's slot: %s %q, want succeeded", r.State, r.Reason)
	}
}
