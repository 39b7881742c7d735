package benchkit

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/golive/golive/internal/pki"
)

// PKI is a throwaway certificate authority for a benchmark's mutual TLS:
// the controller's certificate as files (its --tls-* flags), an approver
// operator's and the agents' in memory.
type PKI struct {
	CA *pki.CA
	// Server is the controller's CA, certificate (CN golive-controller,
	// IP SAN 127.0.0.1) and key files.
	Server pki.Files
	pool   *x509.CertPool
	op     tls.Certificate
}

// NewPKI makes a CA and the controller's certificate in dir.
func NewPKI(dir string) (*PKI, error) {
	ca, err := pki.Init(dir, "golive bench CA", 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("bench CA: %w", err)
	}
	cert, key, err := ca.Issue(pki.Request{Name: "golive-controller", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, dir, "controller")
	if err != nil {
		return nil, fmt.Errorf("controller certificate: %w", err)
	}
	op, err := ca.IssueKeyPair(pki.Request{Name: "bench-operator", Roles: []pki.Role{pki.RoleApprover, pki.RoleDeployer}})
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &PKI{CA: ca, Server: pki.Files{CA: filepath.Join(dir, pki.CAFile), Cert: cert, Key: key}, pool: pool, op: op}, nil
}

// ServerArgs are the controller's --tls-ca/--tls-cert/--tls-key flags.
func (p *PKI) ServerArgs() []string {
	return []string{"--tls-ca", p.Server.CA, "--tls-cert", p.Server.Cert, "--tls-key", p.Server.Key}
}

// Config is a TLS 1.3 client configuration presenting cert and trusting
// the CA (the server name is the host dialled, 127.0.0.1).
func (p *PKI) Config(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: p.pool}
}

// Operator is the transport credentials of an operator holding the
// approver and deployer roles.
func (p *PKI) Operator() credentials.TransportCredentials { return credentials.NewTLS(p.Config(p.op)) }

// IssueAgents issues one agent certificate (CN = host id, OU=agent) per
// host, in memory, on all CPUs.
func (p *PKI) IssueAgents(hosts []string) ([]tls.Certificate, error) {
	out := make([]tls.Certificate, len(hosts))
	errs := make([]error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for i := w; i < len(hosts); i += len(errs) {
				c, err := p.CA.IssueKeyPair(pki.Request{Name: hosts[i], Agent: true})
				if err != nil {
					errs[w] = fmt.Errorf("agent certificate %s: %w", hosts[i], err)
					return
				}
				out[i] = c
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
