package fanout

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/golive/golive/internal/bench/benchkit"
)

// Targets of the etcd-budget and idle benchmarks.
const (
	// TargetWritesPerSec: key writes per second (puts, each a new version
	// of a key in etcd's history) of an idle fleet of 10,000 agents.
	TargetWritesPerSec = 50.0
	// TargetIdleCore: a controller with one agent uses under this share of
	// one core.
	TargetIdleCore = 0.005
)

// BudgetOptions configure an etcd-budget or idle run.
type BudgetOptions struct {
	// N simulated agents (default 10,000; idle: 1).
	N int
	// Window is how long etcd (and the controller's CPU) is watched once
	// the fleet is connected and Settle has passed (default 60s; idle 30s).
	Window, Settle time.Duration
	// Heartbeat is the controller's --heartbeat-interval (default 5s, the
	// production default).
	Heartbeat time.Duration
	// ControllerBin, ControllerArgs, ControllerEnv: as in Options.
	ControllerBin  string
	ControllerArgs []string
	ControllerEnv  []string
	// Label names the controller in the table (e.g. "golive", "before").
	Label string
	Log   io.Writer
}

// BudgetResult is what one run measured.
type BudgetResult struct {
	Label     string
	N         int
	Heartbeat time.Duration
	Window    time.Duration
	// Heartbeats the fleet sent during the window.
	Heartbeats int64
	// Revisions: etcd revisions (one per write transaction) in the window;
	// Puts: key versions written (what grows etcd's history); PutBytes:
	// their keys and values.
	Revisions, Puts, PutBytes int64
	// DBBefore/DBAfter: the backend's size at the window's start and end;
	// DBInUse at the end.
	DBBefore, DBAfter, DBInUse int64
	ConnectTime                time.Duration
	// ControllerCPU during the window.
	ControllerCPU time.Duration
	RSS           int64
	Err           error
}

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// WritesPerSec is Puts per second of the window.
func (r BudgetResult) WritesPerSec() float64 { return perSec(r.Puts, r.Window) }

// CoreShare is the controller's CPU as a share of one core.
func (r BudgetResult) CoreShare() float64 {
	if r.Window <= 0 {
		return 0
	}
	return r.ControllerCPU.Seconds() / r.Window.Seconds()
}

// RunBudget starts the controller, connects N agents whose health and
// traffic figures move with every heartbeat (as a real agent's do), lets
// the connects' own writes settle, then counts what etcd is written during
// the window: revisions, key versions (a watch on the whole keyspace) and
// the database's size.
func RunBudget(ctx context.Context, o BudgetOptions) (BudgetResult, error) {
	if o.N == 0 {
		o.N = 10000
	}
	if o.Window == 0 {
		o.Window = 60 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 15 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	res := BudgetResult{Label: o.Label, N: o.N, Heartbeat: o.Heartbeat, Window: o.Window}
	fail := func(err error) (BudgetResult, error) {
		res.Err = err
		return res, err
	}
	if err := benchkit.RaiseNoFile(uint64(o.N) + 256); err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "golive-budget-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	args := append([]string{"--heartbeat-interval", o.Heartbeat.String()}, o.ControllerArgs...)
	ctrl, err := benchkit.StartController(benchkit.ControllerSpec{Bin: o.ControllerBin, Dir: dir, Args: args, Env: o.ControllerEnv})
	if err != nil {
		return fail(err)
	}
	defer ctrl.Stop(15 * time.Second)
	fopts := Options{N: o.N, ControllerBin: o.ControllerBin, MovingFigures: true, Log: o.Log}
	if err := fopts.defaults(); err != nil {
		return fail(err)
	}
	if err := ctrl.WaitReady(ctx, fopts.PhaseTimeout); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, ctrl.LogTail(10)))
	}
	fleet := newFleet(fopts, ctrl.GRPCAddr)
	defer fleet.stop()
	start := time.Now()
	if err := fleet.connect(ctx); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, ctrl.LogTail(10)))
	}
	res.ConnectTime = time.Since(start)
	fmt.Fprintf(o.Log, "etcd-budget %s N=%d: connected in %s; settling %s\n", o.Label, o.N, res.ConnectTime.Round(time.Millisecond), o.Settle)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + benchkit.LoopbackAddr(ctrl.Ports[2])},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	ep := cli.Endpoints()[0]
	st0, err := cli.Status(ctx, ep)
	if err != nil {
		return fail(err)
	}
	res.DBBefore = st0.DbSize
	rev0 := st0.Header.Revision
	wctx, wcancel := context.WithCancel(ctx)
	var puts, bytes atomic.Int64
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for wr := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev0+1)) {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					puts.Add(1)
					bytes.Add(int64(len(ev.Kv.Key) + len(ev.Kv.Value)))
				}
			}
		}
	}()
	beats0, cpu0 := fleet.beats.Load(), cpuOf(ctrl)
	t0 := time.Now()
	select {
	case <-time.After(o.Window):
	case <-ctx.Done():
		wcancel()
		<-watched
		return fail(ctx.Err())
	}
	res.Window = time.Since(t0)
	res.ControllerCPU = cpuOf(ctrl) - cpu0
	res.Heartbeats = fleet.beats.Load() - beats0
	st1, err := cli.Status(ctx, ep)
	// Let the watch catch up with the last revision of the window.
	time.Sleep(time.Second)
	wcancel()
	<-watched
	if err != nil {
		return fail(err)
	}
	res.Revisions = st1.Header.Revision - rev0
	res.Puts, res.PutBytes = puts.Load(), bytes.Load()
	res.DBAfter, res.DBInUse = st1.DbSize, st1.DbSizeInUse
	res.RSS, _ = ctrl.RSS()
	if n := fleet.streamErrors(); n > 0 {
		return fail(fmt.Errorf("%d agent streams ended during the run", n))
	}
	return res, nil
}

// RunIdle is RunBudget with one agent (default), reporting the controller's
// CPU over the window.
func RunIdle(ctx context.Context, o BudgetOptions) (BudgetResult, error) {
	if o.N == 0 {
		o.N = 1
	}
	if o.Window == 0 {
		o.Window = 30 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 10 * time.Second
	}
	return RunBudget(ctx, o)
}

func cpuOf(c *benchkit.Controller) time.Duration {
	d, _ := c.CPU()
	return d
}

// PrintBudget prints etcd-budget rows.
func PrintBudget(w io.Writer, rs ...BudgetResult) error {
	fmt.Fprintln(w, "etcd write budget of an idle fleet (agents on real streams, health and traffic figures moving with every heartbeat):")
	fmt.Fprintln(w, "puts are key versions written (what etcd's history holds until compaction), revisions are write transactions.")
	tw := benchkit.NewTable(w)
	fmt.Fprintf(tw, "controller\tN\theartbeat\twindow s\theartbeats/s\tputs/s\trevisions/s\tKB/s written\tdb MB start\tdb MB end\tin use MB\tcontroller CPU %%\t<= %.0f puts/s\t\n", TargetWritesPerSec)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.0f\t%.1f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t\n", r.Label, r.N, r.Heartbeat, r.Window.Seconds(),
			perSec(r.Heartbeats, r.Window), r.WritesPerSec(), perSec(r.Revisions, r.Window), perSec(r.PutBytes, r.Window)/1024,
			mb(r.DBBefore), mb(r.DBAfter), mb(r.DBInUse), 100*r.CoreShare(), benchkit.MetWord(r.Err == nil && r.WritesPerSec() <= TargetWritesPerSec))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(w, "  %s N=%d: stopped early: %v\n", r.Label, r.N, benchkit.FirstLine(r.Err.Error()))
		}
		if r.Puts > 0 {
			// Time until a 2 GiB quota at this rate, without compaction.
			secs := float64(2<<30) / perSec(r.PutBytes, r.Window)
			fmt.Fprintf(w, "  %s N=%d: %d puts (%.1f MB) in %.0fs; without compaction a 2 GiB quota would fill in %s\n", r.Label, r.N,
				r.Puts, mb(r.PutBytes), r.Window.Seconds(), time.Duration(secs*float64(time.Second)).Round(time.Minute))
		}
	}
	return nil
}

// PrintIdle prints idle rows.
func PrintIdle(w io.Writer, rs ...BudgetResult) error {
	fmt.Fprintln(w, "Idle controller: CPU over the window with the agents connected (heartbeats at the given interval).")
	tw := benchkit.NewTable(w)
	fmt.Fprintf(tw, "controller\tagents\theartbeat\twindow s\tCPU ms\t%% of a core\tetcd revisions\tRSS MB\t< %.1f%% of a core\t\n", 100*TargetIdleCore)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.0f\t%.2f\t%d\t%.1f\t%s\t\n", r.Label, r.N, r.Heartbeat, r.Window.Seconds(),
			float64(r.ControllerCPU)/float64(time.Millisecond), 100*r.CoreShare(), r.Revisions, mb(r.RSS),
			benchkit.MetWord(r.Err == nil && r.CoreShare() < TargetIdleCore))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  CPU is read from /proc in %s ticks.\n", benchkit.ClockTick)
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(w, "  %s: stopped early: %v\n", r.Label, benchkit.FirstLine(r.Err.Error()))
		}
	}
	return nil
}
