package deploystep

import (
	"context"
	"fmt"
	"slices"

	"github.com/golive/golive/internal/router"
)

// recoverBlueGreen finishes or undoes a blue-green step a crash interrupted.
// The router decides: if it sends all the traffic to the new slot and the
// step was going forward, the step finishes forward (the new slot running
// and healthy, slots.json and current recording it, smoke checks); in every
// other case (no switch yet, a canary split, rolling back) the old slot gets
// all the traffic again (started first if it no longer runs), current goes
// back, and the new slot is stopped (unless it was warm before the step).
// Afterwards exactly one slot serves and current names its release.
func (r *Runner) recoverBlueGreen(ctx context.Context, s *step, timed func(string, func(context.Context) error) error, cur string) Outcome {
	j, res := s.j, s.res
	newSlot, old := router.Slot(j.NewSlot), router.Slot(j.OldSlot)
	active, aerr := r.cfg.Router.Active(ctx)
	switched := aerr == nil && active.Share(newSlot) == 100
	// The live traffic was touched once the canary or the switch began.
	touched := slices.Contains(j.Completed, StageCanary) || slices.Contains(j.Completed, StageSwitch) ||
		j.Stage == StageCanary || j.Stage == StageSwitch || j.FailedStage == StageCanary || j.FailedStage == StageSwitch ||
		(aerr == nil && active.Share(newSlot) > 0)
	r.log.Info("recovering a blue-green step", "router", active.String(), "router_error", aerr, "new_slot", newSlot, "old_slot", old)

	if !j.RollingBack && (switched || j.Previous == "") && (switched || slices.Contains(j.Completed, StageSwitch)) {
		err := timed(StageSlotHealth, func(c context.Context) error {
			if !r.cfg.Slots.Of(newSlot).Running() {
				if err := r.startSlotOn(c, newSlot, j.Release); err != nil {
					return err
				}
			}
			return r.waitSlotHealthy(c, newSlot)
		})
		if err == nil {
			err = timed(StageSwitch, func(c context.Context) error {
				if !switched {
					if err := r.cfg.Router.Switch(c, newSlot, 100); err != nil {
						return err
					}
				}
				if err := r.markServing(newSlot, old); err != nil {
					return err
				}
				if cur != j.Release {
					return r.dir.Swap(j.Release)
				}
				return nil
			})
		}
		if err == nil && j.Kind == KindDeploy {
			err = timed(StageSmoke, func(c context.Context) error {
				out, err := r.runSmoke(c)
				s.report.HookOutput, s.report.Skipped = out, out == ""
				return err
			})
		}
		if err == nil {
			_ = timed(StageCleanup, func(context.Context) error { return s.cleanup(ctx) })
			return OutcomeSucceeded
		}
		res.FailedStage, res.Error = s.report.Name, s.report.Error
		touched = true
	} else {
		res.FailedStage, res.Error = j.FailedStage, j.Reason
		if res.FailedStage == "" {
			res.FailedStage, res.Error = j.Stage, fmt.Sprintf("agent restarted during stage %s", j.Stage)
		}
	}

	// Back to the old slot.
	if j.Previous == "" {
		// A first deploy: nothing to go back to.
		_ = timed("stop", func(c context.Context) error { return s.stopSlot(c) })
		if cur != "" {
			_ = timed(StageSwitch, s.switchBack) // clears current
		}
		return OutcomeFailed
	}
	if touched {
		_ = timed(StageOnRollback, func(c context.Context) error {
			return s.hook(c, StageOnRollback, r.cfg.Service.Hooks.OnRollback, j.Previous)
		})
	}
	if err := timed(StageSwitch, s.switchBack); err != nil {
		return OutcomeFailed
	}
	if err := timed("stop", s.stopSlot); err != nil {
		r.log.Warn("stop the new slot", "slot", newSlot, "error", err)
	}
	if err := timed(StageRollbackHealth, func(c context.Context) error { return r.waitSlotHealthy(c, old) }); err != nil {
		return OutcomeFailed
	}
	if !touched {
		return OutcomeFailed
	}
	return OutcomeRolledBack
}
