// Package dnstest starts throwaway authoritative DNS servers for tests and
// benchmarks: BIND (named) or Knot (knotd), each in a fresh directory, on a
// free loopback port (UDP and TCP), serving one zone (example.test.) that
// takes RFC 2136 updates signed with the test's TSIG keys:
//
//	golive    may update the zone (what golive uses)
//	other     may update the zone too ("someone else": an operator, a script)
//	readonly  is known to the server but may not update (a policy refusal)
//
// Secrets are random per server. Start waits until the server answers the
// zone's SOA (a deadline, no sleeps) and stops it in t.Cleanup. A missing
// named or knotd skips the test, except under CI=true where it fails.
// Launch starts the same server outside a test (for benchmarks).
package dnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/golive/golive/internal/dnsconfig"
)

// Kind is which server to run.
type Kind string

// Servers.
const (
	BIND Kind = "bind"
	Knot Kind = "knot"
)

// Kinds lists every server kind, for tests that run against each.
var Kinds = []Kind{BIND, Knot}

// Zone is the zone every server serves.
const Zone = "example.test."

// Key names.
const (
	KeyGolive   = "golive"
	KeyOther    = "other"
	KeyReadonly = "readonly"
)

// InitialRecords is what the zone holds at start, besides SOA and NS:
// www.example.test. 30 IN A 192.0.2.10 and 192.0.2.11.
var InitialRecords = []string{"192.0.2.10", "192.0.2.11"}

// Server is a running DNS server.
type Server struct {
	Kind Kind
	// Addr is host:port, UDP and TCP.
	Addr string
	Dir  string
	// Secrets maps key names to base64 secrets (hmac-sha256).
	Secrets map[string]string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits
	log  *os.File
}

// binary returns the server's program, or an error saying it is missing.
func binary(kind Kind) (string, error) {
	name := map[Kind]string{BIND: "named", Knot: "knotd"}[kind]
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	pkg := map[Kind]string{BIND: "bind9", Knot: "knot"}[kind]
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin (apt-get install %s)", name, pkg)
}

// Start runs a server of kind for the test and stops it at cleanup.
func Start(t testing.TB, kind Kind) *Server {
	t.Helper()
	if _, err := binary(kind); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", kind, err)
		}
		t.Skipf("skipping: %v", err)
	}
	s, err := Launch(kind, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop %s: %v", kind, err)
		}
	})
	return s
}

// Launch writes the config, zone and keys under dir and starts the server.
// Stop it with Stop.
func Launch(kind Kind, dir string) (*Server, error) {
	bin, err := binary(kind)
	if err != nil {
		return nil, err
	}
	s := &Server{Kind: kind, Dir: dir, Secrets: map[string]string{}}
	for _, k := range []string{KeyGolive, KeyOther, KeyReadonly} {
		b := make([]byte, 32)
		rand.Read(b)
		s.Secrets[k] = base64.StdEncoding.EncodeToString(b)
	}
	var lastErr error
	for range 5 { // the free port may be taken between probe and bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := s.writeFiles(port); err != nil {
			return nil, err
		}
		if lastErr = s.start(bin); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *Server) writeFiles(port int) error {
	zone := fmt.Sprintf(`$ORIGIN %[1]s
$TTL 300
@	IN SOA ns1.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@	IN NS ns1.%[1]s
ns1	IN A 127.0.0.1
www	30 IN A %[2]s
www	30 IN A %[3]s
`, Zone, InitialRecords[0], InitialRecords[1])
	if err := os.WriteFile(filepath.Join(s.Dir, "example.test.zone"), []byte(zone), 0o644); err != nil {
		return err
	}
	var conf string
	switch s.Kind {
	case BIND:
		var keys strings.Builder
		for _, k := range []string{KeyGolive, KeyOther, KeyReadonly} {
			fmt.Fprintf(&keys, "key %q { algorithm hmac-sha256; secret %q; };\n", k, s.Secrets[k])
		}
		conf = fmt.Sprintf(`options {
	directory %[1]q;
	pid-file %[4]q;
	session-keyfile %[5]q;
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-transfer { none; };
};
controls { };
%[3]s
zone "example.test" {
	type primary;
	file "example.test.zone";
	update-policy { grant golive zonesub ANY; grant other zonesub ANY; };
};
`, s.Dir, port, keys.String(), filepath.Join(s.Dir, "named.pid"), filepath.Join(s.Dir, "session.key"))
	case Knot:
		var keys strings.Builder
		for _, k := range []string{KeyGolive, KeyOther, KeyReadonly} {
			fmt.Fprintf(&keys, "  - id: %s\n    algorithm: hmac-sha256\n    secret: %s\n", k, s.Secrets[k])
		}
		conf = fmt.Sprintf(`server:
    rundir: %[1]q
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: %[1]q
control:
    listen: %[4]q
key:
%[3]s
acl:
  - id: update
    key: [golive, other]
    action: update
zone:
  - domain: example.test
    storage: %[1]q
    file: example.test.zone
    zonefile-sync: -1
    acl: update
`, s.Dir, port, keys.String(), filepath.Join(s.Dir, "knot.sock"))
	}
	return os.WriteFile(filepath.Join(s.Dir, "server.conf"), []byte(conf), 0o644)
}

// start runs the server and waits until it answers the zone's SOA.
func (s *Server) start(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	conf := filepath.Join(s.Dir, "server.conf")
	var args []string
	switch s.Kind {
	case BIND:
		args = []string{"-g", "-n", "1", "-4", "-c", conf}
	case Knot:
		args = []string{"-c", conf}
	}
	log, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done, s.log = cmd, done, log
	if err := s.waitReady(15 * time.Second); err != nil {
		s.stopLocked()
		return fmt.Errorf("%s on %s: %w\n%s", s.Kind, s.Addr, err, s.logTail())
	}
	return nil
}

// waitReady polls the zone's SOA until the server answers it, the server
// exits, or the deadline passes.
func (s *Server) waitReady(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(Zone, dns.TypeSOA)
	m.RecursionDesired = false
	var last error
	for {
		r, _, err := c.ExchangeContext(ctx, m, s.Addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && r.Authoritative && len(r.Answer) > 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("answered %s for the SOA", dns.RcodeToString[r.Rcode])
		}
		last = err
		select {
		case <-s.done:
			return fmt.Errorf("exited before answering: %v", last)
		case <-ctx.Done():
			return fmt.Errorf("did not answer the SOA of %s within %s: %v", Zone, d, last)
		case <-tick.C:
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	for _, sec := range s.Secrets {
		b = bytes.ReplaceAll(b, []byte(sec), []byte("[redacted]"))
	}
	return string(b)
}

// Stop ends the server (SIGTERM, then SIGKILL after 10s) and waits for it.
// Its files stay; Restart starts it again on the same port.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	defer func() { s.cmd = nil; s.log.Close() }()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("%s did not stop on SIGTERM within 10s: killed", s.Kind)
	}
	return nil
}

// Restart starts the stopped server again, on the same port, with its
// zone and journal as it left them.
func (s *Server) Restart() error {
	bin, err := binary(s.Kind)
	if err != nil {
		return err
	}
	var last error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // the port can linger a moment after exit
		if last = s.start(bin); last == nil {
			return nil
		}
	}
	return last
}

// ZoneConfig returns the dnsconfig zone for key (KeyGolive, ...), with its
// secret loaded: what dnsupdate.New takes.
func (s *Server) ZoneConfig(key string) *dnsconfig.Zone {
	z := &dnsconfig.Zone{Name: Zone, Server: s.Addr, Timeout: 2 * time.Second}
	z.Key.Name = dnsconfig.CanonicalName(key)
	z.Key.Algorithm = dnsconfig.HMACSHA256
	sec := s.Secrets[key]
	if sec == "" { // a key the server does not know: any secret
		b := make([]byte, 32)
		rand.Read(b)
		sec = base64.StdEncoding.EncodeToString(b)
	}
	secret, err := dnsconfig.NewSecret(sec)
	if err != nil {
		panic(err)
	}
	z.Key.Secret = secret
	return z
}

// WrongSecret returns key's zone config with a secret the server does not
// have for that key.
func (s *Server) WrongSecret(key string) *dnsconfig.Zone {
	z := s.ZoneConfig(key)
	b := make([]byte, 32)
	rand.Read(b)
	z.Key.Secret, _ = dnsconfig.NewSecret(base64.StdEncoding.EncodeToString(b))
	return z
}

// Nsupdate runs nsupdate(1) with key against the server; script is the
// update commands (without server/key/send lines).
func (s *Server) Nsupdate(ctx context.Context, key, script string) (string, error) {
	bin, err := exec.LookPath("nsupdate")
	if err != nil {
		return "", errors.New("nsupdate not found (apt-get install bind9-dnsutils)")
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	in := fmt.Sprintf("server %s %s\nzone %s\nkey hmac-sha256:%s %s\n%s\nsend\n", host, port, Zone, key, s.Secrets[key], strings.TrimSpace(script))
	cmd := exec.CommandContext(ctx, bin, "-v") // -v: TCP
	cmd.Stdin = strings.NewReader(in)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// freePort returns a loopback port free for both TCP and UDP just now.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no loopback port free for both TCP and UDP")
}
