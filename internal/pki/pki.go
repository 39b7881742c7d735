// Package pki makes and reads the certificates golive's mutual TLS runs on:
// a CA for small installs, controller (server) certificates, agent
// certificates whose common name is the host id, and operator certificates
// whose organizational units carry their roles. A bring-your-own CA works
// the same way: only the names and units below matter.
//
// Identity conventions:
//
//	agent:    CN=<host id>, OU=agent
//	operator: CN=<name>,    OU=<role> for each role (viewer, deployer, approver)
//	controller: CN=<name>, DNS/IP SANs for the addresses agents dial
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/atomicfile"
)

// Role is what an operator may do.
type Role string

// Roles. Anyone with deployer or approver may revoke: anyone may pull the
// brake.
const (
	RoleViewer   Role = "viewer"
	RoleDeployer Role = "deployer"
	RoleApprover Role = "approver"
)

// AgentUnit is the organizational unit of agent certificates.
const AgentUnit = "agent"

// Roles lists the valid operator roles.
var Roles = []Role{RoleViewer, RoleDeployer, RoleApprover}

// ParseRoles reads "deployer,approver".
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for _, f := range strings.Split(s, ",") {
		r := Role(strings.TrimSpace(f))
		if r == "" {
			continue
		}
		if !slices.Contains(Roles, r) {
			return nil, fmt.Errorf("unknown role %q: want viewer, deployer or approver", r)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no role given: want viewer, deployer or approver")
	}
	return out, nil
}

// Identity is who a verified peer certificate names.
type Identity struct {
	Name  string
	Agent bool
	Roles []Role
}

// Has reports whether the identity holds role.
func (id Identity) Has(r Role) bool { return slices.Contains(id.Roles, r) }

func (id Identity) String() string {
	if id.Agent {
		return "agent:" + id.Name
	}
	return id.Name
}

// IdentityOf reads the identity of a verified certificate.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	name := c.Subject.CommonName
	if err := validName(name); err != nil {
		return Identity{}, fmt.Errorf("certificate common name: %w", err)
	}
	id := Identity{Name: name}
	for _, ou := range c.Subject.OrganizationalUnit {
		switch {
		case ou == AgentUnit:
			id.Agent = true
		case slices.Contains(Roles, Role(ou)):
			id.Roles = append(id.Roles, Role(ou))
		}
	}
	if id.Agent && len(id.Roles) > 0 {
		return Identity{}, fmt.Errorf("certificate %q is both an agent's and an operator's", name)
	}
	return id, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,252}$`)

func validName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q: want letters, digits, '.', '_', '@', '-' (at most 253)", s)
	}
	return nil
}

// File names in a PKI directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// Init makes a new CA in dir (ca.pem, ca-key.pem mode 0600). It refuses to
// overwrite an existing CA.
func Init(dir, name string, validity time.Duration) (*CA, error) {
	if name == "" {
		name = "golive CA"
	}
	if validity <= 0 {
		validity = 10 * 365 * 24 * time.Hour
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a CA (%s); refusing to overwrite it", dir, CAKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"golive"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CAFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Load reads the CA in dir.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w (run `golive-controller pki init --dir %s`)", err, dir)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAFile, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM block", CAKeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", CAKeyFile)
	}
	return &CA{Cert: cert, Key: signer, PEM: certPEM}, nil
}

// Request describes a certificate to issue.
type Request struct {
	Name     string
	Agent    bool
	Roles    []Role
	Server   bool     // a controller: server and client auth, with SANs
	DNSNames []string // server SANs
	IPs      []net.IP // server SANs
	Validity time.Duration
}

// Issue makes a key and a certificate for req, signed by the CA, and writes
// <out>/<base>.pem and <out>/<base>-key.pem (0600). It returns the paths.
func (ca *CA) Issue(req Request, out, base string) (certPath, keyPath string, err error) {
	der, key, err := ca.sign(req)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(out, base+".pem"), filepath.Join(out, base+"-key.pem")
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// IssueKeyPair is Issue without files: the key and certificate for req, as
// a tls.Certificate ready for a tls.Config (benchmarks and tests that need
// thousands of identities use it).
func (ca *CA) IssueKeyPair(req Request) (tls.Certificate, error) {
	der, key, err := ca.sign(req)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// sign makes a key and a DER certificate for req, signed by the CA.
func (ca *CA) sign(req Request) ([]byte, *ecdsa.PrivateKey, error) {
	if err := validName(req.Name); err != nil {
		return nil, nil, err
	}
	if req.Validity <= 0 {
		req.Validity = 365 * 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.Name, Organization: []string{"golive"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(req.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	switch {
	case req.Server:
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames, tmpl.IPAddresses = req.DNSNames, req.IPs
		if len(tmpl.DNSNames) == 0 && len(tmpl.IPAddresses) == 0 {
			tmpl.DNSNames = []string{req.Name}
		}
	case req.Agent:
		if !agentconfig.ValidName(req.Name) {
			return nil, nil, fmt.Errorf("agent name %q must be a valid host id (letters, digits, '.', '_', '-'; at most 64), the one its Hello claims", req.Name)
		}
		if len(req.Roles) > 0 {
			return nil, nil, errors.New("an agent certificate carries no operator role")
		}
		tmpl.Subject.OrganizationalUnit = []string{AgentUnit}
	default:
		if len(req.Roles) == 0 {
			return nil, nil, errors.New("an operator certificate needs a role (viewer, deployer, approver)")
		}
		for _, r := range req.Roles {
			if !slices.Contains(Roles, r) {
				return nil, nil, fmt.Errorf("unknown role %q", r)
			}
			tmpl.Subject.OrganizationalUnit = append(tmpl.Subject.OrganizationalUnit, string(r))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return der, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// Files are the three files of one side of mutual TLS.
type Files struct {
	CA   string
	Cert string
	Key  string
}

// Set reports whether any file is set; Validate that all or none are.
func (f Files) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate says which file is missing when some but not all are set.
func (f Files) Validate() error {
	if !f.Set() {
		return nil
	}
	var missing []string
	for name, v := range map[string]string{"CA": f.CA, "certificate": f.Cert, "key": f.Key} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		return fmt.Errorf("TLS needs a CA, a certificate and a key: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

func (f Files) load() (*x509.CertPool, tls.Certificate, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("%s: no certificate", f.CA)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("load certificate: %w", err)
	}
	return pool, pair, nil
}

// ServerConfig is the controller's TLS 1.3 configuration: a client
// certificate signed by the CA is required.
func (f Files) ServerConfig() (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientConfig is an agent's or an operator's TLS 1.3 configuration.
// serverName, when set, overrides the name checked in the controller's
// certificate (default: the host dialled).
func (f Files) ClientConfig(serverName string) (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}
