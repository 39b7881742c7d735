// Package scalebench benchmarks scaling by demand end to end: the real
// controller and agent binaries, the sample app (cmd/sampleapp) as a scaled
// restart-mode service behind a real HAProxy whose counters are the demand
// (traffic { source = "haproxy" }), under an approval.
//
//	deploy v1 (light load) --> Base rps (1 instance) --step--> Peak rps --> scaled to max, settled
//	   --> Base rps --> scaled back to 1 (after the scale-down window) --> settled
//	phases:             before              during (up)                      after (down)
//
// It reports the seconds from the step until the controller's first action,
// until the first new instance serves, and until all serve; requests failed
// during the scale-up and the scale-down (goal 0); p99 latency before,
// during and after. Everything it started is stopped and its directory
// removed before Run returns.
package scalebench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
	"github.com/golive/golive/internal/routertest"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Options configure one run. Zero values take the defaults named.
type Options struct {
	ControllerBin, AgentBin string
	// Base and Peak are the offered loads in requests per second (200,
	// 1,000); Target the requests per second one instance is sized for
	// (250); Max the scale block's max (4).
	Base, Peak, Target float64
	Max                int
	// Hold is how long the load stays at Base before the step and at Peak
	// once every instance serves (default 15s).
	Hold time.Duration
	// Window is the scale-down window (default 20s); the interval is 1s
	// and the scale-up cooldown 2s.
	Window time.Duration
	Log    io.Writer
}

func (o *Options) defaults() {
	if o.Base == 0 {
		o.Base = 200
	}
	if o.Peak == 0 {
		o.Peak = 1000
	}
	if o.Target == 0 {
		o.Target = 250
	}
	if o.Max == 0 {
		o.Max = 4
	}
	if o.Hold == 0 {
		o.Hold = 15 * time.Second
	}
	if o.Window == 0 {
		o.Window = 20 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Result is one run's figures.
type Result struct {
	Opts Options
	// FirstAction, FirstServing and AllServing are measured from the step.
	FirstAction, FirstServing, AllServing time.Duration
	// DownAfter is from the fall back to Base until one instance serves.
	DownAfter            time.Duration
	Before, During, Down loadgen.Summary
	Actions              int
}

// Run runs the benchmark once.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	res := Result{Opts: o}
	agentBin, err := filepath.Abs(o.AgentBin)
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "golive-scalebench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	var procs []*benchkit.Proc
	defer func() { benchkit.StopAll(procs, 5*time.Second) }()
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "scaling: "+format+"\n", args...) }

	rels, err := benchkit.SampleReleases(ctx, dir, "", "v1")
	if err != nil {
		return res, err
	}
	sum := sha256.Sum256(rels["v1"])
	art := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(rels["v1"]) }))
	defer art.Close()

	base, err := portRange(o.Max)
	if err != nil {
		return res, err
	}
	fe, err := benchkit.FreePorts(1)
	if err != nil {
		return res, err
	}
	hbin, err := routertest.FindBinary("haproxy")
	if err != nil {
		return res, fmt.Errorf("haproxy: %w", err)
	}
	sock := filepath.Join(dir, "haproxy.sock")
	hcfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(hcfg, []byte(fmt.Sprintf(`global
    stats socket %s mode 600 level admin
    maxconn 4096
defaults
    mode http
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
frontend fe
    bind 127.0.0.1:%d
    default_backend be_app
backend be_app
    balance roundrobin
    server app 127.0.0.1:%d
`, sock, fe[0], base)), 0o644); err != nil {
		return res, err
	}
	hp, err := benchkit.Start(benchkit.ProcSpec{Name: "haproxy", Bin: hbin, Args: []string{"-db", "-f", hcfg}, Dir: dir, LogPath: filepath.Join(dir, "haproxy.log")})
	if err != nil {
		return res, err
	}
	procs = append(procs, hp)
	if err := waitFor(ctx, 10*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return res, fmt.Errorf("haproxy's socket: %w", err)
	}

	cdir := filepath.Join(dir, "controller")
	os.MkdirAll(cdir, 0o755)
	ctl, err := benchkit.StartController(benchkit.ControllerSpec{Bin: o.ControllerBin, Dir: cdir, Args: []string{"--heartbeat-interval", "1s"}})
	if err != nil {
		return res, err
	}
	procs = append(procs, ctl.Proc)
	if err := ctl.WaitReady(ctx, 60*time.Second); err != nil {
		return res, err
	}
	conn, err := ctl.Dial()
	if err != nil {
		return res, err
	}
	defer conn.Close()
	cc := golivev1.NewControlServiceClient(conn)
	cctx := metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")
	if _, err := cc.Authorize(cctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour), Reason: "scaling benchmark"}); err != nil {
		return res, err
	}

	conf := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
host_id   = "web-1"
state_dir = %q
service "app" {
  port = %d
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
  traffic {
    source       = "haproxy"
    admin_socket = %q
    backend      = "be_app"
    server       = "app"
  }
  scale {
    min               = 1
    max               = %d
    target_rps        = %g
    interval          = "1s"
    scale_up_cooldown = "2s"
    scale_down_window = %q
    drain_timeout     = "5s"
    router {
      kind         = "haproxy"
      admin_socket = %q
      backend      = "be_app"
    }
  }
}
`, filepath.Join(dir, "state"), base, sock, o.Max, o.Target, o.Window.String(), sock)), 0o644); err != nil {
		return res, err
	}
	ap, err := benchkit.Start(benchkit.ProcSpec{Name: "agent", Bin: agentBin, Dir: dir, LogPath: filepath.Join(dir, "agent.log"),
		Args: []string{"run", "--controller", ctl.GRPCAddr, "--config", conf, "--metrics-addr", "", "--grpc-addr", ""}})
	if err != nil {
		return res, err
	}
	procs = append(procs, ap)
	entry := func() *golivev1.ScaleEntry {
		st, err := cc.ScaleStatus(cctx, &golivev1.ScaleStatusRequest{Service: "app"})
		if err != nil || len(st.Entries) != 1 {
			return nil
		}
		return st.Entries[0]
	}
	if err := waitFor(ctx, 60*time.Second, func() bool { e := entry(); return e != nil && e.AgentState == "connected" }); err != nil {
		return res, fmt.Errorf("agent connected: %w (agent log: %s)", err, ap.LogTail(20))
	}

	url := "http://" + benchkit.LoopbackAddr(fe[0]) + "/"
	logf("deploying v1 under light load")
	light, err := load(ctx, url, 20)
	if err != nil {
		return res, err
	}
	dr, err := cc.Deploy(cctx, &golivev1.DeployRequest{Service: "app", Release: "v1", ArtifactUrl: art.URL + "/sampleapp-v1.tar.gz",
		Sha256: hex.EncodeToString(sum[:]), MinHealthy: durationpb.New(3 * time.Second), MinRequests: 10})
	if err != nil {
		light()
		return res, err
	}
	var state string
	err = waitFor(ctx, 120*time.Second, func() bool {
		r, err := cc.GetRollout(cctx, &golivev1.GetRolloutRequest{Id: dr.Rollout.Id})
		state = r.GetRollout().GetState()
		return err == nil && (state == "succeeded" || state == "failed" || state == "rolled_back" || state == "halted")
	})
	light()
	if err != nil || state != "succeeded" {
		return res, fmt.Errorf("deploy of v1: %s %v", state, err)
	}

	logf("%g rps for %s", o.Base, o.Hold)
	stop, err := load(ctx, url, o.Base)
	if err != nil {
		return res, err
	}
	sleep(ctx, o.Hold)
	res.Before = stop().Summary()

	logf("step to %g rps", o.Peak)
	stop, err = load(ctx, url, o.Peak)
	if err != nil {
		return res, err
	}
	step := time.Now()
	err = waitFor(ctx, 180*time.Second, func() bool {
		e := entry()
		if e == nil {
			return false
		}
		now := time.Since(step)
		if res.FirstAction == 0 && e.LastAction != nil && e.LastAction.Actor == "controller" && e.LastAction.At.AsTime().After(step) {
			res.FirstAction = e.LastAction.At.AsTime().Sub(step)
		}
		if res.FirstServing == 0 && e.Instances > 1 {
			res.FirstServing = now
		}
		if e.Instances == uint32(o.Max) {
			res.AllServing = now
			return true
		}
		return false
	})
	if err != nil {
		stop()
		return res, fmt.Errorf("scaling to %d: %w", o.Max, err)
	}
	sleep(ctx, o.Hold)
	res.During = stop().Summary()

	logf("back to %g rps", o.Base)
	stop, err = load(ctx, url, o.Base)
	if err != nil {
		return res, err
	}
	fall := time.Now()
	err = waitFor(ctx, 300*time.Second, func() bool { e := entry(); return e != nil && e.Instances == 1 && e.DesiredInstances == 1 })
	res.DownAfter = time.Since(fall)
	sleep(ctx, 5*time.Second)
	res.Down = stop().Summary()
	if err != nil {
		return res, fmt.Errorf("scaling back to 1: %w", err)
	}
	au, err := cc.ListAudit(cctx, &golivev1.ListAuditRequest{Action: "scale"})
	if err == nil {
		res.Actions = len(au.Entries)
	}
	return res, nil
}

// PrintTable prints res.
func PrintTable(w io.Writer, r Result) error {
	o := r.Opts
	fmt.Fprintf(w, "scaling: %g -> %g -> %g rps through HAProxy, %g rps per instance, max %d, interval 1s, cooldown 2s, window %s, traffic window 30s\n",
		o.Base, o.Peak, o.Base, o.Target, o.Max, o.Window)
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "phase\trequests\tfailed\tp50 ms\tp99 ms\t")
	for _, p := range []struct {
		name string
		s    loadgen.Summary
	}{{"before (1 instance)", r.Before}, {"during (scale-up, at peak)", r.During}, {"after (scale-down)", r.Down}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t\n", p.name, p.s.Requests, p.s.Failed, benchkit.Ms(p.s.Latency.P50), benchkit.Ms(p.s.Latency.P99))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "from the step: first action %ss, first new instance serving %ss, all %d serving %ss; back to 1 instance %ss after the fall; %d audited actions; failed requests: %d up, %d down (goal 0): %s\n",
		benchkit.Sec(r.FirstAction), benchkit.Sec(r.FirstServing), o.Max, benchkit.Sec(r.AllServing), benchkit.Sec(r.DownAfter), r.Actions,
		r.During.Failed, r.Down.Failed, benchkit.MetWord(r.During.Failed == 0 && r.Down.Failed == 0))
	return err
}

func load(ctx context.Context, url string, rate float64) (func() loadgen.Result, error) {
	g, err := loadgen.New(loadgen.Options{URL: url, Rate: rate, Duration: 30 * time.Minute, Timeout: 5 * time.Second, Concurrency: 256})
	if err != nil {
		return nil, err
	}
	done := make(chan loadgen.Result, 1)
	go func() {
		r, _ := g.Run(ctx)
		done <- r
	}()
	return func() loadgen.Result { g.Stop(); return <-done }, nil
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// portRange finds n consecutive free loopback ports.
func portRange(n int) (int, error) {
	for range 200 {
		ps, err := benchkit.FreePorts(1)
		if err != nil {
			return 0, err
		}
		ok := true
		for p := ps[0]; p < ps[0]+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return ps[0], nil
		}
	}
	return 0, errors.New("no free port range")
}
