package pki

import (
	"crypto/x509"
	"testing"
)

// An in-memory agent key pair verifies against the CA as a client
// certificate and names the agent, like a file-issued one.
func TestIssueKeyPair(t *testing.T) {
	ca, err := Init(t.TempDir(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.IssueKeyPair(Request{Name: "host-7", Agent: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	id, err := IdentityOf(pair.Leaf)
	if err != nil || !id.Agent || id.Name != "host-7" {
		t.Fatalf("identity %+v, %v", id, err)
	}
	if _, err := ca.IssueKeyPair(Request{Name: "bad name"}); err == nil {
		t.Fatal("invalid name issued")
	}
	if _, err := ca.IssueKeyPair(Request{Name: "op"}); err == nil {
		t.Fatal("operator without role issued")
	}
}
