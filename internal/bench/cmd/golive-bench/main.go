// Command golive-bench runs golive's benchmark programs and prints one
// table per benchmark (`make bench` builds the binaries first and runs it
// from the module root).
//
//	golive-bench [-only NAME] [-quick] [-controller PATH] [-agent PATH] [-modes M,M] [-agents N,N] [-rounds N] [-controller-env VAR=value] [-cpuprofile FILE] [-v]
//
// Benchmarks, in order:
//
//	fanout        revoke fan-out to 1,000, 5,000 and 10,000 simulated agents, 20 rounds each, in plaintext and with mutual TLS,
//	              the controller and (unless -baseline=false) the naive grpc-go baseline server side by side
//	etcd-budget   etcd writes/s and database size of 10,000 idle agents whose health figures move with every heartbeat
//	idle          the controller's CPU with one connected agent
//	reconnect     10,000 mutual-TLS agents reconnecting after a controller restart (SIGTERM, then SIGKILL)
//	fetch-unpack  200 MB fetch+verify+unpack vs curl|tee|tar
//	swaps         20,000 swaps of current with 4 readers
//	swapload      requests failed during one restart-mode deploy at 500 rps (3s steady, 2s after)
//	bluegreen     20 deploy/rollback steps under 1,000 rps (100,000 requests plus a new-connection check load): blue-green
//	              through nginx, then HAProxy (deploystep.Runner), restart mode for comparison, then blue-green through
//	              nginx and HAProxy driven by the controller and agent binaries (Deploy/Rollback calls); 20 reverts each
//	rollout       canary 1 + 25% waves on 100 real agents (bin/golive-agent), then the fleet rollback when one host fails health
//	rollout1000   1,000 simulated agents (real streams, fake executor) through a preflight, a canary + 10% waves deploy with gates,
//	              a deploy whose third wave fails and is rolled back, and an abort: time, controller CPU per host, etcd writes per host,
//	              the most writes in one etcd transaction
//	traffic-gate  the real-traffic gate at 1,000 rps through nginx (controller and agent binaries): first bad answer to rollback
//	              for v4 (5% 500s) and v5 (+300 ms) with --min-healthy 30s, false rollbacks over 20 good rollouts with
//	              --min-healthy 10s, the agent's CPU, and the access log follower's CPU at 1,000 and 10,000 lines/s
//	db            restore-verified backup (dbbackup.BackupAndVerify) of a ~1 GB PostgreSQL database vs pg_dump -Fc then pg_restore, 3 runs each
//	dns           DNS failover on real BIND (controller binary, checks every 1s, threshold 3, under an approval): primary pool bad to
//	              the authoritative server answering the secondary, 5 runs; then 200 confirmed updates each against BIND and Knot
//	scaling       scaling by demand through HAProxy (controller and agent binaries, under an approval): step 200 -> 1,000 rps:
//	              seconds until new instances serve, requests failed during scale-up and scale-down, p99 before/during/after
//
// -quick runs each at a small size (fan-out 100 and 500 agents, 5 rounds;
// reconnect 200 agents;
// 20 MB; 2,000 swaps; swapload 1s steady and 1s after; bluegreen 200 rps,
// 4 switches, 4,000 requests and 5 reverts; rollout 10 hosts;
// db 50 MB; traffic-gate 200 rps and 4 good rollouts). The exit status is 1
// if any benchmark failed to run; a missed target is reported in its table,
// not in the exit status.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/golive/golive/internal/bench/baseline"
	"github.com/golive/golive/internal/bench/bluegreen"
	"github.com/golive/golive/internal/bench/dbbench"
	"github.com/golive/golive/internal/bench/fanout"
	"github.com/golive/golive/internal/bench/reconnectbench"
	"github.com/golive/golive/internal/bench/releasebench"
	"github.com/golive/golive/internal/bench/rolloutbench"
	"github.com/golive/golive/internal/bench/swapload"
	"github.com/golive/golive/internal/bench/trafficgate"
)

type bench struct {
	name string
	run  func(ctx context.Context, w io.Writer, cfg config) error
}

type config struct {
	quick      bool
	controller string
	agent      string
	modes      []string
	agents     []int
	env        []string
	rounds     int
	progress   io.Writer
	// before is a controller binary (e.g. built from an older commit) the
	// etcd-budget and idle modes also run, side by side.
	before string
	window time.Duration
	// baseline runs the naive fan-out server beside the controller.
	baseline  bool
	pprofAddr string
}

var benches = []bench{
	{"fanout", runFanout},
	{"etcd-budget", runBudget},
	{"idle", runIdle},
	{"reconnect", runReconnect},
	{"fetch-unpack", runFetchUnpack},
	{"swaps", runSwaps},
	{"swapload", runSwapload},
	{"bluegreen", runBlueGreen},
	{"rollout", runRollout},
	{"rollout1000", runRollout1000},
	{"traffic-gate", runTrafficGate},
	{"db", runDB},
	{"dns", runDNS},
	{"scaling", runScaling},
}

func main() {
	// `golive-bench serve ...` is the naive baseline server the fanout
	// benchmark starts in place of the controller.
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(baseline.Main(os.Args[2:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("golive-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names []string
	for _, b := range benches {
		names = append(names, b.name)
	}
	only := fs.String("only", "", "run only this benchmark: "+strings.Join(names, ", "))
	quick := fs.Bool("quick", false, "small sizes, for a quick look")
	ctrl := fs.String("controller", "bin/golive-controller", "controller binary for the fan-out benchmark")
	agentBin := fs.String("agent", "bin/golive-agent", "agent binary for the bluegreen benchmark's agent-* modes")
	bgModes := fs.String("modes", "", "bluegreen modes, comma-separated (default nginx,haproxy,restart,agent-nginx,agent-haproxy)")
	agents := fs.String("agents", "", "fan-out and reconnect sizes, comma-separated (default fan-out 1000,5000, reconnect 5000; -quick 100,500 and 200)")
	rounds := fs.Int("rounds", 0, "fan-out rounds (default 20; -quick 5); traffic-gate: good rollouts (default 20; -quick 4)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process (the simulated agents) to FILE")
	var env envFlag
	fs.Var(&env, "controller-env", "VAR=value added to the controller's environment (repeatable), e.g. GOGC=50")
	verbose := fs.Bool("v", false, "print progress to stderr")
	before := fs.String("before-controller", "", "etcd-budget and idle: also run this controller binary (e.g. built from an older commit), side by side")
	pprofAddr := fs.String("pprof-addr", "", "fanout and rollout1000: start the controller (not the baseline) with --pprof-addr ADDR, to profile it while it runs")
	withBaseline := fs.Bool("baseline", true, "fanout: run the naive grpc-go baseline server (internal/bench/baseline) beside the controller, same sizes, same run")
	window := fs.Duration("window", 0, "etcd-budget and idle: how long to measure (default 60s and 30s; -quick 20s and 10s)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var sizes []int
	if *agents != "" {
		for f := range strings.SplitSeq(*agents, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "golive-bench: -agents %q: want positive numbers separated by commas\n", *agents)
				return 2
			}
			sizes = append(sizes, n)
		}
	}
	if *rounds < 0 {
		fmt.Fprintf(stderr, "golive-bench: -rounds %d: want a positive number\n", *rounds)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "golive-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *only != "" && !slices.Contains(names, *only) {
		fmt.Fprintf(stderr, "golive-bench: -only %q: want one of %s\n", *only, strings.Join(names, ", "))
		return 2
	}
	cfg := config{quick: *quick, controller: *ctrl, agent: *agentBin, modes: splitList(*bgModes), agents: sizes, env: env, rounds: *rounds, progress: io.Discard, before: *before, window: *window, baseline: *withBaseline, pprofAddr: *pprofAddr}
	if *verbose {
		cfg.progress = stderr
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "golive-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "golive-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	failed := 0
	for _, b := range benches {
		if *only != "" && b.name != *only {
			continue
		}
		fmt.Fprintf(stdout, "== %s\n", b.name)
		if err := b.run(ctx, stdout, cfg); err != nil {
			fmt.Fprintf(stdout, "%s: FAILED: %v\n", b.name, err)
			failed++
		}
		fmt.Fprintln(stdout)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "golive-bench: interrupted")
			return 1
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func runFanout(ctx context.Context, w io.Writer, cfg config) error {
	sizes, rounds := []int{1000, 5000, 10000}, 20
	if cfg.quick {
		sizes, rounds = []int{100, 500}, 5
	}
	if len(cfg.agents) > 0 {
		sizes = cfg.agents
	}
	if cfg.rounds > 0 {
		rounds = cfg.rounds
	}
	servers := []struct{ label, bin string }{{"golive", cfg.controller}}
	if cfg.baseline {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		servers = append(servers, struct{ label, bin string }{"baseline", self})
	}
	var results []fanout.Result
	var errs []error
	// Each size in plaintext, then with mutual TLS; the controller, then
	// the baseline, back to back.
runs:
	for _, n := range sizes {
		for _, withTLS := range []bool{false, true} {
			for _, sv := range servers {
				var args []string
				if cfg.pprofAddr != "" && sv.label == "golive" {
					args = []string{"--pprof-addr", cfg.pprofAddr}
				}
				res, err := fanout.Run(ctx, fanout.Options{N: n, Rounds: rounds, ControllerBin: sv.bin, ControllerArgs: args, Label: sv.label, ControllerEnv: cfg.env, Log: cfg.progress, TLS: withTLS})
				if err != nil {
					errs = append(errs, fmt.Errorf("%s N=%d TLS=%v: %w", sv.label, n, withTLS, err))
					if res.N == 0 {
						continue // nothing measured
					}
				}
				results = append(results, res)
				if ctx.Err() != nil {
					break runs
				}
			}
		}
	}
	if len(results) > 0 {
		if err := fanout.PrintTable(w, results...); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// budgetRuns runs f for the controller under test and, with
// -before-controller, for that one, one after the other (same machine, same
// minute: compare their rows).
func budgetRuns(ctx context.Context, cfg config, o fanout.BudgetOptions, f func(context.Context, fanout.BudgetOptions) (fanout.BudgetResult, error)) ([]fanout.BudgetResult, error) {
	bins := []struct{ label, bin string }{{"golive", cfg.controller}}
	if cfg.before != "" {
		bins = append(bins, struct{ label, bin string }{"before", cfg.before})
	}
	var out []fanout.BudgetResult
	var errs []error
	sizes := cfg.agents
	if len(sizes) == 0 {
		sizes = []int{o.N}
	}
	for _, n := range sizes {
		for _, b := range bins {
			o := o
			o.N, o.ControllerBin, o.Label, o.ControllerEnv, o.Log = n, b.bin, b.label, cfg.env, cfg.progress
			r, err := f(ctx, o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s N=%d: %w", b.label, n, err))
			}
			out = append(out, r)
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%v", errs)
	}
	return out, nil
}

func runBudget(ctx context.Context, w io.Writer, cfg config) error {
	o := fanout.BudgetOptions{N: 10000, Window: cfg.window}
	if cfg.quick {
		o.N, o.Settle = 500, 5*time.Second
		if o.Window == 0 {
			o.Window = 20 * time.Second
		}
	}
	rs, err := budgetRuns(ctx, cfg, o, fanout.RunBudget)
	if len(rs) > 0 {
		if perr := fanout.PrintBudget(w, rs...); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func runIdle(ctx context.Context, w io.Writer, cfg config) error {
	o := fanout.BudgetOptions{N: 1, Window: cfg.window}
	if cfg.quick && o.Window == 0 {
		o.Window = 10 * time.Second
	}
	rs, err := budgetRuns(ctx, cfg, o, fanout.RunIdle)
	if len(rs) > 0 {
		if perr := fanout.PrintIdle(w, rs...); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func runReconnect(ctx context.Context, w io.Writer, cfg config) error {
	sizes := []int{10000}
	if cfg.quick {
		sizes = []int{200}
	}
	if len(cfg.agents) > 0 {
		sizes = cfg.agents
	}
	var results []reconnectbench.Result
	var errs []error
runs:
	for _, n := range sizes {
		for _, kill := range []bool{false, true} {
			res, err := reconnectbench.Run(ctx, reconnectbench.Options{N: n, Kill: kill, ControllerBin: cfg.controller, ControllerEnv: cfg.env, Log: cfg.progress})
			if err != nil {
				errs = append(errs, fmt.Errorf("N=%d %s: %w", n, res.Signal, err))
				if res.InitialConnect == 0 {
					continue // nothing measured
				}
			}
			results = append(results, res)
			if ctx.Err() != nil {
				break runs
			}
		}
	}
	if len(results) > 0 {
		if err := reconnectbench.PrintTable(w, results...); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

func runFetchUnpack(ctx context.Context, w io.Writer, cfg config) error {
	size := 200
	if cfg.quick {
		size = 20
	}
	res, err := releasebench.FetchUnpack(ctx, size)
	if err != nil {
		return err
	}
	return printRelease(w, res)
}

func runSwaps(ctx context.Context, w io.Writer, cfg config) error {
	n := 20000
	if cfg.quick {
		n = 2000
	}
	res, err := releasebench.Swaps(ctx, n, 4)
	if err != nil {
		return err
	}
	return printRelease(w, res)
}

func runSwapload(ctx context.Context, w io.Writer, cfg config) error {
	opts := swapload.Options{Log: cfg.progress}
	if cfg.quick {
		opts.Steady, opts.After = time.Second, time.Second
	}
	res, err := swapload.Run(ctx, opts)
	if res.Total.Requests > 0 {
		if perr := swapload.PrintTable(w, res); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func runBlueGreen(ctx context.Context, w io.Writer, cfg config) error {
	opts := bluegreen.Options{Modes: cfg.modes, ControllerBin: cfg.controller, AgentBin: cfg.agent, Log: cfg.progress}
	if cfg.quick {
		opts.Rate, opts.Requests, opts.Switches, opts.RevertRuns = 200, 4000, 4, 5
	}
	res, err := bluegreen.Run(ctx, opts)
	if len(res) > 0 {
		if perr := bluegreen.PrintTable(w, res...); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func runRollout(ctx context.Context, w io.Writer, cfg config) error {
	opts := rolloutbench.Options{ControllerBin: cfg.controller, ControllerEnv: cfg.env, Log: cfg.progress}
	if cfg.quick {
		opts.Hosts = 10
	}
	res, err := rolloutbench.Run(ctx, opts)
	if res.Rollout > 0 {
		if perr := rolloutbench.PrintTable(w, res); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

func runDB(ctx context.Context, w io.Writer, cfg config) error {
	opts := dbbench.Options{SizeMB: 1024, Log: cfg.progress}
	if cfg.quick {
		opts.SizeMB = 50
	}
	res, err := dbbench.Run(ctx, opts)
	if len(res.Samples) > 0 {
		if perr := dbbench.PrintTable(w, res); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// splitList splits a comma-separated flag (nil when empty).
func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// envFlag collects repeated VAR=value flags.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want VAR=value", v)
	}
	*e = append(*e, v)
	return nil
}

// printRelease prints a releasebench result as a metric/value/unit table.
func printRelease(w io.Writer, r releasebench.Result) error {
	fmt.Fprintf(w, "%s (%s)\n", r.Name, r.Params)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  metric\tvalue\tunit")
	for _, m := range r.Metrics {
		fmt.Fprintf(tw, "  %s\t%.3f\t%s\n", m.Name, m.Value, m.Unit)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

func runTrafficGate(ctx context.Context, w io.Writer, cfg config) error {
	o := trafficgate.Options{ControllerBin: cfg.controller, AgentBin: cfg.agent, Log: cfg.progress}
	if cfg.quick {
		o.Rate, o.GoodRollouts, o.FollowFor = 200, 4, 3*time.Second
	}
	if cfg.rounds > 0 {
		o.GoodRollouts = cfg.rounds
	}
	res, err := trafficgate.Run(ctx, o)
	if perr := trafficgate.PrintTable(w, res); perr != nil && err == nil {
		err = perr
	}
	return err
}
