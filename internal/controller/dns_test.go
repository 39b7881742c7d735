package controller_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const dnsWWW = "www.example.test."

var (
	dnsBlue  = []string{"192.0.2.10", "192.0.2.11"} // dnstest.InitialRecords
	dnsGreen = []string{"198.51.100.10"}
)

// dnsConfigFile writes a dns.hcl for server s whose key file holds secret
// (base64), with pools blue (web-1, web-2: what the zone serves at start)
// and green (dr-1), and a manual-failback failover of www between them.
func dnsConfigFile(t *testing.T, s *dnstest.Server, secret string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "golive.key"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`zone "example.test" {
  server   = %q
  key_name = "golive"
  key_file = "golive.key"
  timeout  = "2s"
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
  type      = "A"
  ttl       = "30s"
  primary   = blue
  secondary = green
  check {
    interval  = "1s"
    threshold = 3
  }
  failback  = "manual"
  hold_down = "1m"
  max_ttl   = "60s"
}
`, s.Addr)
	path := filepath.Join(dir, "dns.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hookServer collects the webhook events the controller posts.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
}

func startHook(t *testing.T) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.bodies = append(h.bodies, string(b))
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

// events returns the events of kind received so far.
func (h *hookServer) events(kind string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, b := range h.bodies {
		var ev map[string]any
		if json.Unmarshal([]byte(b), &ev) == nil && ev["kind"] == kind {
			out = append(out, ev)
		}
	}
	return out
}

func (h *hookServer) all() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.bodies, "\n")
}

type dnsEnv struct {
	dns  *dnstest.Server
	ctl  golivev1.ControlServiceClient
	ctx  context.Context
	c    *testenv.Controller
	hook *hookServer
}

func startDNSEnv(t *testing.T, kind dnstest.Kind) *dnsEnv {
	t.Helper()
	s := dnstest.Start(t, kind)
	hook := startHook(t)
	cfg := testenv.ControllerConfig(t)
	cfg.DNSConfig = dnsConfigFile(t, s, s.Secrets[dnstest.KeyGolive])
	cfg.Webhooks = []notify.Receiver{{Name: "test", URL: hook.URL}}
	c := testenv.StartController(t, cfg)
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	return &dnsEnv{dns: s, ctl: ctl, ctx: ctx, c: c, hook: hook}
}

func (e *dnsEnv) authorize(t *testing.T) int64 {
	t.Helper()
	resp, err := e.ctl.Authorize(e.ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "dns test"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Approval.FencingToken
}

func (e *dnsEnv) show(t *testing.T) *golivev1.DnsRecord {
	t.Helper()
	resp, err := e.ctl.DnsShow(e.ctx, &golivev1.DnsShowRequest{Name: dnsWWW})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Records[0]
}

func (e *dnsEnv) audit(t *testing.T, action string) []*golivev1.AuditEntry {
	t.Helper()
	resp, err := e.ctl.ListAudit(e.ctx, &golivev1.ListAuditRequest{Action: action})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Entries
}

func countPrefix(t *testing.T, cli *clientv3.Client, prefix string) int {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// TestDNSSetNeedsApproval: without an approval dns set is refused and
// nothing is written or sent; under one it is applied, confirmed, fenced
// on the token and audited; a record someone else changed is refused, not
// overwritten.
func TestDNSSetNeedsApproval(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	set := &golivev1.DnsSetRequest{Name: "api.example.test", Values: []string{"203.0.113.7"}, Ttl: durationpb.New(20 * time.Second), Reason: "new api"}
	_, err := e.ctl.DnsSet(e.ctx, set)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "authorize") {
		t.Fatalf("dns set without approval: %v, want FailedPrecondition saying to authorize", err)
	}
	keys := e.c.Keys()
	if n := countPrefix(t, e.c.Client(), keys.DNSRecords()) + countPrefix(t, e.c.Client(), keys.DNSHistoryAll()); n != 0 {
		t.Fatalf("a refused dns set wrote %d keys", n)
	}
	if got := e.audit(t, "dns_set"); len(got) != 0 {
		t.Fatalf("a refused dns set was audited as a change: %v", got)
	}
	show, err := e.ctl.DnsShow(e.ctx, &golivev1.DnsShowRequest{Name: "api.example.test"})
	if err != nil || show.Records[0].ServedExists {
		t.Fatalf("after a refused set, api: %v %v (want no such record)", show, err)
	}

	token := e.authorize(t)
	resp, err := e.ctl.DnsSet(e.ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Result.Outcome != "confirmed" || resp.Result.FencingToken != token || !slices.Equal(resp.Record.ServedValues, []string{"203.0.113.7"}) ||
		resp.Record.ServedTtl.AsDuration() != 20*time.Second || resp.Record.Drift {
		t.Fatalf("dns set under approval: %v", resp)
	}
	audits := e.audit(t, "dns_set")
	if len(audits) != 2 || audits[0].Outcome != "started" || audits[1].Outcome != "confirmed" || audits[1].Actor != "alice" ||
		!strings.Contains(audits[1].Detail, fmt.Sprintf("fencing_token=%d", token)) || audits[1].Reason != "new api" {
		t.Fatalf("audit of dns set: %v", audits)
	}

	// Someone else changes api behind golive's back; golive's next change
	// of it fails the prerequisite and leaves their records.
	if out, err := e.dns.Nsupdate(e.ctx, dnstest.KeyOther, "update delete api.example.test. A\nupdate add api.example.test. 30 A 192.0.2.99"); err != nil {
		t.Fatalf("nsupdate: %v\n%s", err, out)
	}
	_, err = e.ctl.DnsSet(e.ctx, &golivev1.DnsSetRequest{Name: "api.example.test", Values: []string{"192.0.2.50"}, Reason: "should be refused"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "someone else changed the record") {
		t.Fatalf("dns set over someone else's change: %v, want FailedPrecondition (conflict)", err)
	}
	show, err = e.ctl.DnsShow(e.ctx, &golivev1.DnsShowRequest{Name: "api.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if r := show.Records[0]; !slices.Equal(r.ServedValues, []string{"192.0.2.99"}) || !r.Drift {
		t.Fatalf("after a refused set over someone else's change: served %v drift %v, want [192.0.2.99] and drift", r.ServedValues, r.Drift)
	}
	hist, err := e.ctl.DnsHistory(e.ctx, &golivev1.DnsHistoryRequest{Name: "api.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, h := range hist.Entries {
		outcomes = append(outcomes, h.Kind+":"+h.Outcome)
	}
	if !slices.Equal(outcomes, []string{"set:failed", "set:confirmed", "adopt:adopted"}) {
		t.Fatalf("api history (newest first) = %v", outcomes)
	}
}

// TestDNSFailoverWithoutApproval: the operator's dns failover is a safety
// action: it works without an approval, is audited, and pins the record.
func TestDNSFailoverWithoutApproval(t *testing.T) {
	e := startDNSEnv(t, dnstest.Knot)
	resp, err := e.ctl.DnsFailover(e.ctx, &golivev1.DnsFailoverRequest{Name: "www.example.test", To: "green", Reason: "blue datacenter on fire"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Result.Outcome != "confirmed" || resp.Result.FromPool != "blue" || resp.Result.ToPool != "green" || resp.Result.FencingToken != 0 {
		t.Fatalf("dns failover: %v", resp.Result)
	}
	r := resp.Record
	if !slices.Equal(r.ServedValues, dnsGreen) || r.Failover.Active != "green" || !r.Failover.Pinned || r.Failover.Switches != 1 {
		t.Fatalf("after dns failover: %v", r)
	}
	audits := e.audit(t, "dns_failover")
	if len(audits) != 2 || audits[1].Outcome != "confirmed" || audits[1].Actor != "alice" || audits[1].Reason != "blue datacenter on fire" ||
		!strings.Contains(audits[1].Detail, "from=blue to=green") {
		t.Fatalf("audit of dns failover: %v", audits)
	}
	testenv.WaitFor(t, 30*time.Second, "the dns_switched webhook", func() bool { return len(e.hook.events("dns_switched")) > 0 })
	if _, err := e.ctl.DnsFailover(e.ctx, &golivev1.DnsFailoverRequest{Name: "www.example.test", To: "purple"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("failover to an unknown pool: %v, want InvalidArgument", err)
	}
	// Back to the primary: unpinned.
	resp, err = e.ctl.DnsFailover(e.ctx, &golivev1.DnsFailoverRequest{Name: "www.example.test", To: "blue", Reason: "fire is out"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Record.ServedValues, dnsBlue) || resp.Record.Failover.Pinned || resp.Record.Failover.Active != "blue" {
		t.Fatalf("after failing back: %v", resp.Record)
	}
}

// dnsSimAgent speaks the agent protocol with one service "app" whose
// probe window is healthy or not as the test says.
type dnsSimAgent struct {
	host    string
	healthy atomic.Bool
}

func (a *dnsSimAgent) service() *golivev1.ServiceState {
	hw := &golivev1.HealthWindow{Requests: 50, Healthy: a.healthy.Load(), LastProbe: timestamppb.Now(), WindowSeconds: 30, AvgLatencyMs: 3}
	if !hw.Healthy {
		hw.Errors, hw.LastError = 50, "connection refused"
	}
	return &golivev1.ServiceState{Name: "app", CurrentRelease: "v1", State: "running", Health: hw}
}

func (a *dnsSimAgent) run(ctx context.Context, conn *grpc.ClientConn) error {
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	send := func(m *golivev1.ConnectRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	if err := send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-sim", AgentVersion: "sim", Services: []*golivev1.ServiceState{a.service()}}}}); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
					Services: []*golivev1.ServiceState{a.service()}, SentAt: timestamppb.Now()}}})
			}
		}
	}()
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

func startSimAgents(t *testing.T, addr string, hosts ...string) map[string]*dnsSimAgent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); conn.Close() })
	out := map[string]*dnsSimAgent{}
	for _, h := range hosts {
		a := &dnsSimAgent{host: h}
		a.healthy.Store(true)
		out[h] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a.run(ctx, conn)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	return out
}

// TestDNSAutomaticFailover: with the primary pool's agents reporting
// failing probes, the leader never switches on one bad check; without an
// approval it only recommends (webhook with the exact command, record
// untouched); under an approval it switches within the configured checks,
// fenced on the approval and audited with the figures.
func TestDNSAutomaticFailover(t *testing.T) {
	e := startDNSEnv(t, dnstest.BIND)
	agents := startSimAgents(t, e.c.GRPCAddr(), "web-1", "web-2", "dr-1")
	testenv.WaitFor(t, 60*time.Second, "the record adopted and the primary judged healthy", func() bool {
		r := e.show(t)
		return r.Failover != nil && r.Failover.Good >= 1 && strings.HasPrefix(r.Failover.PrimaryHealth, "healthy") &&
			strings.HasPrefix(r.Failover.SecondaryHealth, "healthy")
	})

	// One bad stretch shorter than the threshold: no switch, even under
	// an approval.
	token := e.authorize(t)
	agents["web-1"].healthy.Store(false)
	agents["web-2"].healthy.Store(false)
	testenv.WaitFor(t, 30*time.Second, "a bad check counted", func() bool { return e.show(t).Failover.Bad >= 1 })
	agents["web-1"].healthy.Store(true)
	agents["web-2"].healthy.Store(true)
	testenv.WaitFor(t, 30*time.Second, "good checks again", func() bool { return e.show(t).Failover.Good >= 2 })
	if r := e.show(t); !slices.Equal(r.ServedValues, dnsBlue) || r.Failover.Switches != 0 {
		t.Fatalf("switched on fewer bad checks than the threshold: %v", r)
	}

	// Without an approval: recommend, alert, change nothing.
	if _, err := e.ctl.Revoke(e.ctx, &golivev1.RevokeRequest{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	agents["web-1"].healthy.Store(false)
	agents["web-2"].healthy.Store(false)
	const command = "golive-controller dns failover www.example.test. --to green"
	testenv.WaitFor(t, 60*time.Second, "a recommendation webhook", func() bool {
		for _, ev := range e.hook.events("dns_failover_recommended") {
			if d, _ := ev["details"].(map[string]any); d["command"] == command {
				return true
			}
		}
		return false
	})
	r := e.show(t)
	if !slices.Equal(r.ServedValues, dnsBlue) || r.Failover.Active != "blue" || r.Failover.Recommended != "green" || r.Failover.Command != command ||
		r.Failover.LastAction != "recommend" || !strings.Contains(r.Failover.PrimaryHealth, "0/2 hosts healthy") {
		t.Fatalf("without approval, a failing primary: %v", r)
	}
	if got := e.audit(t, "dns_automatic"); len(got) != 0 {
		t.Fatalf("without approval the leader changed the record: %v", got)
	}

	if m := scrape(t, e.c); !strings.Contains(m, `golive_controller_dns_failover_alert{kind="recommend",name="www.example.test."} 1`) {
		t.Fatalf("metrics during a recommendation:\n%s", m)
	}

	// Under an approval: the primary recovers, then fails again; the
	// switch comes at the threshold's check, not before, not later.
	agents["web-1"].healthy.Store(true)
	agents["web-2"].healthy.Store(true)
	testenv.WaitFor(t, 30*time.Second, "the primary healthy again", func() bool { return e.show(t).Failover.Good >= 1 })
	token = e.authorize(t)
	agents["web-1"].healthy.Store(false)
	agents["web-2"].healthy.Store(false)
	testenv.WaitFor(t, 60*time.Second, "the record switched to green", func() bool {
		r := e.show(t)
		return slices.Equal(r.ServedValues, dnsGreen) && r.Failover.Active == "green"
	})
	r = e.show(t)
	if r.Failover.Pinned || r.Failover.Switches != 1 || r.Last.Kind != "automatic" || r.Last.FencingToken != token || r.Drift {
		t.Fatalf("after the automatic switch: %v", r)
	}
	audits := e.audit(t, "dns_automatic")
	if len(audits) != 2 || audits[1].Outcome != "confirmed" || !strings.Contains(audits[1].Reason, "0/2 hosts healthy") ||
		!strings.Contains(audits[1].Reason, "on 3 consecutive checks") || !strings.Contains(audits[1].Detail, fmt.Sprintf("fencing_token=%d", token)) {
		t.Fatalf("audit of the automatic switch: %v", audits)
	}
	testenv.WaitFor(t, 30*time.Second, "the dns_switched webhook", func() bool { return len(e.hook.events("dns_switched")) > 0 })
	if m := scrape(t, e.c); !strings.Contains(m, `golive_controller_dns_failover_state{name="www.example.test.",pool="green"} 1`) ||
		!strings.Contains(m, `golive_controller_dns_failover_switches_total{name="www.example.test.",source="automatic"} 1`) {
		t.Fatalf("metrics after the switch:\n%s", m)
	}

	// Failback is manual: a healthy primary is recommended, not switched to.
	agents["web-1"].healthy.Store(true)
	agents["web-2"].healthy.Store(true)
	testenv.WaitFor(t, 30*time.Second, "the primary healthy again", func() bool { return e.show(t).Failover.Good >= 3 })
	if r := e.show(t); !slices.Equal(r.ServedValues, dnsGreen) {
		t.Fatalf("failed back with failback = manual: %v", r)
	}
}

// syncBuffer is a log sink the test reads while the controller writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDNSSecretNeverLeaks: a canary TSIG secret (one the server does not
// know, so every update is refused) goes nowhere through the controller:
// not in its logs, etcd, responses, errors, webhooks or metrics.
func TestDNSSecretNeverLeaks(t *testing.T) {
	s := dnstest.Start(t, dnstest.BIND)
	canaryRaw := "CANARY-controller-tsig-secret-must-never-leak"
	canary := base64.StdEncoding.EncodeToString([]byte(canaryRaw))
	hook := startHook(t)
	cfg := testenv.ControllerConfig(t)
	cfg.DNSConfig = dnsConfigFile(t, s, canary)
	cfg.Webhooks = []notify.Receiver{{Name: "test", URL: hook.URL}}
	logs := &syncBuffer{}
	ready := make(chan *controller.Server, 1)
	cfg.Ready = func(srv *controller.Server) { ready <- srv }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := hclog.New(&hclog.LoggerOptions{Name: "controller", Level: hclog.Debug, Output: io.MultiWriter(logs, testLogWriter{t})})
	go func() { done <- controller.Run(ctx, cfg, log) }()
	t.Cleanup(func() { cancel(); <-done })
	var srv *controller.Server
	select {
	case srv = <-ready:
	case err := <-done:
		t.Fatalf("controller did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller did not start")
	}
	ctl, cctx := testenv.Control(t, srv.GRPCAddr(), "alice")
	var seen []string
	record := func(m proto.Message, err error) {
		if m != nil {
			b, _ := protojson.Marshal(m)
			seen = append(seen, string(b))
		}
		if err != nil {
			seen = append(seen, err.Error())
		}
	}
	record(ctl.DnsShow(cctx, &golivev1.DnsShowRequest{}))
	record(ctl.DnsFailover(cctx, &golivev1.DnsFailoverRequest{Name: dnsWWW, To: "green"}))
	if _, err := ctl.Authorize(cctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "canary"}); err != nil {
		t.Fatal(err)
	}
	record(ctl.DnsSet(cctx, &golivev1.DnsSetRequest{Name: dnsWWW, Values: []string{"203.0.113.1"}}))
	record(ctl.DnsHistory(cctx, &golivev1.DnsHistoryRequest{}))
	record(ctl.ListAudit(cctx, &golivev1.ListAuditRequest{}))
	if len(seen) < 4 || !strings.Contains(strings.Join(seen, "\n"), "refused") {
		t.Fatalf("the canary's updates were not refused by the server: %v", seen)
	}
	resp, err := srv.Client().Get(context.Background(), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		seen = append(seen, string(kv.Key)+"="+string(kv.Value))
	}
	if r, err := http.Get("http://" + srv.MetricsAddr() + "/metrics"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		seen = append(seen, string(b))
	}
	seen = append(seen, logs.String(), hook.all())
	all := strings.Join(seen, "\n")
	for _, leak := range []string{canary, canaryRaw, strings.TrimRight(canary, "="), "CANARY"} {
		if strings.Contains(all, leak) {
			t.Fatalf("the TSIG secret leaks (%q) in:\n%s", leak, all)
		}
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
