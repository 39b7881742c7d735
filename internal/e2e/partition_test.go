package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/pki"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// netHost is one host of a partition test: a network namespace of its own,
// joined to the test's namespace by a veth pair on a private /30 (the host
// side .1, the namespace side .2).
type netHost struct {
	id, ns       string
	hostIf, nsIf string
	hostIP, nsIP string
}

// run runs a command, failing the test with its output.
func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netnsOrSkip checks that the kernel lets this process make a network
// namespace; a refusal skips the test, except under CI=true where it is a
// failure (the CI machine must run it).
func netnsOrSkip(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := exec.LookPath("ip"); err != nil {
		why = "no ip command (iproute2)"
	} else if _, err := exec.LookPath("tc"); err != nil {
		why = "no tc command (iproute2)"
	} else {
		name := "gl-probe-" + randHex(3)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			why = fmt.Sprintf("the kernel refuses network namespaces: ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
		} else {
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("partition test cannot run under CI: %s", why)
	}
	t.Skip(why)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeSubnet picks 10.X.Y.0/24 with no address of this namespace in it;
// host i gets 10.X.Y.(4i)/30.
func freeSubnet(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		var b [2]byte
		rand.Read(b[:])
		prefix := fmt.Sprintf("10.%d.%d.", 200+int(b[0])%50, b[1])
		clash := false
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), prefix) {
				clash = true
			}
		}
		out, _ := exec.Command("ip", "-4", "route", "show", "match", prefix+"0/24").Output()
		// Only the default route may cover it.
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.HasPrefix(l, "default") {
				clash = true
			}
		}
		if !clash {
			return prefix
		}
	}
	t.Fatal("no free 10.x.y.0/24 for the test's namespaces")
	return ""
}

// newNetHost makes host i's namespace and veth pair and removes both when
// the test ends, failed or not.
func newNetHost(t *testing.T, tag, prefix string, i int, id string) *netHost {
	t.Helper()
	h := &netHost{id: id, ns: fmt.Sprintf("gl-%s-%d", tag, i), hostIf: fmt.Sprintf("glh%s%d", tag, i), nsIf: fmt.Sprintf("gln%s%d", tag, i),
		hostIP: fmt.Sprintf("%s%d", prefix, 4*i+1), nsIP: fmt.Sprintf("%s%d", prefix, 4*i+2)}
	run(t, "ip", "netns", "add", h.ns)
	t.Cleanup(func() {
		// Deleting the namespace destroys its end of the veth, and with
		// it the pair; the explicit delete covers a pair made before the
		// move into the namespace failed.
		exec.Command("ip", "link", "del", h.hostIf).Run()
		if out, err := exec.Command("ip", "netns", "del", h.ns).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v %s", h.ns, err, out)
		}
	})
	run(t, "ip", "link", "add", h.hostIf, "type", "veth", "peer", "name", h.nsIf, "netns", h.ns)
	run(t, "ip", "addr", "add", h.hostIP+"/30", "dev", h.hostIf)
	run(t, "ip", "link", "set", h.hostIf, "up")
	run(t, "ip", "netns", "exec", h.ns, "ip", "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", h.ns, "ip", "addr", "add", h.nsIP+"/30", "dev", h.nsIf)
	run(t, "ip", "netns", "exec", h.ns, "ip", "link", "set", h.nsIf, "up")
	run(t, "ip", "netns", "exec", h.ns, "ip", "route", "add", "default", "via", h.hostIP)
	return h
}

// partition drops every packet on the host's link, both ways, while the
// link stays up (no carrier loss for either side to notice): a token
// bucket with a one-byte burst passes no packet.
func (h *netHost) partition(t *testing.T) {
	t.Helper()
	run(t, "tc", "qdisc", "add", "dev", h.hostIf, "root", "tbf", "rate", "8bit", "burst", "1", "limit", "1")
	run(t, "ip", "netns", "exec", h.ns, "tc", "qdisc", "add", "dev", h.nsIf, "root", "tbf", "rate", "8bit", "burst", "1", "limit", "1")
}

func (h *netHost) heal(t *testing.T) {
	t.Helper()
	run(t, "tc", "qdisc", "del", "dev", h.hostIf, "root")
	run(t, "ip", "netns", "exec", h.ns, "tc", "qdisc", "del", "dev", h.nsIf, "root")
}

// client is an HTTP client whose connections are made inside the host's
// namespace (its loopback: the sample service, the agent's /status), so
// the test reads them whatever the link does.
func (h *netHost) client() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			// Never unlocked: the thread, moved into the namespace, ends
			// with this goroutine. The socket stays in the namespace it
			// was made in.
			runtime.LockOSThread()
			f, err := os.Open("/run/netns/" + h.ns)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, fmt.Errorf("setns %s: %w", h.ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

func (h *netHost) get(url string) (string, error) {
	resp, err := h.client().Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// partitionAgentConfig is the sample host's agent config (see
// writeAgentConfig), talking to the controller over mutual TLS.
func partitionAgentConfig(t *testing.T, host string, port int, state, ca, cert, key string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "agent.hcl")
	src := fmt.Sprintf(`
host_id   = %q
state_dir = %q
labels    = { role = "web" }
controller {
  ca_file   = %q
  cert_file = %q
  key_file  = %q
}
service "app" {
  port = %d
  keep_releases = 3
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "10s"
  }
}
`, host, state, ca, cert, key, port)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestPartitionedAgent runs two agents, each in a network namespace of its
// own, against a controller listening on the host side of the first one's
// veth, and cuts the second host off silently (the link stays up, every
// packet is dropped) while a deploy of v2 bakes on both. The agent drops
// its token within its keepalive budget; the controller marks it lost
// within 30 s; the gate with it in the wave fails closed; the fleet
// rollback ends failed at its deadline naming the host (the other host is
// back on v1); a deploy that includes it is refused. After the heal the
// host gets its queued rollback: it serves v1 and `agents` shows it
// connected with v1.
func TestPartitionedAgent(t *testing.T) {
	netnsOrSkip(t)
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	tag := randHex(2)
	prefix := freeSubnet(t)
	hosts := []*netHost{newNetHost(t, tag, prefix, 0, "net-0"), newNetHost(t, tag, prefix, 1, "net-1")}
	ctlIP := hosts[0].hostIP

	// PKI: the controller's certificate names the address agents dial.
	dir := t.TempDir()
	ca, err := pki.Init(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, pki.CAFile)
	cert, key, err := ca.Issue(pki.Request{Name: "controller", Server: true, IPs: []net.IP{net.ParseIP(ctlIP), net.IPv4(127, 0, 0, 1)}}, dir, "controller")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.ControllerConfig(t)
	cfg.Listen = freeAddrOn(t, ctlIP)
	cfg.TLS = pki.Files{CA: caFile, Cert: cert, Key: key}
	ctlSrv := testenv.StartController(t, cfg)
	ctl := tlsControl(t, ctlSrv.GRPCAddr(), ca, dir)
	ctx := t.Context()

	// The artifacts, served on the controller's side of the veth.
	lis, err := net.Listen("tcp", net.JoinHostPort(ctlIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	artSrv := &http.Server{Handler: http.FileServer(http.Dir(rel)), ReadHeaderTimeout: 10 * time.Second}
	go artSrv.Serve(lis)
	t.Cleanup(func() { artSrv.Close() })
	artifact := func(v string) string { return "http://" + lis.Addr().String() + "/sampleapp-" + v + ".tar.gz" }

	ports := map[string]int{}
	var ids []string
	for _, h := range hosts {
		acert, akey, err := ca.Issue(pki.Request{Name: h.id, Agent: true}, dir, h.id)
		if err != nil {
			t.Fatal(err)
		}
		ports[h.id] = freePort(t) // any port: the namespace is empty
		conf := partitionAgentConfig(t, h.id, ports[h.id], t.TempDir(), caFile, acert, akey)
		start(t, h.id, "ip", "netns", "exec", h.ns, filepath.Join(bin, "golive-agent"), "run", "--controller", ctlSrv.GRPCAddr(),
			"--config", conf, "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "")
		ids = append(ids, h.id)
	}
	serves := func(h *netHost) string {
		v, err := h.get(fmt.Sprintf("http://127.0.0.1:%d/version", ports[h.id]))
		if err != nil {
			return ""
		}
		return v
	}
	agents := func() map[string]*golivev1.Agent {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return nil
		}
		out := map[string]*golivev1.Agent{}
		for _, a := range la.Agents {
			out[a.HostId] = a
		}
		return out
	}
	testenv.WaitFor(t, 60*time.Second, "both agents connected from their namespaces", func() bool {
		st := agents()
		return st[ids[0]].GetState() == "connected" && st[ids[1]].GetState() == "connected"
	})
	g, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "partition test"})
	if err != nil {
		t.Fatal(err)
	}
	tok := g.Approval.FencingToken
	testenv.WaitFor(t, 30*time.Second, "both agents hold the token", func() bool {
		st := agents()
		return st[ids[0]].GetFencingToken() == tok && st[ids[1]].GetFencingToken() == tok
	})
	cut := hosts[1]
	metricsAddr := agents()[cut.id].GetMetricsAddress()
	agentToken := func() (int64, bool) {
		b, err := cut.get("http://" + metricsAddr + "/status")
		if err != nil {
			return 0, false
		}
		var s struct {
			Connected    bool  `json:"connected"`
			FencingToken int64 `json:"fencing_token"`
		}
		if json.Unmarshal([]byte(b), &s) != nil {
			return 0, false
		}
		return s.FencingToken, s.Connected
	}
	if tk, ok := agentToken(); tk != tok || !ok {
		t.Fatalf("%s's /status (read inside its namespace at %s): token %d connected %t, want %d", cut.id, metricsAddr, tk, ok, tok)
	}

	deploy := func(v string, bake, deadline time.Duration) (*golivev1.DeployResponse, error) {
		return ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: ids, ArtifactUrl: artifact(v), Sha256: sums[v],
			MinHealthy: durationpb.New(bake), ProgressDeadline: durationpb.New(deadline)})
	}
	resp, err := deploy("v1", time.Second, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r := finish(t, ctl, ctx, resp.Rollout.Id); r.State != "succeeded" {
		t.Fatalf("v1: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	// v2 on both at once, baking for 60 s: the cut comes inside the bake,
	// and the gate must fail on the lost host, not pass without it (the
	// executor counts a host lost for a gate executor.LostGrace after its
	// last heartbeat).
	const bake, deadline = 60 * time.Second, 65 * time.Second
	resp, err = deploy("v2", bake, deadline)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Rollout.Id
	var r *golivev1.Rollout
	getRollout := func() bool {
		g, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err == nil {
			r = g.Rollout
		}
		return err == nil
	}
	testenv.WaitFor(t, 60*time.Second, "v2 deployed on both hosts, baking", func() bool {
		if !getRollout() {
			return false
		}
		for _, hp := range r.Hosts {
			if hp.State != "succeeded" {
				return false
			}
		}
		return serves(hosts[0]) == "v2" && serves(cut) == "v2"
	})

	cut.partition(t)
	healed := false
	t.Cleanup(func() {
		if !healed {
			cut.heal(t)
		}
	})
	cutAt := time.Now()
	// Each fact is taken the first time it is seen; the loop ends when
	// every one was.
	var tokenDrop, markedLost, gateFailed time.Duration
	testenv.WaitFor(t, 60*time.Second, "token dropped, host lost, gate failed", func() bool {
		if tokenDrop == 0 {
			if tk, ok := agentToken(); tk == 0 && !ok {
				tokenDrop = time.Since(cutAt)
			}
		}
		if markedLost == 0 && agents()[cut.id].GetState() == "lost" {
			markedLost = time.Since(cutAt)
		}
		if gateFailed == 0 && getRollout() && (r.State == "rolling_back" || r.State == "failed" || r.State == "rolled_back" || r.State == "halted") {
			gateFailed = time.Since(cutAt)
			t.Logf("gate: rollout %s: %s", r.State, r.Reason)
		}
		return tokenDrop > 0 && markedLost > 0 && gateFailed > 0
	})
	t.Logf("partition: %s dropped its token after %s, marked lost after %s, gate failed after %s",
		cut.id, tokenDrop.Round(time.Millisecond), markedLost.Round(time.Millisecond), gateFailed.Round(time.Millisecond))
	if tokenDrop > 12*time.Second {
		t.Errorf("the cut agent held its token %s: its keepalive budget is 8 s", tokenDrop)
	}
	if markedLost > 30*time.Second {
		t.Errorf("the controller marked the host lost after %s, want within 30 s", markedLost)
	}
	if r.State != "rolling_back" && r.State != "failed" || !strings.Contains(r.Reason, cut.id+" is lost") {
		t.Fatalf("after the cut the rollout is %s %q: want the gate failed on the lost host %s", r.State, r.Reason, cut.id)
	}
	if gateFailed >= bake {
		t.Errorf("the gate failed %s after the cut, after the bake window (%s) could have passed", gateFailed, bake)
	}
	gateAt := cutAt.Add(gateFailed)

	// The fleet rollback: the reachable host goes back to v1; the cut one
	// cannot, and the rollout ends failed at its deadline, naming it.
	testenv.WaitFor(t, deadline+60*time.Second, "the fleet rollback to end", func() bool {
		return getRollout() && (r.State == "failed" || r.State == "rolled_back" || r.State == "succeeded" || r.State == "aborted")
	})
	rollbackEnd := time.Since(gateAt)
	t.Logf("rollback ended %s %s after the gate failed (deadline %s): %s", r.State, rollbackEnd.Round(time.Millisecond), deadline, r.Reason)
	if r.State != "failed" || !strings.Contains(r.Reason, cut.id+" (unreachable") || !strings.Contains(r.Reason, "rollback --service app --hosts "+cut.id) {
		t.Errorf("rollout %s %q: want failed naming %s unreachable and the command to finish", r.State, r.Reason, cut.id)
	}
	if rollbackEnd > deadline+30*time.Second {
		t.Errorf("the rollback ended %s after it began, its deadline is %s", rollbackEnd, deadline)
	}
	if got := serves(hosts[0]); got != "v1" {
		t.Errorf("%s serves %q after the fleet rollback, want v1", hosts[0].id, got)
	}
	if got := serves(cut); got != "v2" {
		t.Errorf("cut off, %s serves %q: nothing can have reached it", cut.id, got)
	}

	// A deploy that includes the cut host is refused, naming it.
	if _, err := deploy("v2", time.Second, time.Minute); err == nil || !strings.Contains(err.Error(), cut.id) {
		t.Errorf("a deploy including the lost host: %v; want refused naming %s", err, cut.id)
	} else {
		t.Logf("deploy including %s refused: %v", cut.id, err)
	}

	cut.heal(t)
	healed = true
	healAt := time.Now()
	var back *golivev1.Agent
	heal := testenv.WaitFor(t, 60*time.Second, cut.id+" back, its queued rollback done, shown as it is", func() bool {
		back = agents()[cut.id]
		if back.GetState() != "connected" || len(back.Services) != 1 {
			return false
		}
		s := back.Services[0]
		return s.State == "running" && s.CurrentRelease == "v1" && serves(cut) == "v1"
	})
	t.Logf("healed: %s connected, rolled back to v1 and shown so %s after the heal (connected at +%s)", cut.id,
		heal.Round(time.Millisecond), back.ConnectedAt.AsTime().Sub(healAt).Round(time.Millisecond))
	if tk, ok := agentToken(); !ok || tk != tok {
		t.Errorf("after the heal %s's /status: token %d connected %t, want %d", cut.id, tk, ok, tok)
	}
	for _, res := range back.RecentResults {
		t.Logf("%s result %s %s %s@%s: %s", cut.id, res.CommandId, res.Outcome, res.Service, res.Release, res.Error)
	}
	if len(back.RecentResults) == 0 || back.RecentResults[0].Release != "v1" || back.RecentResults[0].Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED {
		t.Errorf("%s's last result after the heal: %v; want its queued rollback to v1, succeeded", cut.id, back.RecentResults)
	}
	// Its queued rollback is done: a new deploy to both hosts is accepted.
	testenv.WaitFor(t, 30*time.Second, "a deploy to both hosts accepted after the heal", func() bool {
		resp, err = deploy("v2", time.Second, time.Minute)
		return err == nil
	})
	if r := finish(t, ctl, ctx, resp.Rollout.Id); r.State != "succeeded" {
		t.Errorf("v2 after the heal: %s %s", r.State, r.Reason)
	}
}

// freeAddrOn is a free port on ip, as host:port.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// tlsControl dials the controller as an operator allowed to approve and
// deploy.
func tlsControl(t *testing.T, addr string, ca *pki.CA, dir string) golivev1.ControlServiceClient {
	t.Helper()
	cert, key, err := ca.Issue(pki.Request{Name: "partition-test", Roles: []pki.Role{pki.RoleApprover, pki.RoleDeployer}}, dir, "operator")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.Files{CA: filepath.Join(dir, pki.CAFile), Cert: cert, Key: key}.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return golivev1.NewControlServiceClient(conn)
}
