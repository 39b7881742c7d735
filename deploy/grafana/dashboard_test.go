// Package grafana_test checks the Grafana dashboard deploy/grafana/golive.json:
//
//   - always: it parses, keeps its fixed uid, title and schemaVersion, has a
//     datasource variable every panel and query uses, and every panel has a
//     query;
//   - with a real Prometheus (Debian package "prometheus"): every query is
//     accepted by /api/v1/format_query, and returns data once Prometheus
//     scrapes a running controller and two agents (in this process, on
//     loopback ports) that have done what the panels show: a refused deploy,
//     an approval, a rollout that ended, real traffic in an nginx access
//     log, an operator's DNS failover (real BIND); and every golive metric
//     a query names is on the /metrics pages scraped. Without prometheus this skips, except under CI=true, where it
//     fails.
package grafana_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const dashboardFile = "golive.json"

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// query is one panel query.
type query struct{ panel, expr string }

func queries(d dashboard) []query {
	var out []query
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, query{p.Title, tg.Expr})
		}
	}
	return out
}

func TestDashboardShape(t *testing.T) {
	d := load(t)
	if d.UID != "golive" || d.Title != "golive" || d.SchemaVersion != 39 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want golive, golive, 39 (links and provisioning rely on them)", d.UID, d.Title, d.SchemaVersion)
	}
	var hasDS bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Errorf("no datasource variable (name datasource, type datasource, query prometheus)")
	}
	want := datasource{Type: "prometheus", UID: "${datasource}"}
	n := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		n++
		if p.Datasource == nil || *p.Datasource != want {
			t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, want)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || *tg.Datasource != want || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: a query with datasource %+v and expr %q", p.Title, tg.Datasource, tg.Expr)
			}
		}
	}
	// What the dashboard is for: each of these is on a panel.
	all := ""
	for _, q := range queries(d) {
		all += q.expr + "\n"
	}
	for _, m := range []string{"golive_controller_approval_active", "golive_controller_approval_expiry_seconds", "golive_controller_agents_connected",
		"golive_agent_connected", "golive_controller_rollouts_total", "golive_controller_gate_failures_total",
		"golive_agent_traffic_requests_total", "golive_agent_traffic_errors_total", "golive_agent_traffic_latency_seconds_bucket",
		"golive_controller_approval_broadcasts_total"} {
		if !strings.Contains(all, m) {
			t.Errorf("no panel queries %s", m)
		}
	}
	if n < 12 {
		t.Errorf("%d panels: want the approval, agents, rollouts, gates, traffic and fan-out panels", n)
	}
}

// grafanaVars are the values the test gives Grafana's variables.
var grafanaVars = strings.NewReplacer("$__rate_interval", "30s", "$__interval", "5s", "$__range", "10m", "$service", ".*")

func prometheusBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus not found (%v): CI must check the dashboard's queries; install the Debian package prometheus", err)
		}
		t.Skipf("prometheus not found (%v); skipping (it fails under CI=true; apt-get install prometheus)", err)
	}
	return path
}

func TestDashboardQueriesAgainstPrometheus(t *testing.T) {
	promBin := prometheusBinary(t)
	d := load(t)

	// A controller (managing a real BIND zone with a failover of www
	// between web-1/web-2 and dr-1, when named is installed) and two agents
	// whose service "app" is behind an nginx that logs in golive's JSON
	// format.
	cfg := testenv.ControllerConfig(t)
	withDNS := dnsConfig(t, &cfg)
	if !withDNS {
		d = withoutDNSPanels(d)
	}
	c := testenv.StartController(t, cfg)
	logPath := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var agentMetrics []string
	var ports []int
	for _, host := range []string{"web-1", "web-2"} {
		port := freePort(t)
		ports = append(ports, port)
		agentMetrics = append(agentMetrics, startAgent(t, host, port, logPath, c.GRPCAddr()))
	}
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "grafana-test")
	testenv.WaitFor(t, 20*time.Second, "both agents connected", func() bool {
		resp, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil || len(resp.Agents) != 2 {
			return false
		}
		for _, a := range resp.Agents {
			if a.State != "connected" {
				return false
			}
		}
		return true
	})

	// What the panels show: a deploy refused without approval, an
	// approval, and a rollout that ends (its artifact does not exist).
	deploy := &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///nonexistent/app-v2.tar.gz",
		Sha256: strings.Repeat("0", 64), MinHealthy: durationpb.New(time.Second), SkipChecks: preflight.Names}
	if _, err := ctl.Deploy(ctx, deploy); err == nil {
		t.Fatal("deploy without approval was accepted")
	}
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "dashboard test"}); err != nil {
		t.Fatal(err)
	}
	resp, err := ctl.Deploy(ctx, deploy)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "the rollout ended", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: resp.Rollout.Id})
		return err == nil && r.Rollout.FinishedAt != nil
	})

	// An operator's DNS failover: the failover series and since_switch.
	if withDNS {
		if _, err := ctl.DnsFailover(ctx, &golivev1.DnsFailoverRequest{Name: "www.example.test", To: "green", Reason: "dashboard test"}); err != nil {
			t.Fatal(err)
		}
	}

	// Prometheus scrapes them every second.
	targets := append([]string{c.MetricsAddr()}, agentMetrics...)
	prom := startPrometheus(t, promBin, targets)
	testenv.WaitFor(t, 60*time.Second, "every target up", func() bool {
		up, err := promQuery(prom, "sum(up)")
		return err == nil && up == fmt.Sprint(len(targets))
	})

	// Every metric a query names is on a scraped /metrics page.
	exported := map[string]bool{}
	for _, addr := range targets {
		for _, name := range metricNames(t, "http://"+addr+"/metrics") {
			exported[name] = true
		}
	}
	metricRef := regexp.MustCompile(`\bgolive_[a-z0-9_]+`)
	for _, q := range queries(d) {
		for _, name := range metricRef.FindAllString(q.expr, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("panel %q: %s is not on any scraped /metrics page", q.panel, name)
			}
		}
	}

	// Every query parses, and returns data. Real traffic keeps arriving in
	// the access log meanwhile.
	pending := queries(d)
	for i := range pending {
		pending[i].expr = grafanaVars.Replace(pending[i].expr)
		if err := formatQuery(prom, pending[i].expr); err != nil {
			t.Errorf("panel %q: Prometheus refuses %s: %v", pending[i].panel, pending[i].expr, err)
		}
	}
	if t.Failed() {
		return
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		writeTraffic(t, logPath, ports)
		var still []query
		for _, q := range pending {
			if n, err := promResultCount(prom, q.expr); err != nil || n == 0 {
				still = append(still, q)
			}
		}
		pending = still
		if len(pending) > 0 {
			// Bounded by the deadline: wait for the next scrape.
			testenv.WaitFor(t, 5*time.Second, "next scrape", scrapedSince(prom, time.Now()))
		}
	}
	for _, q := range pending {
		t.Errorf("panel %q: no data from %s within 90s of scrapes", q.panel, q.expr)
	}
}

// dnsConfig gives cfg a --dns-config for a real BIND (dnstest) with a
// failover of www.example.test between pools blue (web-1, web-2) and green
// (dr-1), checked every second. Without named it says so and returns false,
// except under CI=true, where it fails.
func dnsConfig(t *testing.T, cfg *controller.Config) bool {
	t.Helper()
	if _, err := exec.LookPath("named"); err != nil && os.Getenv("CI") != "true" {
		t.Logf("named not found (%v): the DNS panels are not checked (apt-get install bind9)", err)
		return false
	}
	s := dnstest.Start(t, dnstest.BIND)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "golive.key"), []byte(s.Secrets[dnstest.KeyGolive]), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`zone "example.test" {
  server   = %q
  key_name = "golive"
  key_file = "golive.key"
}
pool "blue" {
  hosts     = ["web-1", "web-2"]
  addresses = ["192.0.2.10", "192.0.2.11"]
}
pool "green" {
  hosts     = ["dr-1"]
  addresses = ["198.51.100.10"]
}
failover "www.example.test" {
  zone      = "example.test"
  primary   = blue
  secondary = green
  check {
    interval  = "1s"
    threshold = 3
  }
}
`, s.Addr)
	if err := os.WriteFile(filepath.Join(dir, "dns.hcl"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DNSConfig = filepath.Join(dir, "dns.hcl")
	return true
}

// withoutDNSPanels is d less the panels that query DNS series.
func withoutDNSPanels(d dashboard) dashboard {
	var keep []panel
	for _, p := range d.Panels {
		dns := false
		for _, tg := range p.Targets {
			dns = dns || strings.Contains(tg.Expr, "golive_controller_dns_")
		}
		if !dns {
			keep = append(keep, p)
		}
	}
	d.Panels = keep
	return d
}

// startAgent runs an agent for host with service "app" on port, its real
// traffic read from the nginx access log; it returns the agent's /metrics
// address.
func startAgent(t *testing.T, host string, port int, accessLog, controller string) string {
	t.Helper()
	state := t.TempDir()
	cfgFile := filepath.Join(state, "agent.hcl")
	hcl := fmt.Sprintf(`host_id = %q
state_dir = %q
service "app" {
  port = %d
  exec { command = ["/bin/true"] }
  health { url = "http://127.0.0.1:{port}/healthz" }
  traffic {
    source     = "nginx"
    access_log = %q
  }
}
`, host, state, port, accessLog)
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := agentconfig.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := testenv.Logger(t, "agent-"+host)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	services, err := agent.ServicesFromConfig(ctx, cfg, log, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ready := make(chan *agent.Agent, 1)
	done := make(chan error, 1)
	acfg := agent.Config{Controllers: []string{controller}, HostID: host, StateDir: state, Services: services,
		MetricsAddr: etcdtest.FreeAddr(t), MaxBackoff: time.Second, Registry: reg, Ready: func(a *agent.Agent) { ready <- a }}
	go func() { done <- agent.Run(ctx, acfg, log) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-ready:
		return a.MetricsAddr()
	case err := <-done:
		t.Fatalf("agent %s did not start: %v", host, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("agent %s did not start within 30s", host)
	}
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(etcdtest.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeTraffic appends a few requests per port to the access log: most
// answered 200, one 502.
func writeTraffic(t *testing.T, path string, ports []int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := float64(time.Now().UnixMilli()) / 1000
	for _, port := range ports {
		for i, st := range []string{"200", "200", "200", "502"} {
			fmt.Fprintf(f, `{"msec":"%.3f","status":"%s","upstream_addr":"127.0.0.1:%d","upstream_status":"%s","upstream_response_time":"0.0%d2","request_time":"0.0%d3","host":"app","method":"GET","uri":"/"}`+"\n",
				now, st, port, st, i, i)
		}
	}
}

func startPrometheus(t *testing.T, bin string, targets []string) string {
	t.Helper()
	dir := t.TempDir()
	var quoted []string
	for _, tg := range targets {
		quoted = append(quoted, fmt.Sprintf("%q", tg))
	}
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: golive\n    static_configs:\n      - targets: [%s]\n",
		strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.FreeAddr(t)
	cmd := exec.Command(bin, "--config.file=prometheus.yml", "--storage.tsdb.path=data", "--web.listen-address="+addr)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + addr
	testenv.WaitFor(t, 30*time.Second, "prometheus ready", func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited; see its log")
		default:
		}
		r, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	return base
}

type apiResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Value []any `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func promGet(base, path string, q url.Values) (apiResponse, error) {
	var out apiResponse
	r, err := http.PostForm(base+path, q)
	if err != nil {
		return out, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return out, err
	}
	if path == "/api/v1/format_query" {
		var f struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return out, fmt.Errorf("%s: %s", r.Status, b)
		}
		out.Status, out.Error = f.Status, f.Error
	} else if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("%s: %s", r.Status, b)
	}
	if out.Status != "success" {
		return out, fmt.Errorf("%s", out.Error)
	}
	return out, nil
}

func formatQuery(base, expr string) error {
	_, err := promGet(base, "/api/v1/format_query", url.Values{"query": {expr}})
	return err
}

func promResultCount(base, expr string) (int, error) {
	r, err := promGet(base, "/api/v1/query", url.Values{"query": {expr}})
	return len(r.Data.Result), err
}

// promQuery returns the value of expr's single sample.
func promQuery(base, expr string) (string, error) {
	r, err := promGet(base, "/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return "", err
	}
	if len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
		return "", fmt.Errorf("%s: %d samples", expr, len(r.Data.Result))
	}
	return fmt.Sprint(r.Data.Result[0].Value[1]), nil
}

// scrapedSince is true once Prometheus's newest scrape is after t.
func scrapedSince(base string, t time.Time) func() bool {
	return func() bool {
		v, err := promQuery(base, "max(timestamp(up))")
		if err != nil {
			return false
		}
		var ts float64
		fmt.Sscan(v, &ts)
		return ts > float64(t.UnixMilli())/1000
	}
}

// metricNames are the metric families on a /metrics page.
func metricNames(t *testing.T, u string) []string {
	t.Helper()
	r, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var names []string
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" && !slices.Contains(names, f[2]) {
			names = append(names, f[2])
		}
	}
	return names
}
