package agent

// Instances of a scaled service (issue 17).
//
// A restart-mode service with a scale block runs between min and max
// instances on this host. Instance 0 is the service as it runs unscaled
// (its unit or process, its port); instance i >= 1 listens on
// agentconfig.Service.InstancePort(port, i), as exec process "<name>-i" or
// systemd unit "<unit base>@i.service". The agent keeps the router's pool
// (router.Pool) equal to the instances that are healthy:
//
//	        start         healthy on its port       Remove + drained
//	(none) ──────▶ starting ──────────────▶ serving ──────────────▶ stopping ──▶ (none)
//	                  │ not healthy by the deadline
//	                  ▼
//	               failed (stopped, never in the router)
//
// One operation at a time (instances.op): a scale, a deploy's rolling
// restart (instances is the deploy step's ServiceManager: Restart replaces
// every instance one at a time, out of the router, drained, restarted,
// healthy, back in), or the reconcile at start. The count the agent
// converges to (desired) is persisted atomically in the service's dir
// before any instance is started or stopped, so an agent killed mid-scale
// converges to it after a restart: it adopts the instances still running
// (execmgr pidfiles; systemd units keep running), starts the missing ones,
// stops the extra ones, and makes the router list exactly the healthy ones.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/atomicfile"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/health"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/svcmgr"
	"github.com/golive/golive/internal/svcmgr/execmgr"
	"github.com/golive/golive/internal/svcmgr/systemd"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Instance states (InstanceState.state).
const (
	instStarting = "starting"
	instServing  = "serving"
	instDraining = "draining"
	instStopping = "stopping"
	instFailed   = "failed"
)

var instStates = []string{instStarting, instServing, instDraining, instStopping, instFailed}

// instanceMetrics is golive_agent_instances{service,state}.
type instanceMetrics struct{ gauge *prometheus.GaugeVec }

func newInstanceMetrics(reg prometheus.Registerer) (*instanceMetrics, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "golive_agent_instances",
		Help: "Instances of a scaled service on this host, by state (starting, serving, draining, stopping, failed)."}, []string{"service", "state"})
	if err := reg.Register(g); err != nil {
		return nil, err
	}
	return &instanceMetrics{gauge: g}, nil
}

type instanceManager interface {
	svcmgr.Manager
	Close() error
}

// instance is one instance's supervisor and observed state.
type instance struct {
	idx  int
	port int
	unit string
	mgr  instanceManager
	// guarded by instances.mu
	state             string // "" when not running
	healthy, inRouter bool
	release           string
	cpuTicks          uint64
	cpuAt             time.Time
	cpu               float64
}

// instances runs a scaled service's instances.
type instances struct {
	sc        *agentconfig.Service
	log       hclog.Logger
	pool      router.Pool
	stateFile string
	metrics   *instanceMetrics
	dir       *releasedir.Dir // set once the runner is built

	op sync.Mutex // one operation at a time
	mu sync.Mutex // guards the fields below and the instances' state
	// desired is the count the agent converges to.
	desired int
	list    []*instance
}

var _ deploystep.ServiceManager = (*instances)(nil)

// newInstances builds the supervisors of every possible instance of sc;
// first is instance 0's (the service's own manager).
func newInstances(cfg *agentconfig.Config, sc *agentconfig.Service, first instanceManager, firstUnit string, m *instanceMetrics, log hclog.Logger) (*instances, error) {
	sd := cfg.ServiceDir(sc.Name)
	pool, err := router.NewPool(sc.Scale.Router, router.PoolOptions{Service: sc.Name, Server: haproxyServer(sc),
		StateFile: filepath.Join(sd, "router-instances.json"), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("scale.router: %w", err)
	}
	in := &instances{sc: sc, log: log.Named("instances").With("service", sc.Name), pool: pool,
		stateFile: filepath.Join(sd, "instances.json"), metrics: m, desired: sc.Scale.Min}
	for i := 0; i < sc.Scale.Max; i++ {
		port := sc.InstancePort(sc.Port, i)
		inst := &instance{idx: i, port: port}
		if i == 0 {
			inst.mgr, inst.unit = first, firstUnit
		} else {
			switch sc.Manager {
			case agentconfig.ManagerSystemd:
				inst.unit = instanceUnit(sc.Unit, i)
				mm, err := systemd.New(systemd.Config{Unit: inst.unit, Logger: log,
					EnvFile: filepath.Join(sd, "instance-"+strconv.Itoa(i)+".env")})
				if err != nil {
					return nil, err
				}
				inst.mgr = mm
			default:
				inst.unit = sc.Name + agentconfig.InstanceName(i)
				ec := execmgr.Config{Name: inst.unit, Command: sc.Command(port), LogFile: instanceLogFile(cfg.LogFile(sc), i),
					Logger: log, StartGrace: 300 * time.Millisecond}
				if sc.Exec != nil {
					ec.EnvFile, ec.StopTimeout = sc.Exec.EnvFile, sc.Exec.StopTimeout
				}
				mm, err := execmgr.New(ec)
				if err != nil {
					return nil, err
				}
				inst.mgr = mm
			}
		}
		in.list = append(in.list, inst)
	}
	return in, nil
}

// haproxyServer is the name of instance 0's server in the HAProxy backend:
// traffic.server when the traffic block reads the same backend, else the
// service's name.
func haproxyServer(sc *agentconfig.Service) string {
	if t := sc.Traffic; t != nil && t.Source == agentconfig.TrafficHAProxy && t.Server != "" {
		return t.Server
	}
	return sc.Name
}

// instanceUnit is the systemd unit of instance i >= 1: "app.service" ->
// "app@1.service" (a template unit app@.service).
func instanceUnit(unit string, i int) string {
	return strings.TrimSuffix(unit, ".service") + "@" + strconv.Itoa(i) + ".service"
}

// instanceLogFile is service.log -> service-1.log.
func instanceLogFile(path string, i int) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + agentconfig.InstanceName(i) + ext
}

// spec is the Spec of instance i for a release dir.
func (in *instances) spec(releaseDir string, i int) svcmgr.Spec {
	port := in.list[i].port
	return svcmgr.Spec{ReleaseDir: releaseDir, Port: port, Env: in.sc.Env(port)}
}

func (in *instances) currentDir() (string, error) {
	if in.dir == nil {
		return "", errors.New("no release directory")
	}
	cur, err := in.dir.Current()
	if err != nil || cur == "" {
		return "", fmt.Errorf("no release is live for service %q yet: deploy one first", in.sc.Name)
	}
	return in.dir.ReleasePath(cur)
}

func (in *instances) set(inst *instance, f func(*instance)) {
	in.mu.Lock()
	f(inst)
	in.mu.Unlock()
	in.updateMetrics()
}

func (in *instances) updateMetrics() {
	if in.metrics == nil {
		return
	}
	in.mu.Lock()
	counts := map[string]int{}
	for _, inst := range in.list {
		if inst.state != "" {
			counts[inst.state]++
		}
	}
	in.mu.Unlock()
	for _, s := range instStates {
		in.metrics.gauge.WithLabelValues(in.sc.Name, s).Set(float64(counts[s]))
	}
}

// persisted is the state file's content.
type persisted struct {
	Desired int    `json:"desired"`
	Reason  string `json:"reason,omitempty"`
}

func (in *instances) saveDesired(n int, reason string) error {
	data, _ := json.Marshal(persisted{Desired: n, Reason: reason})
	if err := os.MkdirAll(filepath.Dir(in.stateFile), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(in.stateFile, data, 0o644); err != nil {
		return fmt.Errorf("persist desired instances: %w", err)
	}
	in.mu.Lock()
	in.desired = n
	in.mu.Unlock()
	return nil
}

func (in *instances) loadDesired() int {
	n := in.sc.Scale.Min
	if data, err := os.ReadFile(in.stateFile); err == nil {
		var p persisted
		if json.Unmarshal(data, &p) == nil && p.Desired > 0 {
			n = p.Desired
		}
	}
	return min(max(n, in.sc.Scale.Min), in.sc.Scale.Max)
}

// Desired is the count the agent converges to.
func (in *instances) Desired() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.desired
}

func (in *instances) stopTimeout() time.Duration {
	if in.sc.Exec != nil && in.sc.Exec.StopTimeout > 0 {
		return in.sc.Exec.StopTimeout
	}
	return 10 * time.Second
}

// running counts the instances that run (any state).
func (in *instances) running() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for _, inst := range in.list {
		if inst.state != "" {
			n++
		}
	}
	return n
}

// waitHealthy waits until instance inst passes the service's health check
// on its own port (without a health URL: until it runs).
func (in *instances) waitHealthy(ctx context.Context, inst *instance) error {
	url := in.sc.HealthURL(inst.port)
	if url == "" {
		if !inst.mgr.Running() {
			return fmt.Errorf("instance %d is not running", inst.idx)
		}
		return nil
	}
	h := in.sc.Health
	if err := health.WaitHealthy(ctx, health.Check{URL: url, ExpectStatus: h.ExpectStatus, Timeout: h.Timeout}, h.Successes, h.Interval, h.Deadline); err != nil {
		return fmt.Errorf("instance %d (port %d) not healthy: %w", inst.idx, inst.port, err)
	}
	return nil
}

// bringUp starts instance inst on releaseDir (restart when it runs),
// waits until it is healthy and adds it to the router. On failure it is
// stopped and left failed, out of the router.
func (in *instances) bringUp(ctx context.Context, inst *instance, releaseDir string, restart bool) error {
	in.set(inst, func(i *instance) { i.state, i.healthy, i.release = instStarting, false, filepath.Base(releaseDir) })
	start := inst.mgr.Start
	if restart {
		start = inst.mgr.Restart
	}
	err := start(ctx, in.spec(releaseDir, inst.idx))
	if err == nil {
		err = in.waitHealthy(ctx, inst)
	}
	if err == nil {
		in.set(inst, func(i *instance) { i.healthy = true })
		if err = in.pool.Add(ctx, router.Member{Index: inst.idx, Port: inst.port}); err != nil {
			err = fmt.Errorf("add instance %d to the router: %w", inst.idx, err)
		}
	}
	if err != nil {
		// A start cut short (a halt) is no failure of the instance: it is
		// stopped, as if never started.
		state := instFailed
		if ctx.Err() != nil && inst.idx != 0 {
			state = ""
		}
		in.set(inst, func(i *instance) { i.state, i.healthy = state, false })
		if inst.idx != 0 {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			inst.mgr.Stop(sctx)
			cancel()
		}
		return err
	}
	in.set(inst, func(i *instance) { i.state, i.inRouter = instServing, true })
	return nil
}

// takeOut removes instance inst from the router and drains it.
func (in *instances) takeOut(ctx context.Context, inst *instance) error {
	in.set(inst, func(i *instance) { i.state = instDraining })
	err := in.pool.Remove(ctx, router.Member{Index: inst.idx, Port: inst.port}, in.sc.Scale.DrainTimeout)
	if err != nil && !errors.Is(err, router.ErrDrainTimeout) {
		in.set(inst, func(i *instance) { i.state = instServing })
		return fmt.Errorf("take instance %d out of the router: %w", inst.idx, err)
	}
	if err != nil {
		in.log.Warn("instance still had requests in flight at the drain timeout", "instance", inst.idx, "error", err)
	}
	in.set(inst, func(i *instance) { i.inRouter = false })
	return nil
}

// stopOne takes instance inst out of the router, drains and stops it.
func (in *instances) stopOne(ctx context.Context, inst *instance) error {
	if err := in.takeOut(ctx, inst); err != nil {
		return err
	}
	in.set(inst, func(i *instance) { i.state = instStopping })
	// The stop itself is not cut short by a halt: a half-stopped
	// instance out of the router serves nobody.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if err := inst.mgr.Stop(sctx); err != nil {
		in.set(inst, func(i *instance) { i.state = instFailed })
		return fmt.Errorf("stop instance %d: %w", inst.idx, err)
	}
	in.set(inst, func(i *instance) { i.state, i.healthy, i.release = "", false, "" })
	return nil
}

// Scale makes n instances serve: new ones are started (together), checked
// on their own ports and added to the router when healthy; extra ones are
// taken out of the router, drained and stopped (highest index first). The
// stages report each instance.
func (in *instances) Scale(ctx context.Context, n int, reason string) ([]deploystep.StageReport, error) {
	in.op.Lock()
	defer in.op.Unlock()
	if n < in.sc.Scale.Min || n > in.sc.Scale.Max {
		return nil, fmt.Errorf("%d instances is outside the scale block's [%d, %d]", n, in.sc.Scale.Min, in.sc.Scale.Max)
	}
	dir, err := in.currentDir()
	if err != nil && n > in.running() {
		return nil, err
	}
	if err := in.saveDesired(n, reason); err != nil {
		return nil, err
	}
	var (
		mu      sync.Mutex
		reports []deploystep.StageReport
		errs    []error
	)
	report := func(inst *instance, what string, began time.Time, err error) {
		r := deploystep.StageReport{Name: fmt.Sprintf("%s_instance_%d", what, inst.idx), Seconds: time.Since(began).Seconds()}
		if err != nil {
			r.Error = err.Error()
		} else if what == "start" {
			r.Note = fmt.Sprintf("instance %d healthy on port %d, in the router", inst.idx, inst.port)
		} else {
			r.Note = fmt.Sprintf("instance %d (port %d) out of the router, drained, stopped", inst.idx, inst.port)
		}
		mu.Lock()
		reports = append(reports, r)
		if err != nil {
			errs = append(errs, err)
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		inst := in.list[i]
		in.mu.Lock()
		up := inst.state == "" || inst.state == instFailed
		in.mu.Unlock()
		if !up {
			continue
		}
		restart := inst.mgr.Running()
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			report(inst, "start", began, in.bringUp(ctx, inst, dir, restart))
		}()
	}
	wg.Wait()
	for i := len(in.list) - 1; i >= n; i-- {
		inst := in.list[i]
		in.mu.Lock()
		down := inst.state != ""
		in.mu.Unlock()
		if !down {
			continue
		}
		began := time.Now()
		report(inst, "stop", began, in.stopOne(ctx, inst))
	}
	slicesSortReports(reports)
	if err := errors.Join(errs...); err != nil {
		// Converge to what serves: a failed start is not retried behind
		// the operator's or the controller's back.
		serving := 0
		in.mu.Lock()
		for _, inst := range in.list {
			if inst.state == instServing {
				serving++
			}
		}
		in.mu.Unlock()
		if serving != n && serving >= in.sc.Scale.Min {
			if serr := in.saveDesired(serving, "after a failed scale to "+strconv.Itoa(n)); serr != nil {
				in.log.Warn("persist desired instances", "error", serr)
			}
		}
		return reports, err
	}
	in.log.Info("scaled", "instances", n, "reason", reason)
	return reports, nil
}

func slicesSortReports(r []deploystep.StageReport) {
	for i := 1; i < len(r); i++ {
		for j := i; j > 0 && r[j].Name < r[j-1].Name; j-- {
			r[j], r[j-1] = r[j-1], r[j]
		}
	}
}

// Restart replaces every running instance with spec's release, one at a
// time (deploystep's restart stage, and its undo): with other instances
// serving, each is taken out of the router, drained, restarted, checked
// healthy and added back; a lone instance is restarted in place, as an
// unscaled service is.
func (in *instances) Restart(ctx context.Context, spec svcmgr.Spec) error {
	in.op.Lock()
	defer in.op.Unlock()
	for _, inst := range in.list {
		in.mu.Lock()
		runs := inst.state != "" || inst.idx == 0
		others := 0
		for _, o := range in.list {
			if o != inst && o.inRouter {
				others++
			}
		}
		routed := inst.inRouter
		in.mu.Unlock()
		if !runs {
			continue
		}
		if others == 0 {
			// Nothing else serves: restart in place (the deploy's health
			// stage checks it) and keep it listed in the router.
			in.set(inst, func(i *instance) { i.state, i.release = instStarting, filepath.Base(spec.ReleaseDir) })
			if err := inst.mgr.Restart(ctx, in.spec(spec.ReleaseDir, inst.idx)); err != nil {
				in.set(inst, func(i *instance) { i.state = instFailed })
				return err
			}
			if err := in.waitHealthy(ctx, inst); err != nil {
				in.set(inst, func(i *instance) { i.state, i.healthy = instFailed, false })
				return err
			}
			if err := in.pool.Add(ctx, router.Member{Index: inst.idx, Port: inst.port}); err != nil {
				return err
			}
			in.set(inst, func(i *instance) { i.state, i.healthy, i.inRouter = instServing, true, true })
			continue
		}
		if routed {
			if err := in.takeOut(ctx, inst); err != nil {
				return err
			}
		}
		if err := in.bringUp(ctx, inst, spec.ReleaseDir, true); err != nil {
			return err
		}
	}
	// A first deploy (or one after instances failed) starts the instances
	// the desired count still misses.
	for _, inst := range in.list[:in.Desired()] {
		in.mu.Lock()
		missing := inst.state == ""
		in.mu.Unlock()
		if missing {
			if err := in.bringUp(ctx, inst, spec.ReleaseDir, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// Start starts instance 0 (the agent's Manager; the reconcile starts the
// others).
func (in *instances) Start(ctx context.Context, spec svcmgr.Spec) error {
	return in.list[0].mgr.Start(ctx, spec)
}

// Stop stops every instance (the deploy step's undo of a first deploy).
func (in *instances) Stop(ctx context.Context) error {
	var errs []error
	for i := len(in.list) - 1; i >= 0; i-- {
		inst := in.list[i]
		if err := inst.mgr.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		in.set(inst, func(x *instance) { x.state, x.healthy, x.inRouter = "", false, x.idx == 0 && x.inRouter })
	}
	return errors.Join(errs...)
}

// Running reports whether instance 0 runs.
func (in *instances) Running() bool { return in.list[0].mgr.Running() }

// Close closes the supervisors of instances 1..max-1 (exec ones stop their
// process); instance 0's is closed with the service.
func (in *instances) Close() {
	for _, inst := range in.list[1:] {
		inst.mgr.Close()
	}
}

// reconcile runs at start: it converges to the persisted desired count and
// makes the router list exactly the healthy instances.
func (in *instances) reconcile(ctx context.Context) {
	in.op.Lock()
	defer in.op.Unlock()
	desired := in.loadDesired()
	in.mu.Lock()
	in.desired = desired
	in.mu.Unlock()
	dir, err := in.currentDir()
	if err != nil {
		in.log.Info("no release live yet: instances start with the first deploy", "desired", desired)
		return
	}
	// Adopt what a previous agent left running.
	for _, inst := range in.list {
		if inst.idx == 0 {
			if inst.mgr.Running() {
				in.set(inst, func(i *instance) { i.state, i.release = instStarting, filepath.Base(dir) })
			}
			continue
		}
		if a, ok := inst.mgr.(interface {
			Adopt(context.Context, svcmgr.Spec) (bool, error)
		}); ok {
			if adopted, err := a.Adopt(ctx, in.spec(dir, inst.idx)); err != nil {
				in.log.Warn("cannot adopt instance", "instance", inst.idx, "error", err)
			} else if adopted {
				in.set(inst, func(i *instance) { i.state, i.release = instStarting, filepath.Base(dir) })
			}
		} else if inst.mgr.Running() {
			in.set(inst, func(i *instance) { i.state, i.release = instStarting, filepath.Base(dir) })
		}
	}
	members, err := in.pool.Members(ctx)
	if err != nil {
		in.log.Warn("cannot read the router's instances", "error", err)
	}
	listed := map[int]bool{}
	for _, m := range members {
		if m.Index < len(in.list) && in.list[m.Index].port == m.Port {
			listed[m.Index] = true
		}
	}
	var wg sync.WaitGroup
	for _, inst := range in.list[:desired] {
		in.mu.Lock()
		runs := inst.state != ""
		in.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !runs {
				if pid, err := stopOrphan(inst.port, in.dir.Path(), in.stopTimeout()); err == nil && pid != 0 {
					in.log.Warn("stopped an instance process no pidfile named (an agent was killed as it started it)", "instance", inst.idx, "pid", pid, "port", inst.port)
				}
				if err := in.bringUp(ctx, inst, dir, false); err != nil {
					in.log.Error("cannot start instance", "instance", inst.idx, "error", err)
				}
				return
			}
			if err := in.waitHealthy(ctx, inst); err != nil {
				in.log.Warn("running instance is not healthy", "instance", inst.idx, "error", err)
				in.set(inst, func(i *instance) { i.state, i.healthy = instFailed, false })
				if listed[inst.idx] {
					if err := in.pool.Remove(ctx, router.Member{Index: inst.idx, Port: inst.port}, in.sc.Scale.DrainTimeout); err != nil {
						in.log.Warn("unhealthy instance stays in the router", "instance", inst.idx, "error", err)
						in.set(inst, func(i *instance) { i.inRouter = true })
					}
				}
				return
			}
			in.set(inst, func(i *instance) { i.healthy = true })
			if err := in.pool.Add(ctx, router.Member{Index: inst.idx, Port: inst.port}); err != nil {
				in.log.Error("cannot add instance to the router", "instance", inst.idx, "error", err)
				return
			}
			in.set(inst, func(i *instance) { i.state, i.inRouter = instServing, true })
		}()
	}
	wg.Wait()
	for i := len(in.list) - 1; i >= desired; i-- {
		inst := in.list[i]
		in.mu.Lock()
		runs := inst.state != ""
		in.mu.Unlock()
		if runs || listed[i] {
			in.set(inst, func(x *instance) { x.inRouter = listed[i] })
			if err := in.stopOne(ctx, inst); err != nil {
				in.log.Warn("cannot stop an instance beyond the desired count", "instance", i, "error", err)
			}
		}
	}
	in.log.Info("instances reconciled", "desired", desired, "running", in.running())
}

// proto reports the instances for a heartbeat (instance CPU measured over
// the time since the last report).
func (in *instances) proto() ([]*golivev1.InstanceState, uint32) {
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*golivev1.InstanceState
	for _, inst := range in.list {
		if inst.state == "" {
			continue
		}
		if p, ok := inst.mgr.(interface{ PID() int }); ok && p.PID() > 0 {
			if ticks, err := cpuTicks(p.PID()); err == nil {
				if !inst.cpuAt.IsZero() && ticks >= inst.cpuTicks {
					if dt := now.Sub(inst.cpuAt).Seconds(); dt > 0.05 {
						inst.cpu = float64(ticks-inst.cpuTicks) / clockTicks / dt
					}
				}
				inst.cpuTicks, inst.cpuAt = ticks, now
			}
		}
		out = append(out, &golivev1.InstanceState{Index: uint32(inst.idx), Port: uint32(inst.port), State: inst.state,
			Healthy: inst.healthy, InRouter: inst.inRouter, CpuCores: inst.cpu, Unit: inst.unit, Release: inst.release})
	}
	return out, uint32(in.desired)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's utime and stime.
const clockTicks = 100

// cpuTicks is utime+stime of pid.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable stat")
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(3) ... utime(14) stime(15): indexes 11, 12.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable stat times")
	}
	return u + st, nil
}

// policyProto is the scale block for the wire.
func policyProto(sc *agentconfig.Scale) *golivev1.ScalePolicy {
	return &golivev1.ScalePolicy{Min: uint32(sc.Min), Max: uint32(sc.Max), TargetRps: sc.TargetRPS, TargetCpu: sc.TargetCPU,
		Query: sc.Query, TargetValue: sc.TargetValue, Tolerance: sc.Tolerance, Interval: durationpb.New(sc.Interval),
		ScaleUpCooldown: durationpb.New(sc.ScaleUpCooldown), ScaleDownWindow: durationpb.New(sc.ScaleDownWindow), MaxStep: uint32(sc.MaxStep)}
}
