package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/health"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/svcmgr"
	"github.com/golive/golive/internal/svcmgr/execmgr"
	"github.com/golive/golive/internal/svcmgr/systemd"
)

// Executor runs one service's commands (deploystep.Runner is one).
type Executor interface {
	Run(ctx context.Context, cmd deploystep.Command, progress func(stage string)) deploystep.Result
}

// Manager is what the agent needs of a service's process supervisor.
type Manager interface {
	Start(ctx context.Context, spec svcmgr.Spec) error
	Stop(ctx context.Context) error
	Running() bool
}

// Service is a service this host runs. Only Name is required: without an
// Executor the agent reports the service and refuses its commands.
type Service struct {
	Name     string
	SwapMode string
	Exec     Executor
	Dir      *releasedir.Dir
	Manager  Manager
	Prober   *health.Prober
	// StopOnExit stops the service when the agent exits cleanly (services
	// the agent supervises itself; systemd units stay up).
	StopOnExit bool
	// Port is the port the current release listens on (blue-green: the
	// serving slot's when the agent started; the runner's ServingPort
	// follows switches).
	Port int
	// Recovered is the result of a step a crash interrupted, reported once
	// the agent connects.
	Recovered *deploystep.Result
	// Config is the service's configuration (nil for services built by
	// hand in tests); StateDir is the agent's state_dir and BackupDir where
	// the service's database backups go.
	Config    *agentconfig.Service
	StateDir  string
	BackupDir string
	// ActiveSlot, for a blue-green service, names the slot serving its
	// traffic (reported in heartbeats).
	ActiveSlot func() string
	// ServingPort, for a blue-green service, is the serving slot's port as
	// it follows switches (nil: Port).
	ServingPort func() int
	// closers release what the service owns beyond Manager (the blue-green
	// slot managers, the keep-warm timers, the traffic reader).
	closers []func()
	// traffic measures the real traffic through the service's load
	// balancer (nil: none configured); see traffic.go.
	traffic *serviceTraffic
	// instances, for a service with a scale block, runs its instances
	// (scale.go); Manager and the runner's manager are it.
	instances *instances
}

// ServicesFromConfig builds every configured service: its supervisor, its
// deploy step runner (recovering a step a crash interrupted), its health
// prober; it starts the current release when it is not running. The
// returned close stops probers (and exec services when asked to).
func ServicesFromConfig(ctx context.Context, cfg *agentconfig.Config, log hclog.Logger, reg prometheus.Registerer) ([]Service, error) {
	keys, err := artifact.LoadPublicKeys(cfg.TrustedKeys...)
	if err != nil && len(cfg.TrustedKeys) > 0 {
		return nil, fmt.Errorf("trusted_keys: %w", err)
	}
	hm, err := health.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	tm, err := newTrafficMetrics(reg)
	if err != nil {
		return nil, err
	}
	im, err := newInstanceMetrics(reg)
	if err != nil {
		return nil, err
	}
	var out []Service
	for _, sc := range cfg.Services {
		s, err := buildService(ctx, cfg, sc, keys, hm, im, log)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", sc.Name, err)
		}
		if s.traffic, err = newServiceTraffic(sc, tm, log); err != nil {
			return nil, fmt.Errorf("service %q: traffic: %w", sc.Name, err)
		}
		if s.traffic != nil {
			s.traffic.start()
			s.closers = append(s.closers, s.traffic.stop)
		}
		out = append(out, s)
	}
	return out, nil
}

func buildService(ctx context.Context, cfg *agentconfig.Config, sc *agentconfig.Service, keys []ed25519.PublicKey, hm *health.Metrics, im *instanceMetrics, log hclog.Logger) (Service, error) {
	if sc.SwapMode == agentconfig.SwapBlueGreen {
		return buildBlueGreen(ctx, cfg, sc, keys, hm, log)
	}
	s := Service{Name: sc.Name, SwapMode: string(sc.SwapMode), Port: sc.Port, Config: sc, StateDir: cfg.StateDir, BackupDir: cfg.BackupDir(sc)}
	var mgr interface {
		Manager
		deploystep.ServiceManager
	}
	switch sc.Manager {
	case agentconfig.ManagerSystemd:
		m, err := systemd.New(systemd.Config{Unit: sc.UnitName(""), Logger: log})
		if err != nil {
			return s, err
		}
		mgr = m
	default:
		// A start is judged by the deploy's health check (K successes); the
		// manager only needs to catch an immediate exit.
		ec := execmgr.Config{Name: sc.Name, Command: sc.Command(sc.Port), LogFile: cfg.LogFile(sc), Logger: log, StartGrace: 300 * time.Millisecond}
		if sc.Exec != nil {
			ec.EnvFile, ec.StopTimeout = sc.Exec.EnvFile, sc.Exec.StopTimeout
		}
		m, err := execmgr.New(ec)
		if err != nil {
			return s, err
		}
		mgr = m
		s.StopOnExit = true
	}
	s.Manager = mgr
	var stepMgr deploystep.ServiceManager = mgr
	if sc.Scale != nil {
		unit := sc.Name
		if sc.Manager == agentconfig.ManagerSystemd {
			unit = sc.UnitName("")
		}
		in, err := newInstances(cfg, sc, mgr.(instanceManager), unit, im, log)
		if err != nil {
			return s, err
		}
		s.instances, s.Manager, stepMgr = in, in, in
		s.closers = append(s.closers, in.Close)
		if c, ok := mgr.(interface{ Close() error }); ok {
			s.closers = append(s.closers, func() { c.Close() })
		}
	}
	r, err := deploystep.New(deploystep.Config{
		StateDir: filepath.Join(cfg.StateDir, "services"), Service: sc, Manager: stepMgr, Artifacts: cfg.Artifacts,
		TrustedKeys: keys, Logger: log, BackupDir: s.BackupDir, HostID: cfg.HostID,
	})
	if err != nil {
		return s, err
	}
	s.Exec, s.Dir = r, r.Dir()
	if s.instances != nil {
		s.instances.dir = r.Dir()
	}
	currentSpec := func() (svcmgr.Spec, bool) {
		cur, err := r.Dir().Current()
		if err != nil || cur == "" {
			return svcmgr.Spec{}, false
		}
		path, err := r.Dir().ReleasePath(cur)
		return svcmgr.Spec{ReleaseDir: path, Port: sc.Port, Env: sc.Env(sc.Port)}, err == nil
	}
	// A previous agent killed -9 leaves its service running: adopt it when
	// it runs the current release (no restart), else it is stopped first.
	if a, ok := mgr.(interface {
		Adopt(context.Context, svcmgr.Spec) (bool, error)
	}); ok {
		if spec, ok := currentSpec(); ok {
			if adopted, err := a.Adopt(ctx, spec); err != nil {
				log.Warn("cannot adopt the running service", "service", sc.Name, "error", err)
			} else if adopted {
				log.Info("adopted the service a previous agent started", "service", sc.Name)
			}
		}
	}
	if s.Recovered, err = r.Recover(ctx); err != nil {
		return s, fmt.Errorf("recover the step a crash interrupted: %w", err)
	}
	if spec, ok := currentSpec(); ok && !mgr.Running() {
		if err := mgr.Start(ctx, spec); err != nil {
			log.Error("cannot start the current release", "service", sc.Name, "release", filepath.Base(spec.ReleaseDir), "error", err)
		}
	}
	if s.instances != nil {
		s.instances.reconcile(ctx)
	}
	if sc.Health.URL != "" {
		p, err := health.NewProber(health.ProberConfig{Service: sc.Name, Interval: sc.Health.Interval, Window: sc.Health.Window, Metrics: hm, Logger: log,
			Check: health.Check{URL: sc.HealthURL(sc.Port), ExpectStatus: sc.Health.ExpectStatus, Timeout: sc.Health.Timeout}})
		if err != nil {
			return s, err
		}
		p.Start()
		s.Prober = p
	}
	return s, nil
}

// closeServices stops probers and the services the agent supervises.
func closeServices(services []Service, log hclog.Logger) {
	for _, s := range services {
		if s.Prober != nil {
			s.Prober.Stop()
		}
		if s.StopOnExit && s.Manager != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := s.Manager.Stop(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("stop service", "service", s.Name, "error", err)
			}
			cancel()
		}
		if c, ok := s.Manager.(interface{ Close() error }); ok {
			c.Close()
		}
		for _, c := range s.closers {
			c()
		}
	}
}
