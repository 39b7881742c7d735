package deploystep

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/golive/golive/internal/dbbackup"
)

// Recover brings the host to a complete state after a crash in the middle of
// a step, and returns the result of the interrupted command (nil when there
// was no unfinished step). The result is also recorded, so the command, when
// sent again, returns it. See the package doc for the policy.
//
// The agent calls Recover once at start, before it accepts commands; Run also
// calls it when it finds a journal.
func (r *Runner) Recover(ctx context.Context) (*Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recover(ctx)
}

func (r *Runner) recover(ctx context.Context) (*Result, error) {
	j, err := r.ReadJournal()
	if err != nil || j == nil {
		return nil, err
	}
	log := r.log.With("command_id", j.CommandID, "release", j.Release, "previous", j.Previous)
	if err := validateID(j.CommandID); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if done, err := r.Done(j.CommandID); err != nil {
		return nil, err
	} else if done != nil {
		// Crashed between recording the result and removing the journal.
		if err := removeDurable(r.journalPath()); err != nil {
			return nil, err
		}
		return done, nil
	}
	log.Warn("recovering an interrupted step", "stage", j.Stage, "completed", j.Completed, "rolling_back", j.RollingBack)

	res := &Result{CommandID: j.CommandID, Kind: j.Kind, Release: j.Release, Previous: j.Previous,
		Recovered: true, Outcome: OutcomeFailed, Stages: []StageReport{}}
	s := &step{r: r, cmd: Command{ID: j.CommandID, Kind: j.Kind, Release: j.Release, RestoreBackupID: j.RestoreBackupID}, j: j, res: res}
	if j.BackupID != "" {
		if rec, err := dbbackup.LoadRecord(r.cfg.BackupDir, j.BackupID); err == nil {
			res.Backup = rec
		} else {
			log.Warn("the step's backup record is unreadable", "backup_id", j.BackupID, "error", err)
		}
	}
	// A backup the crash interrupted is not verified: it goes.
	if (j.Stage == StageBackup || j.Stage == StageRestoreDB) && !slices.Contains(j.Completed, j.Stage) {
		release := j.Release
		if j.Stage == StageRestoreDB {
			release = safetyRelease
		}
		if err := r.cleanBackupLeftovers(release); err != nil {
			log.Warn("remove unverified backups", "error", err)
		}
	}
	// The database is never changed by Recover: a migration is not rerun, a
	// restore is not redone or undone. What the crash left is reported.
	s.dbRestored = slices.Contains(j.Completed, StageRestoreDB)
	dbUnknown := ""
	switch {
	case j.Migration == migrationStarted:
		dbUnknown = fmt.Sprintf("agent restarted during the migration of release %s: it may have run partly or completely, and is not run again; backup %s holds the database as it was before",
			j.Release, orNone(j.BackupID))
	case j.Restoring && !s.dbRestored:
		dbUnknown = fmt.Sprintf("agent restarted during the restore of backup %s: the restore is one transaction, so the database is either as it was or fully restored (check it); safety backup %s holds it as it was before",
			j.RestoreBackupID, orNone(j.BackupID))
	}
	// Recovery is itself critical work: it runs to the end even if ctx ends.
	cctx := context.WithoutCancel(ctx)
	timed := func(name string, f func(ctx context.Context) error) error {
		res.Stages = append(res.Stages, StageReport{Name: name})
		s.report = &res.Stages[len(res.Stages)-1]
		start := time.Now()
		c, cancel := context.WithTimeout(cctx, r.cfg.CriticalTimeout+r.cfg.Service.Health.Deadline)
		err := f(c)
		cancel()
		s.report.Seconds = time.Since(start).Seconds()
		if err != nil {
			s.report.Error = fmt.Sprintf("%s: %v", name, err)
		}
		return err
	}
	// Staging and downloads are scratch: a new attempt starts over.
	if j.Release != "" {
		if _, err := r.dir.StagingDir(j.Release); err != nil {
			log.Warn("remove staging", "error", err)
		}
	}
	if err := r.removeDownloads(); err != nil {
		log.Warn("remove downloads", "error", err)
	}

	cur, err := r.dir.Current()
	if err != nil {
		return nil, err
	}
	if r.blueGreen() && j.NewSlot != "" {
		res.Outcome = r.recoverBlueGreen(cctx, s, timed, cur)
		if res.Outcome != OutcomeSucceeded {
			s.databaseWarnings()
			if dbUnknown != "" {
				res.FailedStage, res.Error = j.Stage, dbUnknown
				res.Outcome = OutcomeFailed
			}
		}
		res.Finished = time.Now().UTC()
		if err := r.finish(res); err != nil {
			return nil, err
		}
		log.Info("recovered", "outcome", res.Outcome)
		return res, nil
	}
	// The live service was touched once a stage that touches it had begun
	// (while rolling back, Stage names the stage being undone).
	touched := slices.Contains(j.Completed, StagePreSwap) || touchesLive(j.FailedStage) ||
		(!j.RollingBack && touchesLive(j.Stage))
	swapped := cur == j.Release && j.Release != ""
	// Once the restart stage has begun the process may run either release.
	restarted := slices.Contains(j.Completed, StageRestart) || j.Stage == StageRestart || j.FailedStage == StageRestart
	interrupted := fmt.Sprintf("agent restarted during stage %s", j.Stage)

	// A rollback whose database restore completed goes forward: the
	// restored database belongs with the release it is rolling back to.
	restoredForward := s.dbRestored && !j.RollingBack && !swapped
	switch {
	case (j.RollingBack || !swapped) && !restoredForward:
		// Go back to (or stay on) the previous release.
		res.FailedStage, res.Error = j.FailedStage, j.Reason
		if res.FailedStage == "" {
			res.FailedStage, res.Error = j.Stage, interrupted
		}
		target := j.Previous
		if !j.RollingBack && j.Previous == "" {
			target = cur // a first deploy interrupted before its swap
		}
		if dbUnknown != "" {
			res.FailedStage, res.Error = j.Stage, dbUnknown
		}
		res.Outcome = r.restore(s, timed, target, cur, touched, restarted)
		if !touched && res.Outcome == OutcomeRolledBack {
			res.Outcome = OutcomeFailed // nothing live was touched: the deploy just failed
		}
	default:
		// The swap happened and the step was going forward: finish it.
		// The restart is redone whatever the journal says, since it cannot
		// tell whether the process runs the new release.
		var err error
		if restoredForward {
			if err = timed(StageSwap, func(context.Context) error { return r.dir.Swap(j.Release) }); err == nil {
				cur = j.Release
			}
		}
		if err == nil {
			err = timed(StageRestart, func(c context.Context) error { return r.restartOn(c, j.Release) })
		}
		if err == nil {
			err = timed(StageHealth, r.waitHealthy)
		}
		if err == nil && j.Kind == KindDeploy {
			err = timed(StageSmoke, func(c context.Context) error {
				out, err := r.runSmoke(c)
				s.report.HookOutput, s.report.Skipped = out, out == ""
				return err
			})
		}
		if err == nil {
			res.Outcome = OutcomeSucceeded
			_ = timed(StageCleanup, func(context.Context) error { return s.cleanup(cctx) })
			break
		}
		res.FailedStage, res.Error = s.report.Name, s.report.Error
		res.Outcome = r.restore(s, timed, j.Previous, cur, true, true)
	}
	if res.Outcome != OutcomeSucceeded {
		s.databaseWarnings()
		if s.dbRestored || dbUnknown != "" {
			res.Outcome = OutcomeFailed // the database needs the operator: see the warnings
		}
	}
	res.Finished = time.Now().UTC()
	if err := r.finish(res); err != nil {
		return nil, err
	}
	log.Info("recovered", "outcome", res.Outcome)
	return res, nil
}

// restore makes target the live, healthy release (swap if current is not
// target, restart, health), running the on_rollback hook first when the live
// service was touched. Unless mustRestart, a service that runs and passes
// its health check is left alone. It returns ROLLED_BACK when target is
// healthy.
func (r *Runner) restore(s *step, timed func(string, func(context.Context) error) error, target, cur string, touched, mustRestart bool) Outcome {
	if touched {
		_ = timed(StageOnRollback, func(c context.Context) error {
			return s.hook(c, StageOnRollback, r.cfg.Service.Hooks.OnRollback, target)
		})
	}
	if target == "" {
		// A first deploy has nothing to go back to: stop it, and leave no
		// current naming the release that failed (see unswap).
		_ = timed("stop", r.cfg.Manager.Stop)
		if cur != "" {
			_ = timed(StageSwap, s.unswap)
		}
		return OutcomeFailed
	}
	needSwap, swap := cur != target, func(context.Context) error { return r.dir.Swap(target) }
	if target == s.j.Previous {
		swap = s.unswap // restores the previous link as well
		if p, err := r.dir.Previous(); err != nil || p != s.j.PreviousLink {
			needSwap = true // a crash inside Swap left previous to repair
		}
	}
	if needSwap {
		if err := timed(StageSwap, swap); err != nil {
			return OutcomeFailed
		}
	}
	if !mustRestart && r.cfg.Manager.Running() && timed(StageHealth, r.waitHealthy) == nil {
		return OutcomeRolledBack
	}
	if err := timed(StageRestart, func(c context.Context) error { return r.restartOn(c, target) }); err != nil {
		return OutcomeFailed
	}
	if err := timed(StageHealth, r.waitHealthy); err != nil {
		return OutcomeFailed
	}
	return OutcomeRolledBack
}

// touchesLive reports whether stage name touches the live service.
func touchesLive(name string) bool {
	for _, st := range slices.Concat(deployStages, restoreStages) {
		if st.name == name {
			return st.touchesLive
		}
	}
	return false
}
