package controllercli_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/testenv"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := controllercli.Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// TestCLIOverMutualTLS: pki makes the certificates, the controller serves
// mutual TLS, operators act with their certificate's roles and identity.
func TestCLIOverMutualTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	mustRun(t, "pki", "init", "--dir", dir)
	if code, _, errs := run(t, "pki", "init", "--dir", dir); code == 0 || !strings.Contains(errs, "refusing to overwrite") {
		t.Fatalf("second init: %d %s", code, errs)
	}
	mustRun(t, "pki", "issue-controller", "ctl", "--ip", "127.0.0.1", "--dir", dir)
	mustRun(t, "pki", "issue-operator", "vera", "--role", "viewer", "--dir", dir)
	mustRun(t, "pki", "issue-operator", "anna", "--role", "approver,deployer", "--dir", dir)
	out := mustRun(t, "pki", "issue-agent", "web-1", "--dir", dir)
	if !strings.Contains(out, "agent-web-1.pem") {
		t.Fatalf("issue-agent output: %s", out)
	}
	if code, _, errs := run(t, "pki", "issue-operator", "bob", "--role", "root", "--dir", dir); code != 2 || !strings.Contains(errs, "unknown role") {
		t.Fatalf("bad role: %d %s", code, errs)
	}

	cfg := testenv.ControllerConfig(t)
	cfg.TLS = pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "controller-ctl.pem"), Key: filepath.Join(dir, "controller-ctl-key.pem")}
	c := testenv.StartController(t, cfg)
	as := func(name string, args ...string) []string {
		return append([]string{"--addr", c.GRPCAddr(), "--tls-ca", filepath.Join(dir, "ca.pem"),
			"--tls-cert", filepath.Join(dir, "operator-"+name+".pem"), "--tls-key", filepath.Join(dir, "operator-"+name+"-key.pem"),
			"--as", "mallory"}, args...)
	}
	mustRun(t, as("vera", "status")...)
	code, _, errs := run(t, as("vera", "authorize", "Start automation now", "--ttl", "10m")...)
	if code == 0 || !strings.Contains(errs, "needs role approver") {
		t.Fatalf("viewer authorize: %d %s", code, errs)
	}
	mustRun(t, as("anna", "authorize", "Start automation now", "--ttl", "10m", "--reason", "tls test")...)
	out = mustRun(t, as("vera", "approval", "-o", "json")...)
	if !strings.Contains(out, `"granted_by": "anna"`) {
		t.Fatalf("approval not attributed to the certificate identity: %s", out)
	}
	// Plaintext against the TLS port fails with a clear error.
	if code, _, errs := run(t, "--addr", c.GRPCAddr(), "--timeout", "2s", "status"); code != 1 || strings.Contains(errs, "rpc error") || strings.Contains(errs, "desc =") ||
		!strings.Contains(errs, "controller at "+c.GRPCAddr()) || !strings.Contains(errs, "--tls-cert") {
		t.Fatalf("plaintext client against a mutual-TLS controller: exit %d, %s", code, errs)
	}
	// A certificate of another CA: the handshake fails, and says what to check.
	other := filepath.Join(t.TempDir(), "other")
	mustRun(t, "pki", "init", "--dir", other)
	mustRun(t, "pki", "issue-operator", "eve", "--role", "viewer", "--dir", other)
	code, _, errs = run(t, "--addr", c.GRPCAddr(), "--timeout", "2s", "--tls-ca", filepath.Join(dir, "ca.pem"),
		"--tls-cert", filepath.Join(other, "operator-eve.pem"), "--tls-key", filepath.Join(other, "operator-eve-key.pem"), "status")
	if code != 1 || strings.Contains(errs, "rpc error") || strings.Contains(errs, "desc =") || !strings.Contains(errs, "refused the TLS connection") {
		t.Fatalf("certificate of another CA: exit %d, %s", code, errs)
	}
	// Half a TLS configuration is a usage error.
	if code, _, errs := run(t, "--addr", c.GRPCAddr(), "--tls-ca", filepath.Join(dir, "ca.pem"), "status"); code != 2 || !strings.Contains(errs, "missing") {
		t.Fatalf("half TLS flags: %d %s", code, errs)
	}
}

func TestServeRefusesPlaintextBeyondLoopback(t *testing.T) {
	code, _, errs := run(t, "serve", "--listen", "0.0.0.0:0", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errs, "refusing to serve without mutual TLS") {
		t.Fatalf("serve on 0.0.0.0 without TLS: %d %s", code, errs)
	}
}

func TestKeygenAndSign(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	mustRun(t, "keygen", "--out", prefix)
	file := filepath.Join(dir, "app.tar.gz")
	if err := os.WriteFile(file, []byte("release bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "sign", file, "--key", prefix+".key")
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file + ".sig"); strings.TrimSpace(string(b)) != strings.TrimSpace(out) {
		t.Fatalf(".sig file %q differs from the printed signature", b)
	}
	keys, err := artifact.LoadPublicKeys(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(keys[0], []byte("release bytes"), sig) {
		t.Fatal("signature does not verify with the public key")
	}
	if ed25519.Verify(keys[0], []byte("other bytes"), sig) {
		t.Fatal("signature verifies other bytes")
	}
	// keygen never overwrites a key.
	if code, _, _ := run(t, "keygen", "--out", prefix); code == 0 {
		t.Fatal("keygen overwrote an existing key")
	}
}

// TestIssueControllerKeepsEveryIP: --ip and --dns take both repeated flags
// and comma-separated lists, and the certificate holds every value.
func TestIssueControllerKeepsEveryIP(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "pki", "init", "--dir", dir)
	mustRun(t, "pki", "issue-controller", "ctl", "--ip", "127.0.0.1", "--ip", "127.0.0.2,::1", "--dns", "a.test", "--dns", "b.test", "--dir", dir)
	b, err := os.ReadFile(filepath.Join(dir, "controller-ctl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block in the certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got := strings.Join(ips, ","); got != "127.0.0.1,127.0.0.2,::1" {
		t.Fatalf("IPs = %s", got)
	}
	if got := strings.Join(cert.DNSNames, ","); got != "a.test,b.test" {
		t.Fatalf("DNS names = %s", got)
	}
}
