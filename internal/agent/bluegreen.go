package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/deploystep"
	"github.com/golive/golive/internal/health"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/svcmgr"
	"github.com/golive/golive/internal/svcmgr/execmgr"
	"github.com/golive/golive/internal/svcmgr/systemd"
)

// slotManager is what a blue-green slot's supervisor offers.
type slotManager interface {
	svcmgr.Manager
	Close() error
}

// buildBlueGreen builds a blue-green service: one supervisor per slot
// (systemd: the template's instances app@blue / app@green; exec: two
// processes with their own pidfiles and logs), its router, its deploy step
// runner (slots adopted, a crashed step recovered, the serving slot started
// on current, overdue keep-warm stops done), and a health prober through
// the router's probe URL (or, without one, on the serving slot's port at
// start).
func buildBlueGreen(ctx context.Context, cfg *agentconfig.Config, sc *agentconfig.Service, keys []ed25519.PublicKey, hm *health.Metrics, log hclog.Logger) (Service, error) {
	s := Service{Name: sc.Name, SwapMode: string(sc.SwapMode), Config: sc, StateDir: cfg.StateDir, BackupDir: cfg.BackupDir(sc)}
	if sc.BlueGreen == nil {
		return s, errors.New("swap_mode blue-green needs a blue_green block")
	}
	mgrs := map[router.Slot]slotManager{}
	for _, slot := range []router.Slot{router.Blue, router.Green} {
		port, _ := sc.SlotPort(string(slot))
		var m slotManager
		switch sc.Manager {
		case agentconfig.ManagerSystemd:
			// The template's instance finds its release and port in its
			// env file (EnvironmentFile=<service dir>/slot-%i.env:
			// GOLIVE_RELEASE_DIR, PORT), rewritten before each start.
			sm, err := systemd.New(systemd.Config{Unit: sc.UnitName(string(slot)), Logger: log,
				EnvFile: filepath.Join(cfg.ServiceDir(sc.Name), "slot-"+string(slot)+".env")})
			if err != nil {
				return s, err
			}
			m = sm
		default:
			ec := execmgr.Config{Name: sc.Name + "-" + string(slot), Command: sc.Command(port), LogFile: slotLogFile(cfg.LogFile(sc), slot),
				Logger: log, StartGrace: 300 * time.Millisecond}
			if sc.Exec != nil {
				ec.EnvFile, ec.StopTimeout = sc.Exec.EnvFile, sc.Exec.StopTimeout
			}
			em, err := execmgr.New(ec)
			if err != nil {
				return s, err
			}
			m = em
			s.StopOnExit = true
		}
		mgrs[slot] = m
		s.closers = append(s.closers, func() { _ = m.Close() })
	}
	rt, err := router.New(*sc.BlueGreen, router.Options{Service: sc.Name, StateDir: cfg.ServiceDir(sc.Name), Logger: log})
	if err != nil {
		return s, err
	}
	r, err := deploystep.New(deploystep.Config{
		StateDir: filepath.Join(cfg.StateDir, "services"), Service: sc, Artifacts: cfg.Artifacts,
		Slots:  deploystep.Slots{Blue: mgrs[router.Blue], Green: mgrs[router.Green]},
		Router: rt, TrustedKeys: keys, Logger: log, BackupDir: s.BackupDir, HostID: cfg.HostID,
	})
	if err != nil {
		return s, err
	}
	s.closers = append([]func(){r.Close}, s.closers...)
	s.Exec, s.Dir = r, r.Dir()
	s.Manager = bgManager{r: r, slots: mgrs}
	s.ActiveSlot = func() string {
		st, err := r.SlotState()
		if err != nil {
			return ""
		}
		return string(st.Serving)
	}
	// A previous agent killed -9 leaves its slots running: adopt them.
	r.Adopt(ctx)
	if s.Recovered, err = r.Recover(ctx); err != nil {
		return s, fmt.Errorf("recover the step a crash interrupted: %w", err)
	}
	if err := r.StartServing(ctx); err != nil {
		log.Error("cannot serve the current release", "service", sc.Name, "error", err)
	}
	s.Port = r.ServingPort()
	s.ServingPort = r.ServingPort
	if sc.Health.URL != "" {
		check := health.Check{URL: sc.HealthURL(s.Port), ExpectStatus: sc.Health.ExpectStatus, Timeout: sc.Health.Timeout}
		var follow func() string
		if u := throughRouter(sc.BlueGreen.Router.ProbeURL, check.URL); u != "" {
			check.URL = u
		} else {
			// No way through the router: probe the serving slot's own
			// port, whichever it is after the latest switch.
			follow = func() string { return sc.HealthURL(r.ServingPort()) }
		}
		p, err := health.NewProber(health.ProberConfig{Service: sc.Name, Interval: sc.Health.Interval, Window: sc.Health.Window, Metrics: hm, Logger: log,
			Check: check, URL: follow})
		if err != nil {
			return s, err
		}
		p.Start()
		s.Prober = p
	}
	return s, nil
}

// throughRouter is the health URL's path and query on the router's probe
// URL's scheme and host, so the prober follows the serving slot ("" without
// a probe URL).
func throughRouter(probeURL, healthURL string) string {
	if probeURL == "" {
		return ""
	}
	p, err := url.Parse(probeURL)
	if err != nil || p.Host == "" {
		return ""
	}
	h, err := url.Parse(healthURL)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: p.Scheme, User: p.User, Host: p.Host, Path: h.Path, RawQuery: h.RawQuery}).String()
}

// slotLogFile is the exec log file of a slot: service.log → service-blue.log.
func slotLogFile(path string, slot router.Slot) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + string(slot) + ext
}

// bgManager is the agent's view of a blue-green service's processes: it
// runs when the serving slot runs; Start serves the current release; Stop
// stops both slots.
type bgManager struct {
	r     *deploystep.Runner
	slots map[router.Slot]slotManager
}

func (m bgManager) Start(ctx context.Context, _ svcmgr.Spec) error { return m.r.StartServing(ctx) }

func (m bgManager) Stop(ctx context.Context) error {
	var errs []error
	for _, sm := range m.slots {
		errs = append(errs, sm.Stop(ctx))
	}
	return errors.Join(errs...)
}

func (m bgManager) Running() bool { return m.r.ServingManager().Running() }
