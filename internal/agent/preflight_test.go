package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/releasedir"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a server certificate for names, valid from notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, names []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// httpsServer serves cert on a loopback port and returns the port.
func httpsServer(t *testing.T, cert tls.Certificate) int {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// testService is a service named app with its release directory under a
// temp state dir and the config cfg changes.
func testService(t *testing.T, change func(c *agentconfig.Service)) Service {
	t.Helper()
	state := t.TempDir()
	d, err := releasedir.Open(state, "app")
	if err != nil {
		t.Fatal(err)
	}
	c := agentconfig.DefaultService("app")
	if change != nil {
		change(c)
	}
	return Service{Name: "app", Dir: d, Config: c, StateDir: state, BackupDir: filepath.Join(state, "app", "backups")}
}

func testAgent(services ...Service) *Agent {
	return &Agent{cfg: Config{HostID: "h1", Services: services}, log: hclog.NewNullLogger()}
}

func preflightCmd(service, release, artifact string, skip ...string) *golivev1.Command {
	return &golivev1.Command{Id: "pf-test-h1", Action: &golivev1.Command_Preflight{Preflight: &golivev1.PreflightAction{
		Service: service, Release: release, ArtifactUrl: artifact, SkipChecks: skip}}}
}

// checksOf indexes a result's checks by name.
func checksOf(t *testing.T, res *golivev1.CommandResult) map[string]*golivev1.CheckResult {
	t.Helper()
	if res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome = %s (%s), want SUCCEEDED", res.Outcome, res.Error)
	}
	out := map[string]*golivev1.CheckResult{}
	for _, c := range res.Checks {
		out[c.Name] = c
	}
	return out
}

func wantCheck(t *testing.T, checks map[string]*golivev1.CheckResult, name, status, detailIn string) {
	t.Helper()
	c := checks[name]
	if c == nil {
		t.Fatalf("no %s check in %v", name, checks)
	}
	if c.Status != status || !strings.Contains(c.Detail, detailIn) {
		t.Errorf("%s = %s %q, want %s containing %q", name, c.Status, c.Detail, status, detailIn)
	}
}

func TestPreflightTLS(t *testing.T) {
	trusted := newTestCA(t, "golive test CA")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, trusted.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(PreflightCAFileEnv, caFile)
	other := newTestCA(t, "someone else's CA")
	now := time.Now()
	tests := []struct {
		name     string
		cert     tls.Certificate
		status   string
		detailIn string
	}{
		{"valid", trusted.leaf(t, []string{"localhost"}, now.Add(-time.Hour), now.Add(90*24*time.Hour)), "pass", "is trusted and valid until"},
		{"expiring soon", trusted.leaf(t, []string{"localhost"}, now.Add(-time.Hour), now.Add(5*24*time.Hour)), "warn", "within 14 days"},
		{"expired", trusted.leaf(t, []string{"localhost"}, now.Add(-90*24*time.Hour), now.Add(-24*time.Hour)), "fail", "expired on"},
		{"wrong name", trusted.leaf(t, []string{"shop.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour)), "fail", "is for shop.example.com, not localhost"},
		{"untrusted", other.leaf(t, []string{"localhost"}, now.Add(-time.Hour), now.Add(90*24*time.Hour)), "fail", "does not chain to a trusted root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := httpsServer(t, tt.cert)
			svc := testService(t, func(c *agentconfig.Service) { c.Preflight.Domain, c.Preflight.TLSPort = "localhost", port })
			res := testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", ""))
			checks := checksOf(t, res)
			wantCheck(t, checks, preflight.NameDNS, "pass", "resolves to")
			wantCheck(t, checks, preflight.NameTLS, tt.status, tt.detailIn)
		})
	}
	t.Run("skipped", func(t *testing.T) {
		port := httpsServer(t, other.leaf(t, []string{"localhost"}, now.Add(-time.Hour), now.Add(90*24*time.Hour)))
		svc := testService(t, func(c *agentconfig.Service) { c.Preflight.Domain, c.Preflight.TLSPort = "localhost", port })
		checks := checksOf(t, testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", "", preflight.NameTLS)))
		wantCheck(t, checks, preflight.NameTLS, "skip", "skipped on request")
		wantCheck(t, checks, preflight.NameDNS, "pass", "")
	})
}

func TestPreflightDNSInvalid(t *testing.T) {
	svc := testService(t, func(c *agentconfig.Service) { c.Preflight.Domain = "golive-preflight.invalid" })
	checks := checksOf(t, testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", "")))
	wantCheck(t, checks, preflight.NameDNS, "fail", "Domain golive-preflight.invalid does not resolve")
	wantCheck(t, checks, preflight.NameTLS, "fail", "Cannot complete a TLS handshake")
}

func TestPreflightNoDomainNoDatabase(t *testing.T) {
	checks := checksOf(t, testAgent(testService(t, nil)).preflightResult(context.Background(), preflightCmd("app", "r1", "")))
	var names []string
	for n := range checks {
		names = append(names, n)
	}
	if len(checks) != 2 || checks[preflight.NameDisk] == nil || checks[preflight.NamePreviousRelease] == nil {
		t.Fatalf("checks = %v, want only disk and previous-release", names)
	}
	// Nothing is live and nothing sizes the release: both warn.
	wantCheck(t, checks, preflight.NameDisk, "warn", "release size is unknown")
	wantCheck(t, checks, preflight.NamePreviousRelease, "warn", "nothing to roll back to")
}

func TestPreflightSecretsNamedWithoutValues(t *testing.T) {
	const canary = "canary-s3cr3t-0d5f9e"
	env := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(env, []byte("API_KEY="+canary+"\nEMPTY_KEY=\nDATABASE_URL=postgres://app:"+canary+"@127.0.0.1:1/app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := testService(t, func(c *agentconfig.Service) {
		c.Exec = &agentconfig.Exec{EnvFile: env}
		c.Preflight.RequiredSecrets = []string{"API_KEY", "STRIPE_KEY", "EMPTY_KEY"}
		c.Database = &agentconfig.Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL"}
	})
	res := testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", ""))
	checks := checksOf(t, res)
	wantCheck(t, checks, preflight.NameSecrets, "fail", "missing STRIPE_KEY; empty EMPTY_KEY")
	wantCheck(t, checks, preflight.NameDatabase, "fail", "Database is not reachable")
	b, err := protojson.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), canary) {
		t.Fatalf("a secret value leaked into the result: %s", b)
	}
	t.Run("all present", func(t *testing.T) {
		svc.Config.Preflight.RequiredSecrets = []string{"API_KEY"}
		checks := checksOf(t, testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", "")))
		wantCheck(t, checks, preflight.NameSecrets, "pass", "sets all 1 required keys")
	})
}

func TestPreflightDisk(t *testing.T) {
	var size int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			t.Errorf("artifact fetched with %s, want HEAD", r.Method)
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}))
	defer srv.Close()
	svc := testService(t, nil)
	a := testAgent(svc)
	size = 1 << 20
	checks := checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", srv.URL+"/app.tar.gz?sig=SECRET")))
	wantCheck(t, checks, preflight.NameDisk, "pass", "(sized from the artifact)")
	size = 1 << 58 // 256 PiB x 3: no test machine has that free
	checks = checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", srv.URL+"/app.tar.gz?sig=SECRET")))
	wantCheck(t, checks, preflight.NameDisk, "fail", "free up space")
	if strings.Contains(checks[preflight.NameDisk].Detail, "SECRET") {
		t.Errorf("disk detail quotes the artifact URL: %s", checks[preflight.NameDisk].Detail)
	}

	// Without an artifact the live release sizes the new one.
	commitRelease(t, svc.Dir, "r1", 4096)
	if err := svc.Dir.Swap("r1"); err != nil {
		t.Fatal(err)
	}
	checks = checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", "")))
	wantCheck(t, checks, preflight.NameDisk, "pass", "(sized from the live release)")
	// An artifact URL the deploy could not fetch fails the check, even with
	// a live release to size from.
	checks = checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", srv.URL+"/missing\x7f")))
	wantCheck(t, checks, preflight.NameDisk, "fail", "cannot size the artifact: artifact URL does not parse")
}

// An artifact URL that answers 404 fails the disk check (the deploy would
// fail to fetch it); a store that refuses HEAD is sized by a ranged GET.
func TestPreflightDiskArtifactNotThere(t *testing.T) {
	const size = 12345
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/signed.tar.gz": // signed for GET only, like an S3 presigned URL
			if r.Method != http.MethodGet {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			if r.Header.Get("Range") != "bytes=0-0" {
				t.Errorf("GET without a range: %q", r.Header.Get("Range"))
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-0/%d", size))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write([]byte{0})
		case "/forbidden.tar.gz":
			w.WriteHeader(http.StatusForbidden)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	svc := testService(t, nil)
	commitRelease(t, svc.Dir, "r1", 4096)
	if err := svc.Dir.Swap("r1"); err != nil {
		t.Fatal(err)
	}
	a := testAgent(svc)
	tests := []struct {
		name, give, wantStatus, wantIn string
	}{
		{"404", "/nope.tar.gz?sig=SECRET", "fail", "cannot size the artifact: HEAD artifact: status 404"},
		{"403 to HEAD and GET", "/forbidden.tar.gz", "fail", "cannot size the artifact: GET artifact: status 403"},
		{"HEAD refused, ranged GET", "/signed.tar.gz", "pass", "(sized from the artifact)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checks := checksOf(t, a.preflightResult(t.Context(), preflightCmd("app", "r2", srv.URL+tt.give)))
			wantCheck(t, checks, preflight.NameDisk, tt.wantStatus, tt.wantIn)
			if strings.Contains(checks[preflight.NameDisk].Detail, "SECRET") {
				t.Errorf("disk detail quotes the artifact URL: %s", checks[preflight.NameDisk].Detail)
			}
		})
	}
	// No listener at all: the same.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	checks := checksOf(t, a.preflightResult(t.Context(), preflightCmd("app", "r2", "http://"+addr+"/app.tar.gz")))
	wantCheck(t, checks, preflight.NameDisk, "fail", "cannot size the artifact: HEAD artifact:")
}

func commitRelease(t *testing.T, d *releasedir.Dir, release string, size int) {
	t.Helper()
	p, err := d.StagingDir(release)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "app"), make([]byte, size), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(release); err != nil {
		t.Fatal(err)
	}
}

func TestPreflightPreviousRelease(t *testing.T) {
	svc := testService(t, nil)
	a := testAgent(svc)
	commitRelease(t, svc.Dir, "r1", 10)
	if err := svc.Dir.Swap("r1"); err != nil {
		t.Fatal(err)
	}
	checks := checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", "")))
	wantCheck(t, checks, preflight.NamePreviousRelease, "pass", "Live release r1 is present for rollback")
	p, _ := svc.Dir.ReleasePath("r1")
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	checks = checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", "")))
	wantCheck(t, checks, preflight.NamePreviousRelease, "fail", "Live release r1, the rollback target, is gone")
}

func TestPreflightWithoutReleaseDir(t *testing.T) {
	checks := checksOf(t, testAgent(Service{Name: "app"}).preflightResult(context.Background(), preflightCmd("app", "r2", "")))
	wantCheck(t, checks, preflight.NameDisk, "warn", "no release directory")
	wantCheck(t, checks, preflight.NamePreviousRelease, "warn", "no release directory")
}

func TestPreflightUnknownService(t *testing.T) {
	res := testAgent(testService(t, nil)).preflightResult(context.Background(), preflightCmd("billing", "r2", ""))
	if res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED || !strings.Contains(res.Error, `service "billing" is not configured on host h1`) || len(res.Checks) != 0 {
		t.Fatalf("result = %v, want FAILED naming the service", res)
	}
}

// runPreflight acks at once and answers from another goroutine.
func TestRunPreflightAcksThenAnswers(t *testing.T) {
	a := testAgent(testService(t, nil))
	out := make(chan *golivev1.ConnectRequest, 2)
	a.runPreflight(preflightCmd("app", "r2", ""), func(m *golivev1.ConnectRequest) { out <- m })
	ack := (<-out).GetCommandAck()
	if ack == nil || !ack.Accepted || ack.CommandId != "pf-test-h1" {
		t.Fatalf("first message = %v, want an accepting ack", ack)
	}
	select {
	case m := <-out:
		res := m.GetCommandResult()
		if res == nil || res.CommandId != "pf-test-h1" || len(res.Checks) != 2 {
			t.Fatalf("second message = %v, want the result with 2 checks", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no result within 30s")
	}
	a.ops.Wait()
}

func TestPreflightBackup(t *testing.T) {
	env := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(env, []byte("DATABASE_URL=postgres://app@127.0.0.1:1/app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := testService(t, func(c *agentconfig.Service) {
		c.Exec = &agentconfig.Exec{EnvFile: env}
		c.Database = &agentconfig.Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL"}
		c.Preflight.MaxBackupAge = 6 * time.Hour
	})
	a := testAgent(svc)
	run := func() map[string]*golivev1.CheckResult {
		return checksOf(t, a.preflightResult(context.Background(), preflightCmd("app", "r2", "", preflight.NameDatabase)))
	}
	wantCheck(t, run(), preflight.NameBackup, "fail", "There is no database backup")
	if err := os.MkdirAll(svc.BackupDir, 0o755); err != nil {
		t.Fatal(err)
	}
	save := func(id string, created time.Time, verified bool) {
		rec := &dbbackup.Record{ID: id, Service: "app", CreatedAt: created}
		if verified {
			rec.VerifiedAt = created.Add(time.Minute)
		}
		if err := dbbackup.SaveRecord(svc.BackupDir, rec); err != nil {
			t.Fatal(err)
		}
	}
	save("20260101T000000Z-r0", time.Now().Add(-48*time.Hour), true)
	wantCheck(t, run(), preflight.NameBackup, "fail", "older than 6h0m0s")
	save("20260102T000000Z-r1", time.Now().Add(-time.Hour), true)
	wantCheck(t, run(), preflight.NameBackup, "pass", "verified")
	// Without max_backup_age there is no backup check.
	svc.Config.Preflight.MaxBackupAge = 0
	if c := run()[preflight.NameBackup]; c != nil {
		t.Fatalf("backup check ran without max_backup_age: %v", c)
	}
}

func TestPreflightDatabase(t *testing.T) {
	pg := pgtest.Start(t)
	dir := t.TempDir()
	run := func(t *testing.T, dsn string) *golivev1.CheckResult {
		t.Helper()
		env := filepath.Join(dir, "app.env")
		if err := os.WriteFile(env, []byte("DATABASE_URL="+dsn+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		svc := testService(t, func(c *agentconfig.Service) {
			c.Database = &agentconfig.Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL", EnvFile: env}
		})
		res := testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", ""))
		b, _ := protojson.Marshal(res)
		for _, secret := range []string{pg.Password, "wr0ng-canary-pw", dsn} {
			if strings.Contains(string(b), secret) {
				t.Fatalf("the result holds a secret (%q): %s", secret, b)
			}
		}
		return checksOf(t, res)[preflight.NameDatabase]
	}
	t.Run("up, URL DSN", func(t *testing.T) {
		c := run(t, pg.DSN("postgres"))
		if c.Status != "pass" {
			t.Fatalf("database = %s %q, want pass", c.Status, c.Detail)
		}
	})
	t.Run("up, keyword DSN", func(t *testing.T) {
		c := run(t, fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres user=%s password='%s'", pg.Port, pg.User, pg.Password))
		if c.Status != "pass" {
			t.Fatalf("database = %s %q, want pass", c.Status, c.Detail)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		u, _ := url.Parse(pg.DSN("postgres"))
		u.User = url.UserPassword(pg.User, "wr0ng-canary-pw")
		c := run(t, u.String())
		if c.Status != "fail" || !strings.Contains(c.Detail, "password authentication failed") {
			t.Fatalf("database = %s %q, want a failed password authentication", c.Status, c.Detail)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		c := run(t, fmt.Sprintf("postgres://%s:wr0ng-canary-pw@127.0.0.1:%d/postgres", pg.User, port))
		if c.Status != "fail" || !strings.Contains(c.Detail, "Database is not reachable") {
			t.Fatalf("database = %s %q, want not reachable", c.Status, c.Detail)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		env := filepath.Join(dir, "other.env")
		if err := os.WriteFile(env, []byte("OTHER=1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		svc := testService(t, func(c *agentconfig.Service) {
			c.Database = &agentconfig.Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL", EnvFile: env}
		})
		checks := checksOf(t, testAgent(svc).preflightResult(context.Background(), preflightCmd("app", "r2", "")))
		wantCheck(t, checks, preflight.NameDatabase, "fail", "has no value for key DATABASE_URL")
	})
}
