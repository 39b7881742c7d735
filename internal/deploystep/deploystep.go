package deploystep

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/router"
	"github.com/golive/golive/internal/svcmgr"
)

// ServiceManager is what the step needs from whatever supervises the
// service's process (execmgr.Manager and the systemd manager satisfy it).
type ServiceManager interface {
	// Restart stops the service if it runs, then starts it with spec.
	Restart(ctx context.Context, spec svcmgr.Spec) error
	// Stop stops the service; stopping a stopped service is not an error.
	Stop(ctx context.Context) error
	// Running reports whether the service is up.
	Running() bool
}

var _ ServiceManager = svcmgr.Manager(nil)

// Kind is what a command asks for.
type Kind string

// Kinds of command.
const (
	KindDeploy   Kind = "deploy"
	KindRollback Kind = "rollback"
)

// Outcome is how a step ended.
type Outcome string

// Outcomes.
const (
	// OutcomeSucceeded: the release is live and healthy.
	OutcomeSucceeded Outcome = "SUCCEEDED"
	// OutcomeRolledBack: a stage failed after the live service was touched,
	// and the previous release is live and healthy again.
	OutcomeRolledBack Outcome = "ROLLED_BACK"
	// OutcomeFailed: a stage failed before the live service was touched, or
	// the previous release could not be restored.
	OutcomeFailed Outcome = "FAILED"
)

// Stage names, in the order a deploy runs them.
const (
	StageFetch    = "fetch"
	StageVerify   = "verify"
	StageUnpack   = "unpack"
	StagePreSwap  = "pre_swap"
	StageBackup   = "backup"
	StageMigrate  = "migrate"
	StageSwap     = "swap"
	StageRestart  = "restart"
	StageHealth   = "health"
	StageSmoke    = "smoke"
	StagePostSwap = "post_swap"
	StageCleanup  = "cleanup"
	// StageRestoreDB is the first stage of a rollback with a database
	// restore (Command.RestoreBackupID): stop, safety backup, restore.
	StageRestoreDB = "restore_db"
	// StageOnRollback is reported for the on_rollback hook, and
	// StageRollbackHealth for the health check of the previous release
	// after an undo.
	StageOnRollback     = "on_rollback"
	StageRollbackHealth = "rollback_health"
)

// FaultPointEnv names the environment variable that selects the fault point a
// binary built with the faultpoints tag crashes at.
const FaultPointEnv = "GOLIVE_FAULTPOINT"

// FaultPoints lists the fault point names: "before_<stage>" (journal written,
// stage not started), "after_<stage>" (stage done, next journal not written),
// "undo_<stage>" (journal says rolling back, undo not started) and
// "before_finish" (all stages done, result not recorded).
var FaultPoints = func() []string {
	var out []string
	for _, st := range deployStages {
		out = append(out, "before_"+st.name, "after_"+st.name)
	}
	for _, st := range deployStages {
		if st.undo != nil {
			out = append(out, "undo_"+st.name)
		}
	}
	return append(out, "before_finish")
}()

// Defaults.
const (
	DefaultCriticalTimeout = 2 * time.Minute
	DefaultDoneRecords     = 200
)

// Command is one deploy or rollback, as sent by the controller.
type Command struct {
	// ID makes the command idempotent on this host.
	ID   string
	Kind Kind
	// Release is the release to deploy, or to roll back to ("" with
	// KindRollback: the previous release).
	Release string
	// ArtifactURL, SHA256 (hex, mandatory) and Signature (base64 ed25519,
	// mandatory with trusted keys) describe a deploy's artifact.
	ArtifactURL string
	SHA256      string
	Signature   string
	// RestoreBackupID, with KindRollback, restores that database backup
	// (after a safety backup) before the binary goes back.
	RestoreBackupID string
	// Weight, for a blue-green deploy, is the percentage of the traffic the
	// new slot gets for WeightBake (default DefaultWeightBake) before the
	// full switch (0 or 100: switch at once).
	Weight     int
	WeightBake time.Duration
}

// Config configures a Runner for one service.
type Config struct {
	// StateDir is the directory holding service directories: the service's
	// files live in <StateDir>/<Service.Name> (see releasedir.Open). For
	// agentconfig.Config.ServiceDir's layout pass <state_dir>/services.
	StateDir string
	// Service is the service's configuration (port, health, hooks, keep).
	Service *agentconfig.Service
	// Manager runs the service's process (restart mode).
	Manager ServiceManager
	// Slots and Router, for a blue-green service (Service.SwapMode
	// "blue-green"), run the two slots and move the traffic between them;
	// Manager is then unused (ServingManager stands for the serving slot).
	Slots  Slots
	Router router.Router
	// Artifacts caps downloads and unpacking.
	Artifacts agentconfig.Artifacts
	// TrustedKeys, when not empty, make a valid signature mandatory.
	TrustedKeys []ed25519.PublicKey
	// HTTPClient fetches artifacts (nil: artifact's default).
	HTTPClient *http.Client
	// CriticalTimeout bounds swap, restart, each undo and the on_rollback
	// hook, which run even when the operation's context is cancelled
	// (default 2m). The health check after an undo is bounded by the
	// service's health deadline as well.
	CriticalTimeout time.Duration
	// DoneRecords is how many finished command results are kept (default 200).
	DoneRecords int
	// Logger is the parent logger (default: null).
	Logger hclog.Logger
	// BackupDir is where the service's database backups and their records
	// live (agentconfig.Config.BackupDir; default <service dir>/backups).
	BackupDir string
	// HostID names this host in backup records.
	HostID string
	// PGBinDir is the directory of pg_dump, pg_restore and psql ("": PATH).
	PGBinDir string
}

// StageReport is what one stage did.
type StageReport struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Skipped: the stage had nothing to do (release already on disk, no hook).
	Skipped bool `json:"skipped,omitempty"`
	// Note says why a stage was skipped or what it did instead (e.g. "release
	// v2 is already on this host with the same sha256: not fetched again").
	Note string `json:"note,omitempty"`
	// Error is why the stage failed; Warning a failure that did not fail the
	// step (post_swap, cleanup, on_rollback).
	Error   string `json:"error,omitempty"`
	Warning string `json:"warning,omitempty"`
	// HookOutput is the hook's combined output, for hook stages and
	// migrate (with the database DSN and password redacted); for smoke,
	// one line per check.
	HookOutput string `json:"hook_output,omitempty"`
	// Undone reports that the stage's undo ran; UndoError why it failed.
	Undone    bool   `json:"undone,omitempty"`
	UndoError string `json:"undo_error,omitempty"`
}

// Result is how a command ended on this host.
type Result struct {
	CommandID string  `json:"command_id"`
	Kind      Kind    `json:"kind"`
	Outcome   Outcome `json:"outcome"`
	// Release is the release the command targeted; Previous the release
	// current pointed at before it.
	Release  string `json:"release"`
	Previous string `json:"previous,omitempty"`
	// FailedStage and Error say which stage failed and why ("" on success).
	FailedStage string        `json:"failed_stage,omitempty"`
	Error       string        `json:"error,omitempty"`
	Stages      []StageReport `json:"stages"`
	// Unchanged: the command changed nothing on the host: the live release
	// was not stopped, restarted or switched away from, and current names
	// what it named before. A FAILED deploy that failed before it touched
	// the live service (fetch, verify, unpack; backup when pre_swap had no
	// hook; a refused re-deploy or an invalid command) is
	// Unchanged, and its Error ends with NothingChanged: there is nothing
	// to roll back. A SUCCEEDED rollback to the release that already runs
	// healthy is Unchanged too (a no-op).
	Unchanged bool `json:"unchanged,omitempty"`
	// Recovered: the step was interrupted and finished by Recover.
	Recovered bool `json:"recovered,omitempty"`
	// Replayed: this is the stored result of an earlier run of the same id.
	Replayed bool      `json:"replayed,omitempty"`
	Finished time.Time `json:"finished"`
	// Backup is the verified database backup taken before a migration (or,
	// on a restore, the safety backup), nil when none was taken.
	Backup *dbbackup.Record `json:"backup,omitempty"`
	// Warnings are things the operator must know that did not decide the
	// outcome, each prefixed with its stage: e.g. that a binary rollback
	// after a migration left the schema migrated. Each is also in its
	// stage's report (Warning).
	Warnings []string `json:"warnings,omitempty"`
}

// NothingChanged ends the error of an Unchanged failure.
const NothingChanged = "nothing changed on the host"

// Runner runs the steps of one service, one at a time.
type Runner struct {
	cfg Config
	dir *releasedir.Dir
	log hclog.Logger
	mu  sync.Mutex
	// warm holds the keep-warm stop timers of a blue-green service.
	warm keepWarmTimers
}

// New opens the service's release directory and returns its Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Service == nil {
		return nil, errors.New("deploystep: Service is required")
	}
	switch cfg.Service.SwapMode {
	case "", agentconfig.SwapRestart:
		if cfg.Manager == nil {
			return nil, errors.New("deploystep: Manager is required")
		}
		cfg.Router = nil
	case agentconfig.SwapBlueGreen:
		if cfg.Router == nil || cfg.Slots.Blue == nil || cfg.Slots.Green == nil {
			return nil, fmt.Errorf("deploystep: service %q: blue-green needs Router and both Slots", cfg.Service.Name)
		}
		if _, ok := cfg.Service.SlotPort(agentconfig.SlotBlue); !ok {
			return nil, fmt.Errorf("deploystep: service %q: blue-green needs a blue_green block", cfg.Service.Name)
		}
	default:
		return nil, fmt.Errorf("deploystep: service %q: unknown swap mode %q", cfg.Service.Name, cfg.Service.SwapMode)
	}
	if cfg.CriticalTimeout <= 0 {
		cfg.CriticalTimeout = DefaultCriticalTimeout
	}
	dir, err := releasedir.Open(cfg.StateDir, cfg.Service.Name)
	if err != nil {
		return nil, fmt.Errorf("deploystep: %w", err)
	}
	if cfg.BackupDir == "" {
		cfg.BackupDir = filepath.Join(dir.Path(), "backups")
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Runner{cfg: cfg, dir: dir, log: log.Named("deploystep").With("service", cfg.Service.Name)}
	if r.blueGreen() {
		r.cfg.Manager = servingManager{r}
	}
	return r, nil
}

// Dir is the service's release directory.
func (r *Runner) Dir() *releasedir.Dir { return r.dir }

// Run runs cmd to the end and returns its result. ctx aborts the operation
// (see the package doc for what still runs to completion); progress, if not
// nil, is called with each stage's name as it starts ("undo_<stage>" for
// undos). A command whose result is recorded returns it without work; an
// unfinished step left by a crash is recovered first.
func (r *Runner) Run(ctx context.Context, cmd Command, progress func(stage string)) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	if progress == nil {
		progress = func(string) {}
	}
	fail := func(err error) Result {
		return Result{CommandID: cmd.ID, Kind: cmd.Kind, Release: cmd.Release, Outcome: OutcomeFailed,
			Error: err.Error(), Finished: time.Now().UTC()}
	}
	if err := validateID(cmd.ID); err != nil {
		res := fail(err)
		res.Unchanged, res.Error = true, res.Error+": "+NothingChanged
		return res
	}
	if j, err := r.ReadJournal(); err != nil {
		return fail(fmt.Errorf("read journal: %w", err))
	} else if j != nil {
		if _, err := r.recover(ctx); err != nil {
			return fail(fmt.Errorf("recover unfinished step %s: %w", j.CommandID, err))
		}
	}
	if done, err := r.Done(cmd.ID); err != nil {
		return fail(fmt.Errorf("read result record: %w", err))
	} else if done != nil {
		done.Replayed = true
		return *done
	}
	res := r.run(ctx, cmd, progress)
	res.Finished = time.Now().UTC()
	faultpoint("before_finish")
	if err := r.finish(&res); err != nil {
		r.log.Error("cannot record the step's result; Recover will redo it", "command_id", cmd.ID, "error", err)
	}
	return res
}

// step is the state of one running command.
type step struct {
	r   *Runner
	cmd Command
	j   *Journal
	res *Result
	// have is how the step treats a release already committed (see
	// artifactPlan); reuseFresh when it is not on the host.
	have     reuse
	manifest *releasedir.Manifest // the committed release's manifest, if any
	signer   string               // key id that verified the signature
	download string               // fetched artifact path
	sha      string               // sha256 measured by fetch
	report   *StageReport
	// restore is the backup a rollback restores (Command.RestoreBackupID).
	restore *dbbackup.Record
	// dbRestored: restore_db replaced the database's contents.
	dbRestored bool
}

func (r *Runner) run(ctx context.Context, cmd Command, progress func(string)) Result {
	res := Result{CommandID: cmd.ID, Kind: cmd.Kind, Release: cmd.Release, Outcome: OutcomeFailed}
	prev, err := r.dir.Current()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Previous = prev
	// refuse ends a command before any stage ran: nothing changed.
	refuse := func(msg string) Result {
		res.Error, res.Unchanged = msg+": "+NothingChanged+liveNote(prev), true
		return res
	}
	var (
		stages     []stage
		restoreRec *dbbackup.Record
	)
	switch cmd.Kind {
	case KindDeploy:
		if err := releasedir.ValidateRelease(cmd.Release); err != nil {
			return refuse(err.Error())
		}
		if cmd.ArtifactURL == "" {
			return refuse("deploy command without an artifact URL")
		}
		if strings.TrimSpace(cmd.SHA256) == "" {
			return refuse("deploy command without an artifact sha256 (mandatory)")
		}
		stages = deployStages
		if r.blueGreen() {
			stages = bgDeployStages
		}
	case KindRollback:
		var rec *dbbackup.Record
		if cmd.RestoreBackupID != "" {
			if rec, err = r.loadRestore(cmd); err != nil {
				return refuse(err.Error())
			}
			if cmd.Release == "" {
				cmd.Release, res.Release = rec.ReleaseBefore, rec.ReleaseBefore
			}
		}
		if cmd.Release == "" {
			p, err := r.dir.Previous()
			if err != nil {
				res.Error = err.Error()
				return res
			}
			if p == "" || p == prev {
				return refuse("no previous release to roll back to")
			}
			cmd.Release, res.Release = p, p
		}
		ok, err := r.dir.Exists(cmd.Release)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		if !ok {
			return refuse(fmt.Sprintf("release %q is not on this host", cmd.Release))
		}
		if rec == nil && cmd.Release == prev {
			if noop, ok := r.alreadyLive(ctx, cmd, &res); ok {
				return noop
			}
		}
		stages = rollbackStages
		if r.blueGreen() {
			stages = bgRollbackStages
		}
		if rec != nil {
			stages = restoreStages
			restoreRec = rec
		}
	default:
		return refuse(fmt.Sprintf("unknown command kind %q", cmd.Kind))
	}
	var (
		have     = reuseFresh
		manifest *releasedir.Manifest
	)
	if cmd.Kind == KindDeploy {
		if have, manifest, err = r.artifactPlan(cmd); err != nil {
			res.FailedStage = StageVerify
			return refuse(err.Error())
		}
	}
	prevLink, err := r.dir.Previous()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	s := &step{r: r, cmd: cmd, res: &res, have: have, manifest: manifest, restore: restoreRec, j: &Journal{
		CommandID: cmd.ID, Kind: cmd.Kind, Release: cmd.Release, Previous: prev, PreviousLink: prevLink,
		RestoreBackupID: cmd.RestoreBackupID, Completed: []string{}, Started: time.Now().UTC(),
	}}
	if r.blueGreen() && restoreRec == nil {
		// Slots are recorded only for the blue-green stages: a database
		// restore runs restoreStages in place on the serving slot, and its
		// recovery must follow the restart-mode path (which knows about
		// the restored database), not recoverBlueGreen.
		old := r.serving(ctx)
		if old == "" {
			old = router.Green // nothing serves yet: the first release goes to blue
		}
		s.j.OldSlot, s.j.NewSlot = string(old), string(old.Other())
		s.j.Weight, s.j.WeightBake = cmd.Weight, cmd.WeightBake
	}
	log := r.log.With("command_id", cmd.ID, "release", cmd.Release, "previous", prev)
	log.Info("step starting", "kind", cmd.Kind)

	var (
		failedAt = -1
		stageErr error
	)
	for i, st := range stages {
		if !st.critical && ctx.Err() != nil {
			failedAt, stageErr = i, fmt.Errorf("%s: %w", st.name, context.Cause(ctx))
			res.Stages = append(res.Stages, StageReport{Name: st.name, Error: stageErr.Error()})
			break
		}
		s.j.Stage = st.name
		res.Stages = append(res.Stages, StageReport{Name: st.name})
		s.report = &res.Stages[len(res.Stages)-1]
		if err := writeJSON(r.journalPath(), s.j); err != nil {
			failedAt, stageErr = i, fmt.Errorf("%s: write journal: %w", st.name, err)
			s.report.Error = stageErr.Error()
			break
		}
		faultpoint("before_" + st.name)
		progress(st.name)
		start := time.Now()
		sctx, cancel := s.ctxFor(ctx, st.critical)
		err := st.do(s, sctx)
		cancel()
		s.report.Seconds = time.Since(start).Seconds()
		if err != nil {
			failedAt, stageErr = i, fmt.Errorf("%s: %w", st.name, err)
			s.report.Error = stageErr.Error()
			break
		}
		faultpoint("after_" + st.name)
		s.j.Completed = append(s.j.Completed, st.name)
	}
	if failedAt < 0 {
		res.Outcome = OutcomeSucceeded
		log.Info("step succeeded")
		return res
	}
	res.FailedStage = stages[failedAt].name
	res.Error = stageErr.Error()
	log.Warn("stage failed, undoing", "stage", res.FailedStage, "error", stageErr)
	s.j.RollingBack, s.j.FailedStage, s.j.Reason = true, res.FailedStage, res.Error
	res.Outcome = s.undo(ctx, stages[:failedAt+1], progress)
	log.Info("step ended", "outcome", res.Outcome)
	return res
}

// ctxFor returns the context a stage runs under: ctx itself, or for critical
// stages and undos a context that ignores ctx's cancellation, bounded by
// CriticalTimeout.
func (s *step) ctxFor(ctx context.Context, critical bool) (context.Context, context.CancelFunc) {
	if !critical {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), s.r.cfg.CriticalTimeout)
}

// undo runs the undo of done (the failing stage last), newest first, then,
// if the live service was touched, the on_rollback hook and a health check
// of the previous release. It returns the step's outcome.
func (s *step) undo(ctx context.Context, done []stage, progress func(string)) Outcome {
	outcome := OutcomeRolledBack
	touched := false
	for i := len(done) - 1; i >= 0; i-- {
		st := done[i]
		if st.touchesLive && !s.skipped(st.name) {
			touched = true
		}
		if st.undo == nil {
			continue
		}
		s.j.Stage = st.name
		if err := writeJSON(s.r.journalPath(), s.j); err != nil {
			s.r.log.Error("write journal before undo", "stage", st.name, "error", err)
		}
		faultpoint("undo_" + st.name)
		progress("undo_" + st.name)
		rep := s.findReport(st.name)
		uctx, cancel := s.ctxFor(ctx, true)
		err := st.undo(s, uctx)
		cancel()
		if rep != nil {
			rep.Undone = true
			if err != nil {
				rep.UndoError = err.Error()
			}
		}
		if err != nil {
			s.r.log.Error("undo failed", "stage", st.name, "error", err)
			outcome = OutcomeFailed
		}
	}
	s.databaseWarnings()
	if s.dbRestored {
		// The database holds the restored backup while the binary went back
		// to the release before the command: neither state the operator
		// knew. Reported as a failure, with the safety backup's id.
		outcome = OutcomeFailed
	}
	if !touched {
		if outcome == OutcomeRolledBack {
			// Every undo worked and nothing live was touched.
			s.res.Unchanged = true
			s.res.Error += ": " + NothingChanged + liveNote(s.j.Previous)
		}
		return OutcomeFailed
	}
	progress(StageOnRollback)
	s.runOnRollback(ctx)
	if s.j.Previous == "" {
		return OutcomeFailed // a first deploy has nothing to go back to
	}
	progress(StageRollbackHealth)
	s.res.Stages = append(s.res.Stages, StageReport{Name: StageRollbackHealth})
	rep := &s.res.Stages[len(s.res.Stages)-1]
	start := time.Now()
	hctx, cancel := s.ctxFor(ctx, true)
	defer cancel()
	err := s.r.waitHealthy(hctx)
	rep.Seconds = time.Since(start).Seconds()
	if err != nil {
		rep.Error = err.Error()
		s.res.Error += "; previous release " + s.j.Previous + " not healthy after rollback: " + err.Error()
		return OutcomeFailed
	}
	return outcome
}

// skipped: a stage that had nothing to do (no hook, no migration, no
// canary weight) left the live service alone.
func (s *step) skipped(name string) bool {
	rep := s.findReport(name)
	return rep != nil && rep.Skipped
}

func (s *step) findReport(name string) *StageReport {
	for i := range s.res.Stages {
		if s.res.Stages[i].Name == name {
			return &s.res.Stages[i]
		}
	}
	return nil
}

func (r *Runner) downloadsDir() string { return filepath.Join(r.dir.Path(), downloadsDir) }

// removeDownloads empties the downloads directory.
func (r *Runner) removeDownloads() error {
	err := os.RemoveAll(r.downloadsDir())
	if err != nil {
		return err
	}
	return nil
}
