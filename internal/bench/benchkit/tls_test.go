package benchkit

import (
	"crypto/tls"
	"net"
	"os"
	"testing"

	"github.com/golive/golive/internal/pki"
)

// The bench PKI's agent certificates pass the controller's own server
// configuration (pki.Files.ServerConfig) in a real TLS 1.3 handshake, and
// the server sees the agent's host id.
func TestPKIHandshake(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := p.IssueAgents([]string{"bench-00000", "bench-00001", "bench-00002"})
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := p.Server.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	names := make(chan string, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			names <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			names <- err.Error()
			return
		}
		id, err := pki.IdentityOf(tc.ConnectionState().VerifiedChains[0][0])
		if err != nil || !id.Agent {
			names <- "not an agent"
			return
		}
		names <- id.Name
	}()
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	c, err := tls.Dial("tcp", "127.0.0.1:"+port, p.Config(certs[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-names; got != "bench-00002" {
		t.Fatalf("server saw %q, want bench-00002", got)
	}
}

func TestPeakRSS(t *testing.T) {
	rss, err1 := RSS(os.Getpid())
	peak, err2 := PeakRSS(os.Getpid())
	if err1 != nil || err2 != nil || peak < rss || peak <= 0 {
		t.Fatalf("RSS %d (%v), peak %d (%v)", rss, err1, peak, err2)
	}
}
