package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/pki"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// fleetBackend is a Backend over generated data: the page's size at a
// given fleet size does not depend on where the data came from. The
// controller's own Backend is tested against a real controller in
// browser_test.go.
type fleetBackend struct {
	mu      sync.Mutex
	ap      *golivev1.Approval
	agents  []*golivev1.Agent
	rollout *golivev1.Rollout
	acts    []string
	ch      chan Change
}

func newFleet(n int) *fleetBackend {
	b := &fleetBackend{ap: &golivev1.Approval{}, ch: make(chan Change, 16)}
	now := timestamppb.Now()
	for i := range n {
		st, tok := "connected", int64(0)
		healthy := i%97 != 0
		if i%211 == 0 {
			st = "lost"
		}
		b.agents = append(b.agents, &golivev1.Agent{HostId: fmt.Sprintf("web-%05d.dc1.example.net", i), State: st, FencingToken: tok,
			Replica: "ctl-a", LastHeartbeat: now, Labels: map[string]string{"role": "web"},
			Services: []*golivev1.ServiceState{{Name: "shop", CurrentRelease: "v41", PreviousRelease: "v40", State: "running", SwapMode: "blue-green",
				Health: &golivev1.HealthWindow{Requests: 100, Healthy: healthy, AvgLatencyMs: 12.5}}}})
	}
	var hosts []string
	var hp []*golivev1.HostProgress
	for i := range min(n, 1000) {
		h := b.agents[i].HostId
		hosts = append(hosts, h)
		st := "succeeded"
		if i >= 100 {
			st = "pending"
		}
		hp = append(hp, &golivev1.HostProgress{HostId: h, State: st, Stage: "health", Release: "v42"})
	}
	b.rollout = &golivev1.Rollout{Id: "20261202T060000-abcdef", Service: "shop", Release: "v42", State: "wave", Kind: "deploy",
		CreatedBy: "alice", CreatedAt: now, CurrentWave: 1, FencingToken: 7, Hosts: hp,
		Waves: []*golivev1.Wave{{Index: 0, Name: "canary", Hosts: hosts[:min(len(hosts), 10)], State: "succeeded"},
			{Index: 1, Name: "wave 1", Hosts: hosts[min(len(hosts), 10):], State: "running"}},
		Gate: &golivev1.GateStatus{Wave: 1, ErrorRate: 0.0004, AvgLatencyMs: 31, BakedSeconds: 12, WindowSeconds: 30, Passing: true}}
	return b
}

func (b *fleetBackend) Status(context.Context) (*golivev1.StatusResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &golivev1.StatusResponse{Approval: b.ap, Leader: "ctl-a", Replica: "ctl-a", Rollouts: []*golivev1.Rollout{b.rollout}}, nil
}

func (b *fleetBackend) Agents(context.Context) ([]*golivev1.Agent, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*golivev1.Agent(nil), b.agents...), nil
}

func (b *fleetBackend) History(context.Context, int) ([]*golivev1.Rollout, error) {
	return []*golivev1.Rollout{b.rollout}, nil
}

func (b *fleetBackend) Rollout(context.Context, string) (*golivev1.Rollout, error) {
	return b.rollout, nil
}

func (b *fleetBackend) Audit(_ context.Context, limit int) (*AuditTail, error) {
	t := &AuditTail{HeadSeq: 100, HeadHash: "0123456789abcdef0123456789abcdef"}
	for i := range limit {
		t.Entries = append(t.Entries, &golivev1.AuditEntry{Seq: uint64(81 + i), At: timestamppb.Now(), Actor: "alice", Action: "deploy",
			Outcome: "requested", Detail: "rollout=20261202T060000-abcdef service=shop release=v42", Source: "127.0.0.1:5000"})
	}
	return t, nil
}

func (b *fleetBackend) act(s string) {
	b.mu.Lock()
	b.acts = append(b.acts, s)
	b.mu.Unlock()
}

func (b *fleetBackend) Revoke(_ context.Context, c Caller, _ string) (*golivev1.RevokeResponse, error) {
	b.act("revoke " + c.Name)
	b.mu.Lock()
	tok := b.ap.FencingToken
	b.ap = &golivev1.Approval{}
	b.mu.Unlock()
	b.ch <- ChangeApproval
	return &golivev1.RevokeResponse{Revoked: tok != 0, FencingToken: tok}, nil
}

func (b *fleetBackend) Authorize(_ context.Context, c Caller, phrase string, ttl time.Duration, reason string) (*golivev1.Approval, error) {
	b.act("authorize " + c.Name + " " + reason)
	b.mu.Lock()
	b.ap = &golivev1.Approval{Active: true, FencingToken: 9, GrantedBy: c.Name, Reason: reason, Phrase: phrase,
		GrantedAt: timestamppb.Now(), ExpiresAt: timestamppb.New(time.Now().Add(ttl))}
	a := b.ap
	b.mu.Unlock()
	b.ch <- ChangeApproval
	return a, nil
}

func (b *fleetBackend) Pause(_ context.Context, c Caller, id, _ string) error {
	b.act("pause " + c.Name + " " + id)
	return nil
}

func (b *fleetBackend) Abort(_ context.Context, c Caller, id, _ string) error {
	b.act("abort " + c.Name + " " + id)
	return nil
}

func (b *fleetBackend) Refused(_ context.Context, c Caller, action, _ string) {
	b.act("refused " + c.Name + " " + action)
}

func (b *fleetBackend) Watch(ctx context.Context, changed func(Change)) error {
	changed(ChangeAll)
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-b.ch:
			changed(c)
		}
	}
}

func (b *fleetBackend) actions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.acts...)
}

// serve runs a dashboard on a loopback port until the test ends.
func serve(t testing.TB, b Backend, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Backend = b
	if cfg.Key == nil {
		cfg.Key = bytes.Repeat([]byte{7}, 32)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, "http://" + lis.Addr().String()
}

// waitSnapshot waits until the refresh loop published a snapshot for which
// ok holds.
func waitSnapshot(t testing.TB, s *Server, ok func(*snapshot) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		snap, upd := s.current()
		if snap.status != nil && snap.agents != nil && snap.audit != nil && ok(snap) {
			return
		}
		select {
		case <-upd:
		case <-deadline:
			t.Fatal("no snapshot within 10s")
		}
	}
}

func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestDevModePageAndActions(t *testing.T) {
	b := newFleet(30)
	s, base := serve(t, b, Config{DevIdentity: "dev@host"})
	waitSnapshot(t, s, func(*snapshot) bool { return true })
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, body := get(t, c, base+"/")
	// Without JavaScript it is the whole page, and it refreshes itself.
	if code != 200 || !strings.Contains(body, "DEV MODE") || !strings.Contains(body, "web-00001.dc1.example.net") ||
		!strings.Contains(body, `<noscript><meta http-equiv="refresh" content="5"></noscript>`) {
		t.Fatalf("page: %d\n%s", code, body)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	post := func(path, origin string, form url.Values) int {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name   string
		origin string
		form   url.Values
		want   int
	}{
		{"no origin", "", url.Values{"csrf": {m[1]}}, 403},
		{"cross origin", "http://evil.example", url.Values{"csrf": {m[1]}}, 403},
		{"no token", base, url.Values{}, 403},
		{"wrong token", base, url.Values{"csrf": {"x" + m[1]}}, 403},
		{"ok", base, url.Values{"csrf": {m[1]}}, 303},
	}
	for _, tt := range tests {
		if got := post("/actions/stop", tt.origin, tt.form); got != tt.want {
			t.Errorf("%s: POST /actions/stop = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := b.actions(); len(got) != 1 || got[0] != "revoke dev@host" {
		t.Fatalf("actions %q, want one revoke by dev@host", got)
	}
	// Authorizing takes one of the accepted phrases.
	if got := post("/actions/authorize", base, url.Values{"csrf": {m[1]}, "phrase": {"please go"}, "ttl": {"1h"}, "reason": {"r"}}); got != 303 {
		t.Fatalf("authorize with a wrong phrase: %d", got)
	}
	if got := post("/actions/authorize", base, url.Values{"csrf": {m[1]}, "phrase": {"  Start   Automation now "}, "ttl": {"1h"}, "reason": {"ship v42"}}); got != 303 {
		t.Fatalf("authorize: %d", got)
	}
	if got := b.actions(); len(got) != 2 || got[1] != "authorize dev@host ship v42" {
		t.Fatalf("actions %q, want the second to authorize (the wrong phrase never reaches the controller)", got)
	}
	for _, act := range []string{"pause", "abort"} {
		if got := post("/actions/"+act, base, url.Values{"csrf": {m[1]}, "id": {"r-1"}}); got != 303 {
			t.Fatalf("%s: %d", act, got)
		}
	}
	if got := b.actions(); len(got) != 4 || got[2] != "pause dev@host r-1" || got[3] != "abort dev@host r-1" {
		t.Fatalf("actions %q, want a pause and an abort of r-1", got)
	}
	waitSnapshot(t, s, func(n *snapshot) bool { return n.approval().Active })
	_, body = get(t, c, base+"/")
	if !strings.Contains(body, `id="approval-state" data-token="9">ON`) {
		t.Fatalf("the page does not show the approval:\n%s", body)
	}
	// A rebound name is not loopback: refused even from 127.0.0.1.
	req, _ := http.NewRequest("GET", base+"/", nil)
	req.Host = "attacker.example:80"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || strings.Contains(string(rb), "web-0000") {
		t.Fatalf("foreign Host: %d\n%s", resp.StatusCode, rb)
	}
}

func TestLinkSessions(t *testing.T) {
	b := newFleet(3)
	// TLS set but no certificate presented: only a link lets one in. The
	// handler is exercised directly (TLS termination is the controller's
	// test), with a non-nil TLS config.
	s, err := New(Config{Backend: b, Key: bytes.Repeat([]byte{9}, 32), TLS: nil})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Link("bob", []pki.Role{pki.RoleViewer}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.signer.verify(kindSession, tok); err == nil {
		t.Fatal("a link verified as a session")
	}
	c, err := s.signer.verify(kindLink, tok)
	if err != nil || c.Sub != "bob" {
		t.Fatalf("link: %v %+v", err, c)
	}
	if !s.signer.spend(c) || s.signer.spend(c) {
		t.Fatal("a link must be spent exactly once")
	}
	p, mac, _ := strings.Cut(tok, ".")
	other, _, _ := s.Link("mallory", []pki.Role{pki.RoleApprover}, time.Minute)
	op, _, _ := strings.Cut(other, ".")
	if _, err := s.signer.verify(kindLink, op+"."+mac); err == nil || p == op {
		t.Fatal("a link with another's claims verified")
	}
	expired, _ := s.signer.sign(kindLink, claims{Sub: "bob", Roles: []pki.Role{pki.RoleViewer}, Exp: time.Now().Add(-time.Second).Unix()})
	if _, err := s.signer.verify(kindLink, expired); err == nil {
		t.Fatal("an expired link verified")
	}
}

func TestLoginFlowViewerMayStopButNotAuthorize(t *testing.T) {
	b := newFleet(3)
	s, base := serve(t, b, Config{})
	waitSnapshot(t, s, func(*snapshot) bool { return true })
	tok, _, err := s.Link("carol", []pki.Role{pki.RoleViewer}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	code, body := get(t, c, base+"/login?t="+url.QueryEscape(tok))
	if code != 200 || !strings.Contains(body, "Sign in as carol") {
		t.Fatalf("login page: %d\n%s", code, body)
	}
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"t": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(rb), "carol") || strings.Contains(string(rb), `id="authorize"`) {
		t.Fatalf("after login: %d\n%s", resp.StatusCode, rb)
	}
	csrf := csrfRE.FindStringSubmatch(string(rb))[1]
	for _, path := range []string{"/actions/authorize", "/actions/stop"} {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(url.Values{"csrf": {csrf}, "phrase": {"start automation now"}, "ttl": {"1h"}, "reason": {"x"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", base)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := b.actions()
	if len(got) != 2 || got[0] != "refused carol authorize" || got[1] != "revoke carol" {
		t.Fatalf("actions %q: a viewer's authorize is refused (and audited), its STOP is not", got)
	}
}

// TestSizesAt5000Agents measures the page and its events with 5,000 agents
// and a 1,000-host rollout: the summary keeps them small.
func TestSizesAt5000Agents(t *testing.T) {
	b := newFleet(5000)
	s, base := serve(t, b, Config{})
	waitSnapshot(t, s, func(n *snapshot) bool { return len(n.agents) == 5000 })
	start := time.Now()
	code, body := get(t, http.DefaultClient, base+"/?page=3")
	took := time.Since(start)
	if code != 200 || !strings.Contains(body, "page 3 of 50") {
		t.Fatalf("page: %d", code)
	}
	snap, _ := s.current()
	pd := s.pageData(viewer{Caller: Caller{Name: "x", Roles: pki.Roles}, binding: "dev"}, snap, 1)
	secs, err := s.renderSections(pd, sections)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for _, n := range sections {
		writeEvent(&all, n, secs[n])
	}
	// One agent changes: only the agents section is sent again.
	b.mu.Lock()
	b.agents[1] = &golivev1.Agent{HostId: b.agents[1].HostId, State: "lost"}
	b.mu.Unlock()
	b.ch <- ChangeAgents
	waitSnapshot(t, s, func(n *snapshot) bool { return n.agents[1].State == "lost" })
	snap, _ = s.current()
	secs2, _ := s.renderSections(s.pageData(pd.V, snap, 1), sections)
	var one bytes.Buffer
	for _, n := range sections {
		if secs[n] != secs2[n] {
			writeEvent(&one, n, secs2[n])
		}
	}
	t.Logf("5,000 agents, 1,000-host rollout: page %d bytes (served in %s); first event burst %d bytes; one agent's change %d bytes",
		len(body), took, all.Len(), one.Len())
	if len(body) > 256<<10 || all.Len() > 256<<10 || one.Len() > 128<<10 {
		t.Errorf("too large: page %d, events %d, change %d", len(body), all.Len(), one.Len())
	}
}

// BenchmarkRefresh5000 is one refresh and one page's sections at 5,000 agents.
func BenchmarkRefresh5000(b *testing.B) {
	fb := newFleet(5000)
	s, err := New(Config{Backend: fb, Key: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		b.Fatal(err)
	}
	v := viewer{Caller: Caller{Name: "x", Roles: pki.Roles}, binding: "dev"}
	var n int
	for b.Loop() {
		snap := s.refresh(context.Background(), &snapshot{}, ChangeAll)
		secs, err := s.renderSections(s.pageData(v, snap, 1), sections)
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for _, h := range secs {
			n += len(h)
		}
	}
	b.ReportMetric(float64(n), "event-bytes")
}

func TestStaticServesOnlyTheScriptAndStyle(t *testing.T) {
	_, base := serve(t, newFleet(1), Config{})
	tests := []struct {
		give string
		want int
	}{
		{"/static/dashboard.js", 200},
		{"/static/dashboard.css", 200},
		{"/static/", 404},
		{"/static/page.html", 404},
	}
	for _, tt := range tests {
		if code, _ := get(t, http.DefaultClient, base+tt.give); code != tt.want {
			t.Errorf("GET %s = %d, want %d", tt.give, code, tt.want)
		}
	}
}
