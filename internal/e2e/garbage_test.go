package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// garbage is what TestDaemonsSurviveGarbageOnTheirPorts writes: each
// returns the bytes to send on one connection.
var garbage = map[string]func(r *rand.Rand) []byte{
	"random bytes": func(r *rand.Rand) []byte {
		b := make([]byte, 1+r.IntN(64<<10))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	},
	"HTTP/1 request": func(*rand.Rand) []byte {
		return []byte("GET /golive.v1.ControlService/Status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{\"x\":")
	},
	"HTTP/1 request with huge header": func(*rand.Rand) []byte {
		return []byte("POST /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n")
	},
	"truncated HTTP/2 preface": func(r *rand.Rand) []byte {
		p := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
		return []byte(p[:1+r.IntN(len(p)-1)])
	},
	"HTTP/2 preface then garbage frames": func(r *rand.Rand) []byte {
		b := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		for range 50 {
			// length (24 bits), type, flags, stream id, then a random payload
			n := r.IntN(300)
			b = append(b, byte(n>>16), byte(n>>8), byte(n), byte(r.IntN(12)), byte(r.Uint32()), 0, 0, 0, byte(r.IntN(8)))
			for range n {
				b = append(b, byte(r.Uint32()))
			}
		}
		return b
	},
	"1 MB of zeros": func(*rand.Rand) []byte { return make([]byte, 1<<20) },
}

// alive reports whether pid is a running process (not gone, not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestDaemonsSurviveGarbageOnTheirPorts writes garbage (random bytes, HTTP/1
// requests, truncated and corrupt HTTP/2, a TLS ClientHello to a plaintext
// port, 1 MB of zeros) on many connections to every port the built
// controller (gRPC, metrics/artifacts HTTP, embedded etcd client and peer)
// and agent (metrics HTTP, gRPC health) listen on. Both daemons stay up and
// keep answering: gRPC health on both gRPC ports, the controller's Status
// with the agent still connected, GET /metrics on both, etcd reads.
func TestDaemonsSurviveGarbageOnTheirPorts(t *testing.T) {
	bin := testenv.Binaries(t)
	ctlAddr, ctlHTTP, etcdClient, etcdPeer := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	ctl := start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", ctlHTTP,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdClient, "--embedded-etcd-peer", etcdPeer, "--heartbeat-interval", "1s")
	agentGRPC, agentHTTP := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	ag := start(t, "agent", filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--host-id", "garbage-1",
		"--state-dir", t.TempDir(), "--metrics-addr", agentHTTP, "--grpc-addr", agentGRPC)

	grpcOK := func(addr string) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %v", resp.Status)
		}
		return nil
	}
	httpOK := func(addr string) error {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte("go_goroutines")) {
			return fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		return nil
	}
	ctlc, ctx := testenv.Control(t, ctlAddr, "garbage")
	connected := func() bool {
		st, err := ctlc.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdClient}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	check := func(when string) {
		t.Helper()
		testenv.WaitFor(t, 30*time.Second, "both daemons serving "+when, func() bool {
			return grpcOK(ctlAddr) == nil && grpcOK(agentGRPC) == nil && httpOK(ctlHTTP) == nil && httpOK(agentHTTP) == nil && connected()
		})
		if _, err := etcd.Get(ctx, "/golive/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
			t.Fatalf("etcd %s: %v", when, err)
		}
		for _, p := range []*proc{ctl, ag} {
			if !alive(p.cmd.Process.Pid) {
				t.Fatalf("%s exited %s\n%s", p.name, when, p.out.String())
			}
		}
	}
	check("before the garbage")

	ports := map[string]string{"controller gRPC": ctlAddr, "controller HTTP": ctlHTTP, "embedded etcd client": etcdClient,
		"embedded etcd peer": etcdPeer, "agent gRPC": agentGRPC, "agent HTTP": agentHTTP}
	const perKind = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns, sent := 0, 0
	seed := uint64(time.Now().UnixNano())
	t.Logf("garbage seed %d", seed)
	for port, addr := range ports {
		for kind, gen := range garbage {
			for i := range perKind {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(seed, uint64(i)+uint64(len(kind))<<8+uint64(len(port))<<16))
					c, err := dialPatiently(addr)
					if err != nil {
						t.Errorf("dial %s (%s): %v", port, addr, err)
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					// Read whatever comes back so the server never blocks on us.
					go io.Copy(io.Discard, c)
					n, _ := c.Write(gen(r))
					mu.Lock()
					conns++
					sent += n
					mu.Unlock()
					if i%2 == 0 {
						// Half the connections stay open until the server gives up.
						io.Copy(io.Discard, c)
					}
				}()
			}
			// A TLS ClientHello to a plaintext port.
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialPatiently(addr)
				if err != nil {
					t.Errorf("dial %s: %v", port, err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "golive"}).Handshake() // fails: plaintext
				mu.Lock()
				conns++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	t.Logf("%d garbage connections, %d bytes, to %d ports", conns, sent, len(ports))
	check("after the garbage")
	// Still a working control plane: the agent reconnects if it dropped,
	// and the controller answers a real RPC.
	if _, err := ctlc.ListAgents(ctx, &golivev1.ListAgentsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// dialPatiently connects to addr, trying again for up to 30 s: on a loaded
// machine a burst of connections can overflow a listener's backlog for a
// moment (the SYN is dropped and the dial times out), which says nothing
// about the daemon surviving garbage.
func dialPatiently(addr string) (net.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
