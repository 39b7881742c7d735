package deploystep

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/golive/golive/internal/health"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/svcmgr"
)

// Blue-green stage names (see the package doc).
const (
	// StageStartSlot starts the idle slot on the release (skipped by a
	// rollback to a slot that is still warm on it).
	StageStartSlot = "start_slot"
	// StageSlotHealth checks the idle slot on its own port.
	StageSlotHealth = "slot_health"
	// StageCanary sends Command.Weight percent of the traffic to the new
	// slot and bakes for Command.WeightBake (skipped without a weight).
	StageCanary = "canary"
	// StageSwitch sends all the traffic to the new slot, confirmed through
	// the router, then points current at the release.
	StageSwitch = "switch"
)

// DefaultWeightBake is how long a canary weight is held when the command
// does not say (Command.WeightBake).
const DefaultWeightBake = 30 * time.Second

var (
	stStartSlot  = stage{name: StageStartSlot, critical: true, do: (*step).startSlot, undo: (*step).stopSlot}
	stSlotHealth = stage{name: StageSlotHealth, do: (*step).slotHealth}
	stCanary     = stage{name: StageCanary, touchesLive: true, do: (*step).canary, undo: (*step).uncanary}
	stSwitch     = stage{name: StageSwitch, critical: true, touchesLive: true, do: (*step).switchTraffic, undo: (*step).switchBack}

	bgDeployStages = []stage{stFetch, stVerify, stUnpack, stPreSwap, stBackup, stMigrate,
		stStartSlot, stSlotHealth, stCanary, stSwitch, stSmoke, stPostSwap, stCleanup}
	bgRollbackStages = []stage{stStartSlot, stSlotHealth, stSwitch}
)

// BlueGreenFaultPoints lists the fault points of a blue-green deploy (see
// FaultPoints, which lists those of a restart-mode deploy).
var BlueGreenFaultPoints = func() []string {
	var out []string
	for _, st := range bgDeployStages {
		out = append(out, "before_"+st.name, "after_"+st.name)
	}
	for _, st := range bgDeployStages {
		if st.undo != nil {
			out = append(out, "undo_"+st.name)
		}
	}
	// Between the router's switch and its record in slots.json and current.
	return append(out, "inside_switch", "before_finish")
}()

// Slots are the managers of the two slots of a blue-green service.
type Slots struct {
	Blue, Green ServiceManager
}

// Of is the manager of slot s.
func (m Slots) Of(s router.Slot) ServiceManager {
	if s == router.Green {
		return m.Green
	}
	return m.Blue
}

// slotsFile, beside the journal, records what each slot runs.
const slotsFile = "slots.json"

// SlotState is what a blue-green service's slots run, kept in slots.json.
type SlotState struct {
	// Serving is the slot that receives the traffic ("" before the first
	// switch). The router is the authority; this copy lets a host whose
	// router cannot be asked still name it.
	Serving router.Slot `json:"serving,omitempty"`
	// Slots maps "blue" and "green" to what they run.
	Slots map[router.Slot]SlotInfo `json:"slots"`
}

// SlotInfo is one slot's release and its pending keep-warm stop.
type SlotInfo struct {
	// Release is the release the slot was last started on.
	Release string `json:"release,omitempty"`
	// StopAt, when set, is when the slot (kept warm after traffic left
	// it) is drained and stopped. It survives an agent restart.
	StopAt time.Time `json:"stop_at,omitzero"`
}

func (r *Runner) blueGreen() bool { return r.cfg.Router != nil }

func (r *Runner) slotsPath() string { return filepath.Join(r.dir.Path(), slotsFile) }

// Slots returns what the slots of a blue-green service run.
func (r *Runner) SlotState() (SlotState, error) {
	st := SlotState{Slots: map[router.Slot]SlotInfo{}}
	if _, err := readJSON(r.slotsPath(), &st); err != nil {
		return st, err
	}
	if st.Slots == nil {
		st.Slots = map[router.Slot]SlotInfo{}
	}
	return st, nil
}

func (r *Runner) saveSlots(st SlotState) error { return writeJSON(r.slotsPath(), st) }

// editSlots reads, changes and writes slots.json.
func (r *Runner) editSlots(f func(*SlotState)) error {
	st, err := r.SlotState()
	if err != nil {
		return err
	}
	f(&st)
	return r.saveSlots(st)
}

// serving is the slot that serves: the router's primary slot when it knows
// a split, else the one slots.json names ("" when none yet).
func (r *Runner) serving(ctx context.Context) router.Slot {
	if t, err := r.cfg.Router.Active(ctx); err == nil {
		return t.Primary()
	}
	st, _ := r.SlotState()
	return st.Serving
}

// ActiveSlot is the slot serving a blue-green service's traffic ("" for a
// restart-mode service or before the first deploy).
func (r *Runner) ActiveSlot(ctx context.Context) string {
	if !r.blueGreen() {
		return ""
	}
	return string(r.serving(ctx))
}

// slotPort is the port of slot s.
func (r *Runner) slotPort(s router.Slot) int {
	p, _ := r.cfg.Service.SlotPort(string(s))
	return p
}

// livePort is the port of the instance serving traffic.
func (r *Runner) livePort() int {
	if !r.blueGreen() {
		return r.cfg.Service.Port
	}
	st, _ := r.SlotState()
	s := st.Serving
	if s == "" {
		s = router.Blue
	}
	return r.slotPort(s)
}

// ServingPort is the port of the instance that serves the service's
// traffic: Service.Port in restart mode, the serving slot's port in
// blue-green mode.
func (r *Runner) ServingPort() int { return r.livePort() }

// slotSpec is the Spec that runs release on slot s.
func (r *Runner) slotSpec(s router.Slot, release string) (svcmgr.Spec, error) {
	dir, err := r.dir.ReleasePath(release)
	if err != nil {
		return svcmgr.Spec{}, err
	}
	port := r.slotPort(s)
	return svcmgr.Spec{ReleaseDir: dir, Port: port, Env: r.cfg.Service.Env(port)}, nil
}

// startSlotOn records that slot s runs release, then (re)starts it.
func (r *Runner) startSlotOn(ctx context.Context, s router.Slot, release string) error {
	spec, err := r.slotSpec(s, release)
	if err != nil {
		return err
	}
	if err := r.editSlots(func(st *SlotState) { st.Slots[s] = SlotInfo{Release: release} }); err != nil {
		return fmt.Errorf("record slot %s: %w", s, err)
	}
	r.cancelStop(s)
	if err := r.cfg.Slots.Of(s).Restart(ctx, spec); err != nil {
		return fmt.Errorf("start slot %s on %s: %w", s, release, err)
	}
	return nil
}

// waitSlotHealthy runs the service's health check against slot s's port.
func (r *Runner) waitSlotHealthy(ctx context.Context, s router.Slot) error {
	return r.waitHealthyOn(ctx, r.slotPort(s), r.cfg.Slots.Of(s))
}

// startSlot starts the idle slot on the release. A rollback whose release
// still runs warm in the idle slot starts nothing.
func (s *step) startSlot(ctx context.Context) error {
	r, slot := s.r, router.Slot(s.j.NewSlot)
	st, err := r.SlotState()
	if err != nil {
		return err
	}
	if s.cmd.Kind == KindRollback && st.Slots[slot].Release == s.cmd.Release && r.cfg.Slots.Of(slot).Running() {
		s.j.Warm = true
		s.report.Skipped = true
		s.report.HookOutput = fmt.Sprintf("slot %s still runs %s (kept warm): no restart", slot, s.cmd.Release)
		return nil
	}
	return r.startSlotOn(ctx, slot, s.cmd.Release)
}

// stopSlot stops the new slot, unless it was warm before the step (then it
// stays as it was).
func (s *step) stopSlot(ctx context.Context) error {
	if s.j.Warm {
		return nil
	}
	slot := router.Slot(s.j.NewSlot)
	if err := s.r.cfg.Slots.Of(slot).Stop(ctx); err != nil {
		return fmt.Errorf("stop slot %s: %w", slot, err)
	}
	return s.r.editSlots(func(st *SlotState) { st.Slots[slot] = SlotInfo{} })
}

// slotHealth checks the new slot on its own port: a warm slot with one
// probe (falling back to the full check if it fails), else the configured
// check.
func (s *step) slotHealth(ctx context.Context) error {
	r, slot := s.r, router.Slot(s.j.NewSlot)
	if s.j.Warm {
		if url := r.cfg.Service.HealthURL(r.slotPort(slot)); url != "" {
			h := r.cfg.Service.Health
			if _, err := (health.Check{URL: url, ExpectStatus: h.ExpectStatus, Timeout: h.Timeout}).Probe(ctx); err == nil {
				return nil
			}
		}
	}
	return r.waitSlotHealthy(ctx, slot)
}

// canary sends the command's weight to the new slot and bakes: the new
// slot's health is probed every health interval for the bake window, and a
// failing probe fails the stage.
func (s *step) canary(ctx context.Context) error {
	w := s.j.Weight
	if w <= 0 || w >= 100 || s.j.Previous == "" {
		s.report.Skipped = true
		return nil
	}
	r, slot := s.r, router.Slot(s.j.NewSlot)
	if err := r.cfg.Router.Switch(ctx, slot, w); err != nil {
		return fmt.Errorf("send %d%% to %s: %w", w, slot, err)
	}
	bake := s.j.WeightBake
	if bake <= 0 {
		bake = DefaultWeightBake
	}
	h := r.cfg.Service.Health
	url := r.cfg.Service.HealthURL(r.slotPort(slot))
	interval := h.Interval
	if interval <= 0 {
		interval = time.Second
	}
	end := time.Now().Add(bake)
	t := time.NewTicker(interval)
	defer t.Stop()
	for time.Now().Before(end) {
		if url != "" {
			if _, err := (health.Check{URL: url, ExpectStatus: h.ExpectStatus, Timeout: h.Timeout}).Probe(ctx); err != nil {
				return fmt.Errorf("during the %d%% bake: %w", w, err)
			}
		} else if !r.cfg.Slots.Of(slot).Running() {
			return fmt.Errorf("during the %d%% bake: slot %s stopped", w, slot)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	s.report.HookOutput = fmt.Sprintf("%d%% to %s for %s", w, slot, bake)
	return nil
}

// uncanary sends all the traffic back to the old slot.
func (s *step) uncanary(ctx context.Context) error {
	if s.j.Weight <= 0 || s.j.Weight >= 100 || s.j.Previous == "" {
		return nil
	}
	return s.r.switchTo(ctx, router.Slot(s.j.OldSlot), s.j.Previous)
}

// switchTraffic sends all the traffic to the new slot (confirmed through
// the router), records it, keeps the old slot warm and points current at
// the release.
func (s *step) switchTraffic(ctx context.Context) error {
	r, slot, old := s.r, router.Slot(s.j.NewSlot), router.Slot(s.j.OldSlot)
	if err := r.cfg.Router.Switch(ctx, slot, 100); err != nil {
		return fmt.Errorf("switch to %s: %w", slot, err)
	}
	faultpoint("inside_switch")
	if err := r.markServing(slot, old); err != nil {
		return err
	}
	return r.dir.Swap(s.cmd.Release)
}

// markServing records slot as serving and schedules old's keep-warm stop.
func (r *Runner) markServing(slot, old router.Slot) error {
	var st SlotState
	err := r.editSlots(func(x *SlotState) {
		x.Serving = slot
		in := x.Slots[slot]
		in.StopAt = time.Time{}
		x.Slots[slot] = in
		if o, ok := x.Slots[old]; ok && old != slot && o.Release != "" {
			o.StopAt = time.Now().Add(r.keepWarm()).UTC()
			x.Slots[old] = o
		}
		st = *x
	})
	if err != nil {
		return fmt.Errorf("record the switch: %w", err)
	}
	r.cancelStop(slot)
	r.scheduleStops(st)
	return nil
}

// switchBack sends all the traffic back to the old slot (starting it first
// if it no longer runs) and points current back at the previous release.
func (s *step) switchBack(ctx context.Context) error {
	if s.j.Previous == "" {
		// A first deploy: nothing to go back to (start_slot's undo stops
		// the slot); no current names the release that failed.
		return s.r.dir.ClearCurrent(s.j.PreviousLink)
	}
	if err := s.r.switchTo(ctx, router.Slot(s.j.OldSlot), s.j.Previous); err != nil {
		return err
	}
	if err := s.r.markServing(router.Slot(s.j.OldSlot), router.Slot(s.j.NewSlot)); err != nil {
		return err
	}
	return s.r.dir.SwapBack(s.j.Previous, s.j.PreviousLink)
}

// switchTo makes slot, running release, take all the traffic: started and
// health-checked first if it does not run.
func (r *Runner) switchTo(ctx context.Context, slot router.Slot, release string) error {
	if !r.cfg.Slots.Of(slot).Running() {
		if err := r.startSlotOn(ctx, slot, release); err != nil {
			return err
		}
		if err := r.waitSlotHealthy(ctx, slot); err != nil {
			return fmt.Errorf("slot %s on %s: %w", slot, release, err)
		}
	}
	if t, err := r.cfg.Router.Active(ctx); err == nil && t.Share(slot) == 100 {
		return nil
	}
	if err := r.cfg.Router.Switch(ctx, slot, 100); err != nil {
		return fmt.Errorf("switch back to %s: %w", slot, err)
	}
	return nil
}

func (r *Runner) keepWarm() time.Duration {
	if bg := r.cfg.Service.BlueGreen; bg != nil && bg.KeepWarm > 0 {
		return bg.KeepWarm
	}
	return 0
}

// keepWarmTimers stops warm slots when their time is up.
type keepWarmTimers struct {
	mu     sync.Mutex
	timers map[router.Slot]*time.Timer
	wg     sync.WaitGroup
	closed bool
}

// cancelStop cancels slot's pending stop timer (slots.json is not changed).
func (r *Runner) cancelStop(slot router.Slot) {
	k := &r.warm
	k.mu.Lock()
	defer k.mu.Unlock()
	if t := k.timers[slot]; t != nil {
		if t.Stop() {
			k.wg.Done()
		}
		delete(k.timers, slot)
	}
}

// scheduleStops arms a timer for every slot of st with a StopAt.
func (r *Runner) scheduleStops(st SlotState) {
	for slot, in := range st.Slots {
		if in.StopAt.IsZero() || slot == st.Serving {
			continue
		}
		r.cancelStop(slot)
		k := &r.warm
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			return
		}
		if k.timers == nil {
			k.timers = map[router.Slot]*time.Timer{}
		}
		at := in.StopAt
		k.wg.Add(1)
		k.timers[slot] = time.AfterFunc(time.Until(at), func() {
			defer k.wg.Done()
			r.stopWarm(slot, at)
		})
		k.mu.Unlock()
	}
}

// stopWarm drains and stops slot if its keep-warm deadline is still at and
// it does not serve.
func (r *Runner) stopWarm(slot router.Slot, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.SlotState()
	if err != nil {
		r.log.Error("read slots to stop a warm slot", "slot", slot, "error", err)
		return
	}
	if in := st.Slots[slot]; !in.StopAt.Equal(at) {
		return // rescheduled or cancelled since
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CriticalTimeout+r.drainTimeout())
	defer cancel()
	if t, err := r.cfg.Router.Active(ctx); err == nil && t.Share(slot) > 0 {
		r.log.Warn("not stopping a warm slot that receives traffic", "slot", slot, "traffic", t.String())
		return
	}
	r.drainAndStop(ctx, slot)
	in := st.Slots[slot]
	in.StopAt = time.Time{}
	st.Slots[slot] = in
	if err := r.saveSlots(st); err != nil {
		r.log.Error("record the stop of a warm slot", "slot", slot, "error", err)
	}
}

func (r *Runner) drainTimeout() time.Duration {
	if bg := r.cfg.Service.BlueGreen; bg != nil && bg.DrainTimeout > 0 {
		return bg.DrainTimeout
	}
	return 30 * time.Second
}

// drainAndStop waits for slot's in-flight requests (up to the drain
// timeout), then stops it.
func (r *Runner) drainAndStop(ctx context.Context, slot router.Slot) {
	start := time.Now()
	if err := r.cfg.Router.Drain(ctx, slot, r.drainTimeout()); err != nil {
		r.log.Warn("drain before stopping the warm slot", "slot", slot, "error", err)
	}
	if err := r.cfg.Slots.Of(slot).Stop(ctx); err != nil {
		r.log.Error("stop the warm slot", "slot", slot, "error", err)
		return
	}
	r.log.Info("warm slot drained and stopped", "slot", slot, "seconds", time.Since(start).Seconds())
}

// Close stops the keep-warm timers (a stop due later is done by the next
// Runner, from slots.json) and waits for a stop in progress.
func (r *Runner) Close() {
	k := &r.warm
	k.mu.Lock()
	k.closed = true
	for s, t := range k.timers {
		if t.Stop() {
			k.wg.Done()
		}
		delete(k.timers, s)
	}
	k.mu.Unlock()
	k.wg.Wait()
}

// Adopt, for a blue-green service, lets each slot's manager adopt the
// process a previous agent left running (execmgr's Adopt) on the release
// slots.json records for it, without restarting it. Call it before Recover.
func (r *Runner) Adopt(ctx context.Context) {
	if !r.blueGreen() {
		return
	}
	st, err := r.SlotState()
	if err != nil {
		r.log.Warn("read slots", "error", err)
		return
	}
	for _, slot := range []router.Slot{router.Blue, router.Green} {
		a, ok := r.cfg.Slots.Of(slot).(interface {
			Adopt(context.Context, svcmgr.Spec) (bool, error)
		})
		rel := st.Slots[slot].Release
		if !ok || rel == "" {
			continue
		}
		spec, err := r.slotSpec(slot, rel)
		if err != nil {
			continue
		}
		if adopted, err := a.Adopt(ctx, spec); err != nil {
			r.log.Warn("cannot adopt the running slot", "slot", slot, "error", err)
		} else if adopted {
			r.log.Info("adopted the slot a previous agent started", "slot", slot, "release", rel)
		}
	}
}

// StartServing, for a blue-green service at agent start (after Adopt and
// Recover), makes the serving slot run the current release (started and
// health-checked if it does not run; the router is pointed at it if it
// serves nothing yet), then stops warm slots whose keep-warm is over
// (drained first) and schedules the others.
func (r *Runner) StartServing(ctx context.Context) error {
	if !r.blueGreen() {
		return errors.New("deploystep: StartServing is for blue-green services")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, err := r.dir.Current()
	if err != nil || cur == "" {
		return err
	}
	st, err := r.SlotState()
	if err != nil {
		return err
	}
	slot := r.serving(ctx)
	if slot == "" {
		slot = router.Blue
	}
	if st.Slots[slot].Release != cur || !r.cfg.Slots.Of(slot).Running() {
		if st.Slots[slot].Release == cur && !r.cfg.Slots.Of(slot).Running() {
			r.log.Info("starting the serving slot", "slot", slot, "release", cur)
		}
		if err := r.startSlotOn(ctx, slot, cur); err != nil {
			return err
		}
		if err := r.waitSlotHealthy(ctx, slot); err != nil {
			return err
		}
	}
	if err := r.switchTo(ctx, slot, cur); err != nil {
		return err
	}
	if err := r.editSlots(func(x *SlotState) {
		x.Serving = slot
		in := x.Slots[slot]
		in.StopAt = time.Time{}
		x.Slots[slot] = in
		st = *x
	}); err != nil {
		return err
	}
	for s, in := range st.Slots {
		if s == slot || in.StopAt.IsZero() || time.Now().Before(in.StopAt) {
			continue
		}
		// Overdue: the agent was down when the stop was due.
		r.drainAndStop(ctx, s)
		in.StopAt = time.Time{}
		st.Slots[s] = in
	}
	if err := r.saveSlots(st); err != nil {
		return err
	}
	r.scheduleStops(st)
	return nil
}

// servingManager is the ServiceManager of the serving slot, for the parts of
// the step written for one instance (restore_db) and for the agent.
type servingManager struct{ r *Runner }

func (m servingManager) slot() router.Slot {
	st, _ := m.r.SlotState()
	if st.Serving == "" {
		return router.Blue
	}
	return st.Serving
}

func (m servingManager) Restart(ctx context.Context, spec svcmgr.Spec) error {
	s := m.slot()
	spec.Port = m.r.slotPort(s)
	spec.Env = m.r.cfg.Service.Env(spec.Port)
	if err := m.r.editSlots(func(st *SlotState) { st.Slots[s] = SlotInfo{Release: filepath.Base(spec.ReleaseDir)} }); err != nil {
		return fmt.Errorf("record slot %s: %w", s, err)
	}
	return m.r.cfg.Slots.Of(s).Restart(ctx, spec)
}

func (m servingManager) Stop(ctx context.Context) error { return m.r.cfg.Slots.Of(m.slot()).Stop(ctx) }

func (m servingManager) Running() bool { return m.r.cfg.Slots.Of(m.slot()).Running() }

// ServingManager is the manager of the instance that serves: Config.Manager
// in restart mode, the serving slot's in blue-green mode.
func (r *Runner) ServingManager() ServiceManager { return r.cfg.Manager }
