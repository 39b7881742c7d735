package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
)

// TestDaemonsNotifyHealthAndStopOnSIGTERM: both daemons send READY=1 to
// systemd's NOTIFY_SOCKET once serving, answer grpc.health.v1, and exit 0 on
// SIGTERM.
func TestDaemonsNotifyHealthAndStopOnSIGTERM(t *testing.T) {
	bin := testenv.Binaries(t)
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", sockPath)
	readNotify := func(want string) {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		for {
			n, _, err := sock.ReadFromUnix(buf)
			if err != nil {
				t.Fatalf("waiting for %q on NOTIFY_SOCKET: %v", want, err)
			}
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}

	ctlAddr := etcdtest.FreeAddr(t)
	ctl := start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", etcdtest.FreeAddr(t),
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t))
	readNotify("READY=1")
	agentGRPC := etcdtest.FreeAddr(t)
	ag := start(t, "agent", filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--host-id", "web-1",
		"--state-dir", t.TempDir(), "--metrics-addr", etcdtest.FreeAddr(t), "--grpc-addr", agentGRPC)
	readNotify("READY=1")

	for _, addr := range []string{ctlAddr, agentGRPC} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		conn.Close()
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %s = %v, %v", addr, resp, err)
		}
	}

	for _, p := range []*proc{ag, ctl} {
		start := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s exited after SIGTERM with %v\n%s", p.name, err, p.out.String())
			}
			t.Logf("%s stopped cleanly %s after SIGTERM", p.name, time.Since(start).Round(time.Millisecond))
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop within 15s of SIGTERM", p.name)
		}
	}
}
