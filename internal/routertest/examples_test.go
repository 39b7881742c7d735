package routertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/golive/golive/internal/router"
)

const examples = "../../deploy/examples"

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examples, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func replace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("example lacks %q", old)
	}
	return strings.ReplaceAll(s, old, new)
}

// TestNginxExample: the example upstream file is what the router writes
// for service "api", and the example server block passes nginx -t with it.
func TestNginxExample(t *testing.T) {
	upstream := readExample(t, "nginx/golive/api.conf")
	want := router.NginxUpstream(router.UpstreamName("api"), router.Ports{Blue: 8081, Green: 8082}, router.Traffic{Blue: 100}, "initial")
	if upstream != string(want) {
		t.Fatalf("deploy/examples/nginx/golive/api.conf differs from what the router writes:\n%s\nwant:\n%s", upstream, want)
	}

	bin := LookPath(t, "nginx")
	dir := t.TempDir()
	upFile := filepath.Join(dir, "api-upstream.conf")
	if err := os.WriteFile(upFile, []byte(upstream), 0o644); err != nil {
		t.Fatal(err)
	}
	site := readExample(t, "nginx/api.conf")
	site = replace(t, site, "/etc/nginx/golive/api.conf", upFile)
	site = replace(t, site, "listen 80;", "listen 127.0.0.1:"+strconv.Itoa(FreePort(t))+";")
	siteFile := filepath.Join(dir, "site.conf")
	if err := os.WriteFile(siteFile, []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	main := "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\nhttp {\n    include " + siteFile + ";\n}\n"
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir+"/", "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}

	r, err := router.NewNginx(router.NginxConfig{Upstream: router.UpstreamName("api"), File: upFile,
		Reload: []string{"true"}, Ports: router.Ports{Blue: 8081, Green: 8082}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Active(t.Context()); err != nil || got != (router.Traffic{Blue: 100}) {
		t.Fatalf("Active on the example upstream file: %v, %v", got, err)
	}
}

// TestHAProxyExample: the example configuration passes haproxy -c.
func TestHAProxyExample(t *testing.T) {
	bin := LookPath(t, "haproxy")
	dir := t.TempDir()
	cfg := readExample(t, "haproxy/haproxy.cfg")
	cfg = replace(t, cfg, "/run/haproxy/admin.sock", filepath.Join(dir, "admin.sock"))
	cfg = replace(t, cfg, "/var/lib/haproxy/server-state", filepath.Join(dir, "server-state"))
	cfg = replace(t, cfg, "bind :80", "bind 127.0.0.1:"+strconv.Itoa(FreePort(t)))
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	for _, want := range []string{"server blue ", "server green ", "set-header " + router.ServerHeader + " %s", "level admin"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("example lacks %q", want)
		}
	}
}
