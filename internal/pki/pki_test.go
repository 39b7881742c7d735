package pki

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func issue(t *testing.T, ca *CA, dir string, req Request, base string) Files {
	t.Helper()
	c, k, err := ca.Issue(req, dir, base)
	if err != nil {
		t.Fatalf("issue %s: %v", base, err)
	}
	return Files{CA: filepath.Join(dir, CAFile), Cert: c, Key: k}
}

func TestInitIssueAndIdentities(t *testing.T) {
	dir := t.TempDir()
	ca, err := Init(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, "", 0); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second init: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", fi.Mode(), err)
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA differs")
	}
	agent := issue(t, loaded, dir, Request{Name: "web-1", Agent: true}, "web-1")
	op := issue(t, loaded, dir, Request{Name: "alice", Roles: []Role{RoleDeployer, RoleApprover}}, "alice")
	for _, tc := range []struct {
		f     Files
		want  Identity
		roles []Role
	}{
		{agent, Identity{Name: "web-1", Agent: true}, nil},
		{op, Identity{Name: "alice"}, []Role{RoleDeployer, RoleApprover}},
	} {
		pair, err := tls.LoadX509KeyPair(tc.f.Cert, tc.f.Key)
		if err != nil {
			t.Fatal(err)
		}
		leaf := pair.Leaf
		id, err := IdentityOf(leaf)
		if err != nil {
			t.Fatal(err)
		}
		if id.Name != tc.want.Name || id.Agent != tc.want.Agent || len(id.Roles) != len(tc.roles) {
			t.Fatalf("identity %+v, want %+v roles %v", id, tc.want, tc.roles)
		}
		for _, r := range tc.roles {
			if !id.Has(r) {
				t.Fatalf("%s lacks %s", id.Name, r)
			}
		}
	}
	if _, _, err := loaded.Issue(Request{Name: "bob"}, dir, "bob"); err == nil {
		t.Fatal("operator without role issued")
	}
	if _, _, err := loaded.Issue(Request{Name: "../x", Agent: true}, dir, "x"); err == nil {
		t.Fatal("bad name issued")
	}
	if _, _, err := loaded.Issue(Request{Name: "web-1@corp", Agent: true}, dir, "x"); err == nil {
		t.Fatal("an agent certificate whose name no Hello may claim was issued")
	}
	if _, err := ParseRoles("deployer,root"); err == nil {
		t.Fatal("unknown role accepted")
	}
}

// TestMutualTLS: a client with a certificate from the CA connects over TLS
// 1.3; one from another CA, or none, is refused.
func TestMutualTLS(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, err := Init(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := Init(other, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := issue(t, ca, dir, Request{Name: "controller", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, "controller")
	good := issue(t, ca, dir, Request{Name: "web-1", Agent: true}, "web-1")
	bad := issue(t, ca2, other, Request{Name: "web-1", Agent: true}, "web-1")
	bad.CA = good.CA // trusts the right server, presents a foreign cert

	scfg, err := srv.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					c.Write([]byte("ok"))
				}
			}()
		}
	}()
	dial := func(f Files) error {
		cfg, err := f.ClientConfig("")
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", lis.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		if c.ConnectionState().Version != tls.VersionTLS13 {
			t.Errorf("TLS version %x", c.ConnectionState().Version)
		}
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		return err
	}
	if err := dial(good); err != nil {
		t.Fatalf("good client: %v", err)
	}
	if err := dial(bad); err == nil {
		t.Fatal("client with a foreign CA's certificate was served")
	}
	c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: scfg.ClientCAs, MinVersion: tls.VersionTLS13})
	if err == nil {
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		c.Close()
	}
	if err == nil {
		t.Fatal("client without a certificate was served")
	}
}

func TestFilesValidate(t *testing.T) {
	if err := (Files{CA: "a"}).Validate(); err == nil || !strings.Contains(err.Error(), "certificate, key") {
		t.Fatalf("got %v", err)
	}
	if err := (Files{}).Validate(); err != nil {
		t.Fatal(err)
	}
}
