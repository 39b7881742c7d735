package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/routertest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// freeRange finds n consecutive free loopback ports below the ephemeral
// range (an outgoing connection cannot take them meanwhile).
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		base := 20000 + rand.IntN(10000)
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// scaled is a scaled exec service "app" (max 4) behind a real router.
type scaled struct {
	t        *testing.T
	stateDir string
	src      string
	base     int
	url      string // through the router
	rel      string
	sums     map[string]string
	services []agent.Service
	a        *agent.Agent
	pool     router.Pool
	reg      *prometheus.Registry
}

func newScaled(t *testing.T, kind string) *scaled {
	s := newScaledNotStarted(t, kind)
	s.start()
	return s
}

func newScaledNotStarted(t *testing.T, kind string) *scaled {
	rel, sums := testenv.Releases(t)
	s := &scaled{t: t, stateDir: filepath.Join(t.TempDir(), "state"), base: freeRange(t, 4), rel: rel, sums: sums}
	var routerBlock string
	switch kind {
	case "nginx":
		n := routertest.StartNginxPool(t, router.UpstreamName("app"), router.Member{Index: 0, Port: s.base})
		s.url = n.URL("/")
		q := make([]string, 0)
		for _, a := range n.ReloadCommand() {
			q = append(q, strconv.Quote(a))
		}
		routerBlock = fmt.Sprintf(`router {
      kind          = "nginx"
      upstream_file = %q
      reload        = [%s]
      probe_url     = %q
    }`, n.UpstreamFile, strings.Join(q, ", "), n.URL("/healthz"))
	case "haproxy":
		h := routertest.StartHAProxyPool(t, "be_app", "app", s.base)
		s.url = h.URL("/")
		routerBlock = fmt.Sprintf(`router {
      kind         = "haproxy"
      admin_socket = %q
      backend      = "be_app"
    }`, h.Socket)
	}
	s.src = fmt.Sprintf(`
host_id   = "h1"
state_dir = %q
service "app" {
  port = %d
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "100ms"
    successes = 2
    deadline  = "10s"
  }
  scale {
    min        = 1
    max        = 4
    target_rps = 50
    drain_timeout = "5s"
    %s
  }
}
`, s.stateDir, s.base, routerBlock)
	return s
}

// start builds the services from the config (reconciling what runs) and
// an agent around them.
func (s *scaled) start() {
	t := s.t
	cfg, err := agentconfig.Parse([]byte(s.src), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := testenv.Logger(t, "agent")
	s.reg = prometheus.NewRegistry()
	services, err := agent.ServicesFromConfig(t.Context(), cfg, log, s.reg)
	if err != nil {
		t.Fatal(err)
	}
	s.services = services
	t.Cleanup(func() { s.stop() })
	s.a = agent.NewCommandAgent(t.Context(), services, 7, log)
	s.pool = services[0].InstancePool()
}

func (s *scaled) stop() {
	if s.services != nil {
		s.a.WaitOps()
		agent.CloseServices(s.services, hclog.NewNullLogger())
		s.services = nil
	}
}

func (s *scaled) deploy(v string) {
	s.t.Helper()
	res := s.services[0].Exec.Run(s.t.Context(), deploystep.Command{ID: "d-" + v, Kind: deploystep.KindDeploy, Release: v,
		ArtifactURL: "file://" + filepath.Join(s.rel, "sampleapp-"+v+".tar.gz"), SHA256: s.sums[v]}, nil)
	if res.Outcome != deploystep.OutcomeSucceeded {
		s.t.Fatalf("deploy %s: %s %s", v, res.Outcome, res.Error)
	}
}

// command sends cmd through the agent's admission and waits for its
// result (nil when refused: the ack's reason is returned instead).
func (s *scaled) command(cmd *golivev1.Command) (*golivev1.CommandResult, string) {
	s.t.Helper()
	ack := s.a.Admit(cmd)
	if !ack.Accepted {
		return nil, ack.Reason
	}
	s.a.Start(cmd)
	var res *golivev1.CommandResult
	testenv.WaitFor(s.t, 60*time.Second, "result of "+cmd.Id, func() bool {
		res = s.a.Result(cmd.Id)
		return res != nil
	})
	return res, ""
}

var cmdSeq int

func scaleCmd(n uint32, token int64, operator bool) *golivev1.Command {
	cmdSeq++
	return &golivev1.Command{Id: fmt.Sprintf("scale-%d", cmdSeq), FencingToken: token,
		Action: &golivev1.Command_Scale{Scale: &golivev1.ScaleAction{Service: "app", Instances: n, Operator: operator, Reason: "test"}}}
}

func (s *scaled) scale(n uint32) {
	s.t.Helper()
	res, reason := s.command(scaleCmd(n, 7, false))
	if res == nil {
		s.t.Fatalf("scale to %d refused: %s", n, reason)
	}
	if res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED {
		s.t.Fatalf("scale to %d: %s %s", n, res.Outcome, res.Error)
	}
	s.assertAgree(int(n))
}

// assertAgree: n instances serve, each healthy and in the router, and the
// router lists exactly them.
func (s *scaled) assertAgree(n int) {
	s.t.Helper()
	var want []router.Member
	for i := range n {
		want = append(want, router.Member{Index: i, Port: s.base + i})
	}
	got, err := s.pool.Members(s.t.Context())
	if err != nil || !slices.Equal(got, want) {
		s.t.Fatalf("router lists %v (%v), want %v", got, err, want)
	}
	if got := s.instancesMetric("serving"); got != float64(n) {
		s.t.Fatalf("golive_agent_instances{state=serving} %v, want %d", got, n)
	}
	st := s.a.Services()[0]
	if len(st.Instances) != n || st.DesiredInstances != uint32(n) || st.Scale.GetMax() != 4 {
		s.t.Fatalf("reported %d instances (desired %d): %v", len(st.Instances), st.DesiredInstances, st.Instances)
	}
	for i, inst := range st.Instances {
		if inst.State != "serving" || !inst.Healthy || !inst.InRouter || int(inst.Port) != s.base+i {
			s.t.Fatalf("instance %d: %v", i, inst)
		}
		if v := version(int(inst.Port)); v != inst.Release {
			s.t.Fatalf("instance %d answers %q, reported release %q", i, v, inst.Release)
		}
	}
}

// instancesMetric is golive_agent_instances{service="app",state}.
func (s *scaled) instancesMetric(state string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "golive_agent_instances" {
			continue
		}
		for _, m := range mf.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == "app" && labels["state"] == state {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// load runs traffic through the router until the returned func is called,
// which reports the result.
func (s *scaled) load(rate float64) func() loadgen.Result {
	g, err := loadgen.New(loadgen.Options{URL: s.url, Rate: rate, Duration: 5 * time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		s.t.Fatal(err)
	}
	done := make(chan loadgen.Result, 1)
	go func() {
		r, _ := g.Run(context.Background())
		done <- r
	}()
	return func() loadgen.Result {
		g.Stop()
		return <-done
	}
}

func assertNoFailures(t *testing.T, what string, r loadgen.Result) {
	t.Helper()
	sum := r.Summary()
	if f := r.Failures(); len(f) > 0 || sum.Requests == 0 {
		t.Fatalf("%s: %d requests, %d failed: first %+v", what, sum.Requests, len(f), f[:min(len(f), 3)])
	}
	t.Logf("%s: %d requests, none failed", what, sum.Requests)
}

// TestScaleUnderLoad: behind real nginx and HAProxy, under load, a
// 1-instance service scales to 3 (each healthy and in the router), a
// restart-mode deploy replaces all 3 one at a time, a rollback puts all 3
// back, then it scales back to 1, drained: no request fails.
func TestScaleUnderLoad(t *testing.T) {
	for _, kind := range []string{"nginx", "haproxy"} {
		t.Run(kind, func(t *testing.T) {
			s := newScaled(t, kind)
			s.deploy("v1")
			s.assertAgree(1)
			done := s.load(100)
			s.scale(3)
			assertNoFailures(t, "scale 1->3", done())

			done = s.load(100)
			s.deploy("v2")
			s.assertAgree(3)
			for i := range 3 {
				if v := version(s.base + i); v != "v2" {
					t.Fatalf("instance %d runs %q after the deploy of v2", i, v)
				}
			}
			assertNoFailures(t, "deploy of 3 instances", done())

			done = s.load(100)
			if res := s.services[0].Exec.Run(t.Context(), deploystep.Command{ID: "r1", Kind: deploystep.KindRollback}, nil); res.Outcome != deploystep.OutcomeSucceeded {
				t.Fatalf("rollback: %s %s", res.Outcome, res.Error)
			}
			s.assertAgree(3)
			for i := range 3 {
				if v := version(s.base + i); v != "v1" {
					t.Fatalf("instance %d runs %q after the rollback", i, v)
				}
			}
			assertNoFailures(t, "rollback of 3 instances", done())

			done = s.load(100)
			s.scale(1)
			assertNoFailures(t, "scale 3->1", done())
			for i := 1; i < 3; i++ {
				if version(s.base+i) != "" {
					t.Fatalf("instance %d still answers after the scale-down", i)
				}
			}
		})
	}
}

// TestScaleRefused: a ScaleAction is refused for each reason, and nothing
// changes.
func TestScaleRefused(t *testing.T) {
	s := newScaled(t, "nginx")
	s.deploy("v1")
	tests := []struct {
		name string
		give *golivev1.Command
		want string
	}{
		{"above max", scaleCmd(5, 7, false), "outside service \"app\"'s scale block [min 1, max 4]"},
		{"below min", scaleCmd(0, 7, false), "outside"},
		{"stale token", scaleCmd(2, 6, false), "stale fencing token 6"},
		{"no scale block", &golivev1.Command{Id: "x1", FencingToken: 7, Action: &golivev1.Command_Scale{Scale: &golivev1.ScaleAction{Service: "other", Instances: 2}}}, "not configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, reason := s.command(tt.give)
			if res != nil || !strings.Contains(reason, tt.want) {
				t.Fatalf("result %v, reason %q: want refused with %q", res, reason, tt.want)
			}
			s.assertAgree(1)
		})
	}
	t.Run("no approval", func(t *testing.T) {
		s.a.SetToken(0)
		defer s.a.SetToken(7)
		_, reason := s.command(scaleCmd(2, 7, false))
		if !strings.Contains(reason, "holds no approval token") {
			t.Fatalf("reason %q", reason)
		}
		s.assertAgree(1)
	})
	t.Run("deploy in flight", func(t *testing.T) {
		s.a.Busy("app", "d-busy", true)
		_, reason := s.command(scaleCmd(2, 7, false))
		s.a.Busy("app", "d-busy", false)
		if !strings.Contains(reason, "deploy or rollback in flight") {
			t.Fatalf("reason %q", reason)
		}
		s.assertAgree(1)
	})
	t.Run("operator without approval", func(t *testing.T) {
		s.a.SetToken(0)
		defer s.a.SetToken(7)
		res, reason := s.command(scaleCmd(2, 0, true))
		if res == nil || res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED {
			t.Fatalf("operator scale: %v %q", res, reason)
		}
		s.assertAgree(2)
	})
}

// TestScaleNoBlock: a service without a scale block refuses a ScaleAction.
func TestScaleNoBlock(t *testing.T) {
	a := agent.NewCommandAgent(t.Context(), []agent.Service{{Name: "app"}}, 7, hclog.NewNullLogger())
	ack := a.Admit(scaleCmd(2, 7, false))
	if ack.Accepted || !strings.Contains(ack.Reason, "has no scale block") {
		t.Fatalf("ack %v", ack)
	}
}

// TestScaleAgentKilled: an agent killed -9 mid scale-up (a subprocess: the
// test binary running TestScaleHelperProcess) leaves instances starting;
// the next agent on the same state dir adopts them, starts the missing
// ones, and the router lists exactly the 3 healthy instances.
func TestScaleAgentKilled(t *testing.T) {
	for _, kind := range []string{"nginx", "haproxy"} {
		t.Run(kind, func(t *testing.T) {
			s := newScaledNotStarted(t, kind)
			sums, _ := json.Marshal(s.sums)
			cmd := exec.Command(os.Args[0], "-test.run=^TestScaleHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), "GOLIVE_SCALE_HELPER="+s.src, "GOLIVE_SCALE_RELEASES="+s.rel, "GOLIVE_SCALE_SUMS="+string(sums))
			out := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-exited })
			pid2 := filepath.Join(s.stateDir, "services", "app", "app-2.pid")
			testenv.WaitFor(t, 60*time.Second, "the helper agent to start instance 2", func() bool {
				select {
				case <-exited:
					t.Fatalf("helper exited:\n%s", out.String())
				default:
				}
				_, err := os.Stat(pid2)
				return err == nil
			})
			cmd.Process.Kill() // -9, mid scale-up
			<-exited
			s.start()
			s.assertAgree(3)
			done := s.load(100)
			s.scale(1)
			assertNoFailures(t, "scale 3->1 after the restart", done())
		})
	}
}

// TestScaleHelperProcess is the agent TestScaleAgentKilled kills: it
// deploys v1 and scales to 3, then waits to be killed.
func TestScaleHelperProcess(t *testing.T) {
	src := os.Getenv("GOLIVE_SCALE_HELPER")
	if src == "" {
		t.Skip("run by TestScaleAgentKilled")
	}
	s := &scaled{t: t, src: src, rel: os.Getenv("GOLIVE_SCALE_RELEASES")}
	if err := json.Unmarshal([]byte(os.Getenv("GOLIVE_SCALE_SUMS")), &s.sums); err != nil {
		t.Fatal(err)
	}
	s.start()
	s.deploy("v1")
	s.a.Start(scaleCmd(3, 7, false))
	select {} // killed
}

// TestScaleHaltedByRevoke: a revoke mid scale-up cancels the ScaleAction;
// the instances it had not put in the router are stopped, and the router
// lists exactly the serving ones.
func TestScaleHaltedByRevoke(t *testing.T) {
	s := newScaled(t, "nginx")
	s.deploy("v1")
	cmd := scaleCmd(4, 7, false)
	if ack := s.a.Admit(cmd); !ack.Accepted {
		t.Fatal(ack.Reason)
	}
	s.a.Start(cmd)
	testenv.WaitFor(t, 30*time.Second, "the scale to start instances", func() bool {
		for _, inst := range s.a.Services()[0].Instances {
			if inst.State == "starting" {
				return true
			}
		}
		return false
	})
	s.a.Revoke()
	var res *golivev1.CommandResult
	testenv.WaitFor(t, 30*time.Second, "the scale's result", func() bool { res = s.a.Result(cmd.Id); return res != nil })
	if res.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED || !strings.Contains(res.Error, "halted: the approval ended") {
		t.Fatalf("result %s %q", res.Outcome, res.Error)
	}
	st := s.a.Services()[0]
	serving := 0
	for _, inst := range st.Instances {
		if inst.State != "serving" {
			t.Fatalf("instance %d left %s", inst.Index, inst.State)
		}
		serving++
	}
	if int(st.DesiredInstances) != serving {
		t.Fatalf("desired %d, %d serving", st.DesiredInstances, serving)
	}
	s.assertAgree(serving)
}
