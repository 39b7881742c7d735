package routertest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/router"
)

// StartNginxPool starts nginx in front of the instances of a scaled
// restart-mode service: its upstream file (router.NginxPoolUpstream) lists
// first at start; the agent's pool rewrites it. Stopped when the test ends.
func StartNginxPool(t testing.TB, upstream string, first router.Member) *Nginx {
	t.Helper()
	bin := LookPath(t, "nginx")
	n := &Nginx{Bin: bin, Dir: t.TempDir(), Upstream: upstream}
	n.Conf = filepath.Join(n.Dir, "nginx.conf")
	n.UpstreamFile = filepath.Join(n.Dir, "upstream.conf")
	if err := os.MkdirAll(filepath.Join(n.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.UpstreamFile, router.NginxPoolUpstream(upstream, []router.Member{first}, "initial"), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	n.srv, n.Port, err = startRetrying("nginx", syscall.SIGQUIT, func(port int) ([]string, string, error) {
		if err := os.WriteFile(n.Conf, []byte(NginxConfig(n.Dir, port, upstream, n.UpstreamFile)), 0o644); err != nil {
			return nil, "", err
		}
		return append(n.args(), "-g", "daemon off;"), filepath.Join(n.Dir, "stderr.log"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Log(err)
		}
	})
	return n
}

// StartHAProxyPool starts HAProxy with a backend holding one static server,
// named server, for instance 0 on port; the agent's pool adds and deletes
// the servers of the other instances over the admin socket. Stopped when
// the test ends.
func StartHAProxyPool(t testing.TB, backend, server string, port int) *HAProxy {
	t.Helper()
	bin := LookPath(t, "haproxy")
	h := &HAProxy{Bin: bin, Dir: t.TempDir(), Backend: backend}
	h.Conf = filepath.Join(h.Dir, "haproxy.cfg")
	h.Socket = filepath.Join(h.Dir, "admin.sock")
	var err error
	h.srv, h.Port, err = startRetrying("haproxy", syscall.SIGTERM, func(fport int) ([]string, string, error) {
		cfg := fmt.Sprintf(`global
    stats socket %s mode 600 level admin
    log stderr format iso local0 info
defaults
    mode http
    log global
    option httplog
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
frontend fe
    bind 127.0.0.1:%d
    default_backend %s
backend %s
    balance roundrobin
    http-response set-header X-Golive-Server %%s
    server %s 127.0.0.1:%d
`, h.Socket, fport, backend, backend, server, port)
		if err := os.WriteFile(h.Conf, []byte(cfg), 0o644); err != nil {
			return nil, "", err
		}
		return []string{bin, "-db", "-f", h.Conf}, filepath.Join(h.Dir, "haproxy.log"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Log(err)
		}
	})
	waitSocket(t, h)
	return h
}

// waitSocket waits until HAProxy's admin socket accepts connections.
func waitSocket(t testing.TB, h *HAProxy) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", h.Socket)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy admin socket %s: %v\n%s", h.Socket, err, h.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
