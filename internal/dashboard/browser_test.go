package dashboard_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// chromium returns the browser, or skips (fails under CI=true) without one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium: the dashboard's browser tests need it (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); the dashboard's browser tests need a real browser")
	return ""
}

// browser starts a headless Chromium with a fresh profile; its tabs end with the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions with a deadline.
func run(t *testing.T, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// eval is a script step.
func eval(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[any](expr)(ctx, tg)
		return chromedp.Void{}, err
	}
}

// TestBrowserLiveDashboardAndStop drives the dashboard of a real controller
// with three real agents in Chromium: the agents and a deploy's rollout
// appear live (no reload), the page authorizes with a phrase, and STOP
// revokes and shows every agent at token 0.
func TestBrowserLiveDashboardAndStop(t *testing.T) {
	bctx := browser(t)
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	c := testenv.StartController(t, cfg)
	base := c.DashboardURL()
	if base == "" {
		t.Fatal("the controller serves no dashboard")
	}
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")

	// `dashboard login`'s link signs the browser in as the caller (in dev
	// mode: its declared name, every role), once.
	link, err := ctl.DashboardLink(ctx, &golivev1.DashboardLinkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if link.Identity != "alice" || !strings.HasPrefix(link.Url, base+"/login?t=") {
		t.Fatalf("link %+v (dashboard at %s)", link, base)
	}
	run(t, bctx, 30*time.Second, "sign in with the link",
		chromedp.Navigate(link.Url),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("stop")))
	if who := value(t, bctx, "who is signed in", chromedp.Text(chromedp.ID("who"))); who != "alice" {
		t.Fatalf("signed in as %q, want alice", who)
	}
	run(t, bctx, 30*time.Second, "open the dashboard",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("#stop")),
		chromedp.WaitVisible(chromedp.ID("#devbanner")),
		chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
		eval(`window.notReloaded = true`))

	// Agents connect while the page is open: it shows them without a reload.
	for i := 1; i <= 3; i++ {
		testenv.StartAgent(t, fmt.Sprintf("web-%d", i), "", []agent.Service{{Name: "app", SwapMode: "restart"}}, c.GRPCAddr())
	}
	run(t, bctx, 15*time.Second, "the agents appear live",
		chromedp.WaitVisible(chromedp.CSS(`#agent-counts[data-connected="3"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-host="web-3"][data-state="connected"]`)))
	assertNotReloaded(t, bctx)

	// Authorizing from the page takes an accepted phrase, like the CLI.
	run(t, bctx, 15*time.Second, "authorize with a wrong phrase",
		chromedp.SendKeys(chromedp.ID("#phrase"), "please deploy"),
		chromedp.SendKeys(chromedp.ID("#reason"), "dashboard test"),
		chromedp.Click(chromedp.ID("#authorize-btn")),
		chromedp.WaitVisible(chromedp.ID("#flash")))
	flash := value(t, bctx, "read the refusal", chromedp.Text(chromedp.ID("flash")))
	if !strings.Contains(flash, "start automation now") {
		t.Fatalf("a wrong phrase's refusal %q does not list the accepted phrases", flash)
	}
	run(t, bctx, 15*time.Second, "authorize",
		chromedp.SendKeys(chromedp.ID("#phrase"), "Start  Automation NOW"),
		chromedp.SendKeys(chromedp.ID("#reason"), "dashboard test"),
		chromedp.Click(chromedp.ID("#authorize-btn")),
		chromedp.WaitVisible(chromedp.CSS(`#approval-state.on`)),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-token[data-holding="true"]`)),
		eval(`window.notReloaded = true`))
	ap, err := ctl.GetApproval(ctx, &golivev1.GetApprovalRequest{})
	if err != nil || !ap.Approval.Active {
		t.Fatalf("approval after the page's authorize: %v %v", ap, err)
	}

	// A deploy started elsewhere shows up live and ends in the history.
	// These in-process agents have no release engine: they refuse the
	// command, which ends the rollout (failed) without touching anything.
	dep, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: "v2", ArtifactUrl: "file:///nonexistent.tar.gz",
		Sha256: strings.Repeat("a", 64), Batch: "1"})
	if err != nil {
		t.Fatal(err)
	}
	id := dep.Rollout.Id
	run(t, bctx, 30*time.Second, "the rollout appears and ends, live",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#history tr[data-rollout=%q]`, id))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#history tr[data-rollout=%q][data-state="failed"], #history tr[data-rollout=%q][data-state="rolled_back"]`, id, id))),
		chromedp.WaitVisible(chromedp.CSS(`#audit-verify[data-intact="true"]`)))
	assertNotReloaded(t, bctx)

	if p := os.Getenv("GOLIVE_DASHBOARD_SCREENSHOT"); p != "" {
		png := value(t, bctx, "screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", p)
	}

	// STOP: revoked, and within moments every agent shows token 0.
	start := time.Now()
	run(t, bctx, 15*time.Second, "STOP",
		chromedp.Click(chromedp.ID("#stop")),
		chromedp.WaitVisible(chromedp.CSS(`#approval-state.off`)))
	off := time.Since(start)
	run(t, bctx, 10*time.Second, "every agent drops the token",
		chromedp.WaitVisible(chromedp.CSS(`#fleet-token[data-dropped="true"]`)))
	dropped := time.Since(start)
	t.Logf("STOP: page showed automation off after %s, every agent at token 0 after %s", off.Round(time.Millisecond), dropped.Round(time.Millisecond))
	tokens := value(t, bctx, "read the agents' tokens", chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('tr[data-host]')).map(r => r.dataset.token)`))
	if len(tokens) != 3 || strings.Join(tokens, ",") != "0,0,0" {
		t.Fatalf("agents' tokens on the page after STOP: %v", tokens)
	}
	ags, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ags.Agents {
		if a.FencingToken != 0 {
			t.Errorf("agent %s still holds token %d", a.HostId, a.FencingToken)
		}
	}
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "revoke"})
	if err != nil || len(au.Entries) == 0 {
		t.Fatalf("no revoke in the audit log: %v", err)
	}
	if e := au.Entries[len(au.Entries)-1]; !strings.HasPrefix(e.Source, "dashboard ") || e.Actor != "alice" {
		t.Fatalf("STOP's audit entry %+v: want the dashboard's caller and source", e)
	}
}

func assertNotReloaded(t *testing.T, ctx context.Context) {
	t.Helper()
	if !value(t, ctx, "check the page was not reloaded", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the page reloaded: the change did not arrive live")
	}
}

// TestDashboardRefusesUnauthenticatedAndCrossOrigin: with mutual TLS,
// nothing is shown without a certificate or a session; a link from the
// DashboardLink RPC opens one session once; POSTs need the caller's CSRF
// token and the dashboard's own Origin.
func TestDashboardRefusesUnauthenticatedAndCrossOrigin(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(pki.Request{Name: "controller", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, dir, "controller")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.ControllerConfig(t)
	cfg.TLS = pki.Files{CA: filepath.Join(dir, pki.CAFile), Cert: cert, Key: key}
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	c := testenv.StartController(t, cfg)
	base := c.DashboardURL()
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("dashboard at %q: want https with TLS", base)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := func(req *pki.Request) *http.Client {
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
		if req != nil {
			pair, err := ca.IssueKeyPair(*req)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: tc},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(hc *http.Client, path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	post := func(hc *http.Client, path, origin string, form url.Values) int {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	csrfOf := func(body string) string {
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no CSRF token on the page:\n%s", body)
		}
		return m[1]
	}

	// Approve over the API, so that a STOP has something to revoke.
	conn := dialTLS(t, c.GRPCAddr(), ca, dir, pki.Request{Name: "ann", Roles: []pki.Role{pki.RoleApprover}})
	ann := golivev1.NewControlServiceClient(conn)
	ctx := t.Context()
	if _, err := ann.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "t"}); err != nil {
		t.Fatal(err)
	}
	active := func() bool {
		a, err := ann.GetApproval(ctx, &golivev1.GetApprovalRequest{})
		return err == nil && a.Approval.Active
	}

	anon := client(nil)
	for _, path := range []string{"/", "/events", "/rollout?id=x"} {
		if code, body := get(anon, path); code != http.StatusUnauthorized || strings.Contains(body, "ann") || !strings.Contains(body, "dashboard login") {
			t.Fatalf("GET %s without a certificate or session: %d\n%s", path, code, body)
		}
	}
	if code := post(anon, "/actions/stop", base, url.Values{}); code != http.StatusUnauthorized || !active() {
		t.Fatalf("unauthenticated STOP: %d (approval active: %v)", code, active())
	}
	agentCl := client(&pki.Request{Name: "web-1", Agent: true})
	if code, _ := get(agentCl, "/"); code != http.StatusForbidden {
		t.Fatalf("an agent certificate: %d, want 403", code)
	}

	// A viewer's certificate shows the page; its STOP needs the token and Origin.
	vic := client(&pki.Request{Name: "vic", Roles: []pki.Role{pki.RoleViewer}})
	code, body := get(vic, "/")
	if code != 200 || !strings.Contains(body, `id="who">vic<`) || strings.Contains(body, `id="authorize"`) {
		t.Fatalf("viewer's page: %d\n%s", code, body)
	}
	csrf := csrfOf(body)
	tests := []struct {
		name, origin string
		form         url.Values
	}{
		{"no Origin", "", url.Values{"csrf": {csrf}}},
		{"another Origin", "https://evil.example", url.Values{"csrf": {csrf}}},
		{"http Origin", strings.Replace(base, "https", "http", 1), url.Values{"csrf": {csrf}}},
		{"no token", base, url.Values{}},
		{"another's token", base, url.Values{"csrf": {"AAAA"}}},
	}
	for _, tt := range tests {
		if got := post(vic, "/actions/stop", tt.origin, tt.form); got != http.StatusForbidden || !active() {
			t.Fatalf("%s: STOP = %d, want 403 and the approval kept", tt.name, got)
		}
	}
	if got := post(vic, "/actions/authorize", base, url.Values{"csrf": {csrf}, "phrase": {"start automation now"}, "ttl": {"1h"}, "reason": {"x"}}); got != http.StatusForbidden {
		t.Fatalf("a viewer's authorize: %d, want 403", got)
	}

	// A link from the RPC: a session for its identity, once.
	dan := golivev1.NewControlServiceClient(dialTLS(t, c.GRPCAddr(), ca, dir, pki.Request{Name: "dan", Roles: []pki.Role{pki.RoleDeployer}}))
	link, err := dan.DashboardLink(ctx, &golivev1.DashboardLinkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if link.Identity != "dan" || !strings.HasPrefix(link.Url, base+"/login?t=") || time.Until(link.ExpiresAt.AsTime()) > 15*time.Minute {
		t.Fatalf("link %+v", link)
	}
	browserless := client(nil)
	u, _ := url.Parse(link.Url)
	if code, body := get(browserless, u.RequestURI()); code != 200 || !strings.Contains(body, "Sign in as dan") {
		t.Fatalf("login page: %d\n%s", code, body)
	}
	if code := post(browserless, "/login", "https://evil.example", url.Values{"t": {link.Token}}); code != http.StatusForbidden {
		t.Fatalf("cross-origin login: %d", code)
	}
	if code := post(browserless, "/login", base, url.Values{"t": {link.Token}}); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}
	if code := post(client(nil), "/login", base, url.Values{"t": {link.Token}}); code != http.StatusUnauthorized {
		t.Fatalf("a spent link: %d, want 401", code)
	}
	code, body = get(browserless, "/")
	if code != 200 || !strings.Contains(body, `id="who">dan<`) {
		t.Fatalf("dan's session: %d\n%s", code, body)
	}
	if got := post(browserless, "/actions/stop", base, url.Values{"csrf": {csrf}}); got != http.StatusForbidden || !active() {
		t.Fatalf("dan's STOP with vic's token: %d", got)
	}
	if got := post(browserless, "/actions/stop", base, url.Values{"csrf": {csrfOf(body)}}); got != http.StatusSeeOther {
		t.Fatalf("dan's STOP: %d", got)
	}
	if active() {
		t.Fatal("STOP did not revoke")
	}
	au, err := ann.ListAudit(ctx, &golivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range au.Entries {
		seen = append(seen, e.Actor+":"+e.Action+":"+e.Outcome)
	}
	got := strings.Join(seen, " ")
	for _, want := range []string{"vic:authorize:refused", "dan:dashboard_link:issued", "dan:revoke:"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit log lacks %q: %s", want, got)
		}
	}
}

func dialTLS(t *testing.T, addr string, ca *pki.CA, dir string, req pki.Request) *grpc.ClientConn {
	t.Helper()
	cert, key, err := ca.Issue(req, dir, req.Name)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.Files{CA: filepath.Join(dir, pki.CAFile), Cert: cert, Key: key}.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
