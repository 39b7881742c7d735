package routertest

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/golive/golive/internal/router"
)

// TestLaunchStop: the non-test starters serve through the proxy to blue,
// and Stop ends the server (its port refuses connections) and is
// idempotent.
func TestLaunchStop(t *testing.T) {
	blue := StartBackend(t, router.Blue)
	green := StartBackend(t, router.Green)
	ports := router.Ports{Blue: blue.Port, Green: green.Port}
	for _, name := range []string{"nginx", "haproxy"} {
		t.Run(name, func(t *testing.T) {
			bin := LookPath(t, name)
			var (
				port int
				stop func() error
			)
			if name == "nginx" {
				n, err := LaunchNginx(bin, t.TempDir(), router.UpstreamName("app"), ports)
				if err != nil {
					t.Fatal(err)
				}
				port, stop = n.Port, n.Stop
			} else {
				h, err := LaunchHAProxy(bin, t.TempDir(), "app", ports, HAProxyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				port, stop = h.Port, h.Stop
			}
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
			if err != nil {
				stop()
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Backend"); got != string(router.Blue) {
				t.Errorf("answered by %q, want blue", got)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if err := stop(); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
			if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
				conn.Close()
				t.Fatalf("port %d still accepts connections after Stop", port)
			}
		})
	}
}

func TestFindBinaryMissing(t *testing.T) {
	if _, err := FindBinary("golive-no-such-binary"); err == nil {
		t.Fatal("no error for a missing binary")
	}
}
