package deploystep

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/health"
	"github.com/golive/golive/internal/hooks"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/svcmgr"
	"github.com/golive/golive/internal/unpack"
)

// stage is one step of the ordered list: a name, a do and an undo.
type stage struct {
	name string
	// critical stages run to completion even when the operation's context
	// is cancelled.
	critical bool
	// touchesLive: once this stage has started, a failure is a rollback
	// (on_rollback hook, health check of the previous release).
	touchesLive bool
	do          func(s *step, ctx context.Context) error
	// undo reverses do; it must be safe after a do that failed half-way.
	// nil: nothing to undo.
	undo func(s *step, ctx context.Context) error
}

var (
	stFetch   = stage{name: StageFetch, do: (*step).fetch, undo: (*step).unfetch}
	stVerify  = stage{name: StageVerify, do: (*step).verify}
	stUnpack  = stage{name: StageUnpack, do: (*step).unpack, undo: (*step).unstage}
	stPreSwap = stage{name: StagePreSwap, touchesLive: true, do: (*step).preSwap}
	// backup has no undo: a verified backup is kept (it is what a restore
	// needs), and a failed one leaves no file (dbbackup). It reads the
	// database and restores into a scratch one: it does not touch the live
	// service, so a backup failure after a pre_swap without a hook changes
	// nothing (Unchanged).
	stBackup = stage{name: StageBackup, do: (*step).backup}
	// migrate has no undo: a migration is never reversed automatically;
	// undo reports that the schema stays migrated (databaseWarnings).
	stMigrate  = stage{name: StageMigrate, touchesLive: true, do: (*step).migrate}
	stSwap     = stage{name: StageSwap, critical: true, touchesLive: true, do: (*step).swap, undo: (*step).unswap}
	stRestart  = stage{name: StageRestart, critical: true, touchesLive: true, do: (*step).restart, undo: (*step).unrestart}
	stHealth   = stage{name: StageHealth, touchesLive: true, do: (*step).health}
	stSmoke    = stage{name: StageSmoke, touchesLive: true, do: (*step).smoke}
	stPostSwap = stage{name: StagePostSwap, do: (*step).postSwap}
	stCleanup  = stage{name: StageCleanup, do: (*step).cleanup}
	stRestore  = stage{name: StageRestoreDB, touchesLive: true, do: (*step).restoreDB, undo: (*step).unrestoreDB}

	deployStages = []stage{stFetch, stVerify, stUnpack, stPreSwap, stBackup, stMigrate, stSwap, stRestart, stHealth, stSmoke,
		stPostSwap, stCleanup}
	rollbackStages = []stage{stSwap, stRestart, stHealth}
	restoreStages  = []stage{stRestore, stSwap, stRestart, stHealth}
)

func (s *step) fetch(ctx context.Context) error {
	if s.have == reuseSame {
		s.report.Skipped = true
		s.report.Note = fmt.Sprintf("release %s is already on this host from the same artifact (sha256 %s): not fetched again", s.cmd.Release, s.manifest.SHA256)
		return nil
	}
	r := s.r
	if err := os.MkdirAll(r.downloadsDir(), 0o755); err != nil {
		return err
	}
	retries := r.cfg.Artifacts.Retries
	if retries <= 0 {
		retries = artifact.NoRetries
	}
	a, err := artifact.Fetch(ctx, s.cmd.ArtifactURL, r.downloadsDir(), artifact.Options{
		MaxBytes:   r.cfg.Artifacts.MaxBytes,
		Retries:    retries,
		HTTPClient: r.cfg.HTTPClient,
		Logger:     r.log,
	})
	if err != nil {
		return err
	}
	s.download, s.sha = a.Path, a.SHA256
	s.j.Download = a.Path
	return nil
}

func (s *step) unfetch(context.Context) error {
	if s.download == "" {
		return nil
	}
	if err := os.Remove(s.download); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (s *step) verify(ctx context.Context) error {
	if s.have == reuseSame {
		s.report.Skipped = true
		s.report.Note = "verified when it was unpacked (manifest sha256 matches"
		if s.manifest.SignerKeyID != "" {
			s.report.Note += ", signed by trusted key " + s.manifest.SignerKeyID
		}
		s.report.Note += ")"
		return nil
	}
	signer, err := artifact.VerifySigner(ctx, artifact.Artifact{Path: s.download, SHA256: s.sha}, artifact.Want{
		SHA256:      s.cmd.SHA256,
		Signature:   s.cmd.Signature,
		TrustedKeys: s.r.cfg.TrustedKeys,
	})
	s.signer = signer
	return err
}

// newManifest is the manifest of the artifact this step verified.
func (s *step) newManifest() releasedir.Manifest {
	return releasedir.Manifest{Release: s.cmd.Release, SHA256: s.sha, SignerKeyID: s.signer, ArtifactURL: s.cmd.ArtifactURL}
}

func (s *step) unpack(ctx context.Context) error {
	switch s.have {
	case reuseSame:
		s.report.Skipped = true
		s.report.Note = "release " + s.cmd.Release + " is already unpacked on this host"
		return nil
	case reuseResign:
		// The same bytes: the tree stays, the manifest names the signer
		// that verified now.
		s.report.Skipped = true
		s.report.Note = "release " + s.cmd.Release + " is already unpacked on this host from the same artifact; manifest updated with signer " + s.signer
		return s.r.dir.WriteManifest(s.newManifest())
	}
	staging, err := s.r.dir.StagingDir(s.cmd.Release)
	if err != nil {
		return err
	}
	a := s.r.cfg.Artifacts
	if _, err := unpack.Unpack(ctx, s.download, staging, unpack.Options{
		Limits:         unpack.Limits{MaxBytes: a.MaxUnpackedBytes, MaxEntries: a.MaxFiles},
		ExecutableName: s.r.cfg.Service.Name,
	}); err != nil {
		return err
	}
	if err := s.r.dir.CheckStaged(s.cmd.Release); err != nil {
		return err
	}
	if s.have == reuseLegacy {
		// The tree on the host was unpacked by an older agent and has no
		// manifest: keep it only if it is this artifact's tree.
		if err := s.r.dir.SameTree(s.cmd.Release); err != nil {
			return fmt.Errorf("release %s is already on this host (unpacked by an older agent, no manifest) and differs from this artifact: %v; deploy the artifact under a new release id", s.cmd.Release, err)
		}
		if err := s.r.dir.WriteManifest(s.newManifest()); err != nil {
			return err
		}
		s.report.Note = "release " + s.cmd.Release + " was already on this host without a manifest; unpacked again, it is the same tree: kept, manifest written"
		_, err := s.r.dir.StagingDir(s.cmd.Release) // removes the copy
		return err
	}
	if err := s.r.dir.WriteStagedManifest(s.newManifest()); err != nil {
		return err
	}
	if err := s.r.dir.Commit(s.cmd.Release); err != nil {
		if errors.Is(err, releasedir.ErrExists) {
			return fmt.Errorf("release %s appeared on this host during the deploy: %w", s.cmd.Release, err)
		}
		return err
	}
	return nil
}

// unstage removes a staging directory left by a failed unpack. A committed
// release stays: it is complete, and Prune ages it out.
func (s *step) unstage(context.Context) error {
	_, err := s.r.dir.StagingDir(s.cmd.Release) // removes a stale staging dir
	return err
}

func (s *step) preSwap(ctx context.Context) error {
	return s.hook(ctx, StagePreSwap, s.r.cfg.Service.Hooks.PreSwap, s.cmd.Release)
}

func (s *step) postSwap(ctx context.Context) error {
	if err := s.hook(ctx, StagePostSwap, s.r.cfg.Service.Hooks.PostSwap, s.cmd.Release); err != nil {
		s.report.Warning = err.Error() // reported, does not fail the step
	}
	return nil
}

// runOnRollback runs the on_rollback hook and reports it as a stage.
func (s *step) runOnRollback(ctx context.Context) {
	s.res.Stages = append(s.res.Stages, StageReport{Name: StageOnRollback})
	s.report = &s.res.Stages[len(s.res.Stages)-1]
	dirRelease := s.j.Previous
	if dirRelease == "" {
		dirRelease = s.cmd.Release
	}
	hctx, cancel := s.ctxFor(ctx, true)
	defer cancel()
	if err := s.hook(hctx, StageOnRollback, s.r.cfg.Service.Hooks.OnRollback, dirRelease); err != nil {
		s.report.Warning = err.Error()
	}
}

// hook runs one configured hook in the directory of release dirRelease and
// records its output and duration in the current report.
func (s *step) hook(ctx context.Context, name string, argv []string, dirRelease string) error {
	if len(argv) == 0 {
		s.report.Skipped = true
		return nil
	}
	dir, err := s.r.dir.ReleasePath(dirRelease)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		dir = s.r.dir.Path()
	}
	res, err := hooks.Run(ctx, hooks.Hook{
		Name:            name,
		Command:         argv,
		Dir:             dir,
		Timeout:         s.r.cfg.Service.Hooks.Timeout,
		Service:         s.r.cfg.Service.Name,
		Release:         s.cmd.Release,
		PreviousRelease: s.j.Previous,
	})
	s.report.HookOutput = string(res.Output)
	s.report.Seconds = res.Duration.Seconds()
	return err
}

func (s *step) swap(context.Context) error { return s.r.dir.Swap(s.cmd.Release) }

// unswap points current back at the previous release and the previous link
// back at what it named before the step. A first deploy has no previous
// release: current is removed (releasedir.ClearCurrent), so that no current
// names a release that never worked and the next deploy does not record it
// as previous, the target of a rollback (the service is stopped by
// unrestart).
func (s *step) unswap(context.Context) error {
	if s.j.Previous == "" {
		return s.r.dir.ClearCurrent(s.j.PreviousLink)
	}
	return s.r.dir.SwapBack(s.j.Previous, s.j.PreviousLink)
}

func (s *step) restart(ctx context.Context) error {
	return s.r.restartOn(ctx, s.cmd.Release)
}

func (s *step) unrestart(ctx context.Context) error {
	if s.j.Previous == "" {
		return s.r.cfg.Manager.Stop(ctx)
	}
	return s.r.restartOn(ctx, s.j.Previous)
}

func (s *step) health(ctx context.Context) error { return s.r.waitHealthy(ctx) }

func (s *step) cleanup(context.Context) error {
	var errs []error
	if _, err := s.r.dir.Prune(s.r.cfg.Service.KeepReleases); err != nil {
		errs = append(errs, fmt.Errorf("prune: %w", err))
	}
	if err := s.r.removeDownloads(); err != nil {
		errs = append(errs, fmt.Errorf("remove downloads: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		s.report.Warning = err.Error() // the release is live; leftovers are reported
	}
	return nil
}

// restartOn restarts the service on a committed release.
func (r *Runner) restartOn(ctx context.Context, release string) error {
	dir, err := r.dir.ReleasePath(release)
	if err != nil {
		return err
	}
	port := r.livePort()
	return r.cfg.Manager.Restart(ctx, svcmgr.Spec{ReleaseDir: dir, Port: port, Env: r.cfg.Service.Env(port)})
}

// waitHealthy waits for the configured number of consecutive passing probes
// within the health deadline; without a health URL it checks that the
// service runs.
func (r *Runner) waitHealthy(ctx context.Context) error {
	return r.waitHealthyOn(ctx, r.livePort(), r.cfg.Manager)
}

// waitHealthyOn is waitHealthy for the instance on port run by mgr.
func (r *Runner) waitHealthyOn(ctx context.Context, port int, mgr ServiceManager) error {
	svc := r.cfg.Service
	url := svc.HealthURL(port)
	if url == "" {
		if !mgr.Running() {
			return errors.New("service is not running")
		}
		return nil
	}
	h := svc.Health
	return health.WaitHealthy(ctx, health.Check{URL: url, ExpectStatus: h.ExpectStatus, Timeout: h.Timeout},
		h.Successes, h.Interval, h.Deadline)
}
