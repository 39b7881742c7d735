package deploystep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/hooks"
	"github.com/golive/golive/internal/svcmgr"
)

// DefaultMigrateTimeout bounds a migration when the config sets none.
const DefaultMigrateTimeout = 10 * time.Minute

// safetyRelease names a restore's safety backup (<time>-pre-restore).
const safetyRelease = "pre-restore"

// hasMigration reports whether a deploy of this service runs a migration
// (and therefore takes a backup first).
func (r *Runner) hasMigration() bool {
	m := r.cfg.Service.Migrate
	return m != nil && len(m.Command) > 0
}

// dbOptions are the dbbackup options for this service's database.
func (r *Runner) dbOptions(before, after string) (dbbackup.Options, error) {
	svc := r.cfg.Service
	if svc.Database == nil {
		return dbbackup.Options{}, errors.New("the service has no database block")
	}
	return dbbackup.Options{
		EnvFile:       svc.DatabaseEnvFile(),
		DSNKey:        svc.Database.DSNEnvKey,
		Dir:           r.cfg.BackupDir,
		Service:       svc.Name,
		Host:          r.cfg.HostID,
		ReleaseBefore: before,
		ReleaseAfter:  after,
		BinDir:        r.cfg.PGBinDir,
		Logger:        r.log,
	}, nil
}

// backup takes a pg_dump of the service's database and proves it restorable
// (dbbackup.BackupAndVerify) before a migration may run. Without a migrate
// command there is nothing to protect: skipped. Old backups are pruned
// afterwards; a prune failure is a warning.
func (s *step) backup(ctx context.Context) error {
	r := s.r
	if !r.hasMigration() {
		s.report.Skipped = true
		return nil
	}
	if r.cfg.Service.Database == nil {
		return errors.New("the service has a migrate command but no database block: no migration runs without a verified backup")
	}
	opts, err := r.dbOptions(s.j.Previous, s.cmd.Release)
	if err != nil {
		return err
	}
	rec, err := dbbackup.BackupAndVerify(ctx, opts)
	if err != nil {
		return fmt.Errorf("no migration was run: %w", err)
	}
	s.res.Backup = &rec
	s.j.BackupID = rec.ID
	if err := writeJSON(r.journalPath(), s.j); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	s.report.HookOutput = fmt.Sprintf("backup %s: %d bytes, %d tables, verified by a restore at %s",
		rec.ID, rec.Size, len(rec.Tables), rec.VerifiedAt.Format(time.RFC3339))
	if err := r.pruneBackups(); err != nil {
		s.warn(err.Error())
	}
	return nil
}

// pruneBackups applies keep_backups and max_backup_age (dbbackup.Prune
// removes each pruned dump's record with it).
func (r *Runner) pruneBackups() error {
	db := r.cfg.Service.Database
	removed, err := dbbackup.Prune(r.cfg.BackupDir, db.KeepBackups, db.MaxBackupAge)
	if len(removed) > 0 {
		r.log.Info("old database backups pruned", "removed", removed)
	}
	return err
}

// migrate runs the release's migration command from the new release's
// directory, with the service's env files (the DSN among them) in its
// environment, bounded by migrate.timeout. It is not cut short when the
// operation is cancelled (a migration killed half-way is worse than one that
// finishes), and it only runs after backup recorded a verified backup. The
// journal says "started" before the command runs, so a crash during it is
// never mistaken for "not run" and the migration is never rerun.
func (s *step) migrate(ctx context.Context) error {
	r := s.r
	if !r.hasMigration() {
		s.report.Skipped = true
		return nil
	}
	if s.res.Backup == nil || s.res.Backup.VerifiedAt.IsZero() {
		return errors.New("no verified backup: the migration was not run")
	}
	dir, err := r.dir.ReleasePath(s.cmd.Release)
	if err != nil {
		return err
	}
	env, red, err := r.migrationEnv()
	if err != nil {
		return fmt.Errorf("the migration was not run: %w", err)
	}
	m := r.cfg.Service.Migrate
	argv := append([]string(nil), m.Command...)
	if !filepath.IsAbs(argv[0]) {
		argv[0] = filepath.Join(dir, argv[0])
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultMigrateTimeout
	}
	s.j.Migration = migrationStarted
	if err := writeJSON(r.journalPath(), s.j); err != nil {
		return fmt.Errorf("the migration was not run: write journal: %w", err)
	}
	res, err := hooks.Run(context.WithoutCancel(ctx), hooks.Hook{
		Name:            StageMigrate,
		Command:         argv,
		Dir:             dir,
		Timeout:         timeout,
		Service:         r.cfg.Service.Name,
		Release:         s.cmd.Release,
		PreviousRelease: s.j.Previous,
		Env:             env,
	})
	s.report.HookOutput = red.String(string(res.Output))
	if err != nil {
		return errors.New(red.String(err.Error()))
	}
	s.j.Migration = migrationDone
	return nil
}

// migrationEnv is the migration's environment: exec.env_file, the database
// env file, then exec.env; and a redactor for the DSN and its password.
func (r *Runner) migrationEnv() (map[string]string, dbbackup.Redactor, error) {
	svc := r.cfg.Service
	env := map[string]string{}
	files := []string{}
	if svc.Exec != nil && svc.Exec.EnvFile != "" {
		files = append(files, svc.Exec.EnvFile)
	}
	if f := svc.DatabaseEnvFile(); f != "" && (len(files) == 0 || files[0] != f) {
		files = append(files, f)
	}
	for _, f := range files {
		kv, err := svcmgr.ReadEnvFile(f)
		if err != nil {
			return nil, dbbackup.Redactor{}, err
		}
		for k, v := range kv {
			env[k] = v
		}
	}
	for k, v := range svc.Env(svc.Port) {
		env[k] = v
	}
	dsn := ""
	if svc.Database != nil {
		var ok bool
		if dsn, ok = env[svc.Database.DSNEnvKey]; !ok {
			return nil, dbbackup.Redactor{}, fmt.Errorf("the database env file has no key %s (the DSN)", svc.Database.DSNEnvKey)
		}
	}
	return env, dbbackup.NewRedactor(dsn, env["PGPASSWORD"]), nil
}

// loadRestore finds the backup a rollback asks to restore: a verified backup
// of this service recorded on this host. Nothing is changed when it fails.
func (r *Runner) loadRestore(cmd Command) (*dbbackup.Record, error) {
	if r.cfg.Service.Database == nil {
		return nil, fmt.Errorf("restore backup %s: the service has no database block on this host", cmd.RestoreBackupID)
	}
	rec, err := dbbackup.LoadRecord(r.cfg.BackupDir, cmd.RestoreBackupID)
	if err != nil {
		return nil, fmt.Errorf("restore backup: %w (nothing was changed)", err)
	}
	if rec.Service != "" && rec.Service != r.cfg.Service.Name {
		return nil, fmt.Errorf("restore backup %s: it is a backup of service %q (nothing was changed)", rec.ID, rec.Service)
	}
	if rec.VerifiedAt.IsZero() {
		return nil, fmt.Errorf("restore backup %s: it was never verified (nothing was changed)", rec.ID)
	}
	if cmd.Release == "" && rec.ReleaseBefore == "" {
		return nil, fmt.Errorf("restore backup %s: it was taken before the first release; name the release to roll back to (nothing was changed)", rec.ID)
	}
	return rec, nil
}

// restoreDB stops the service, takes and verifies a safety backup of the
// database as it is now (recorded, so it can itself be restored), then
// restores the requested backup exactly (dbbackup.Restore: one
// transaction that empties the user schemas and replays the dump; a
// failure leaves the database as it was).
func (s *step) restoreDB(ctx context.Context) error {
	r := s.r
	if err := r.cfg.Manager.Stop(ctx); err != nil {
		return fmt.Errorf("stop the service: %w", err)
	}
	opts, err := r.dbOptions(s.j.Previous, safetyRelease)
	if err != nil {
		return err
	}
	safety, err := dbbackup.BackupAndVerify(ctx, opts)
	if err != nil {
		return fmt.Errorf("safety backup before the restore (the database was not changed): %w", err)
	}
	s.res.Backup = &safety
	s.j.BackupID, s.j.Restoring = safety.ID, true
	if err := writeJSON(r.journalPath(), s.j); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	if err := dbbackup.Restore(ctx, s.restore, opts); err != nil {
		return fmt.Errorf("%w (the restore is one transaction: the database is as before; safety backup %s)", err, safety.ID)
	}
	s.dbRestored = true
	s.report.HookOutput = fmt.Sprintf("restored backup %s (taken before %s); safety backup %s", s.restore.ID, s.restore.ReleaseAfter, safety.ID)
	return nil
}

// unrestoreDB brings the service back up on the release it ran (restore_db
// stopped it). The database is not restored again: see databaseWarnings.
func (s *step) unrestoreDB(ctx context.Context) error {
	if s.r.cfg.Manager.Running() || s.j.Previous == "" {
		return nil
	}
	return s.r.restartOn(ctx, s.j.Previous)
}

// databaseWarnings records what an undo leaves in the database: the binary
// goes back, the database does not.
func (s *step) databaseWarnings() {
	backup := "(none)"
	if s.j.BackupID != "" {
		backup = s.j.BackupID
	}
	switch {
	case s.j.Migration == migrationDone:
		s.warnAt(StageMigrate, fmt.Sprintf("the schema stays migrated by release %s while the binary goes back to %s; backup %s holds the database as it was before the migration (golive-controller rollback --restore-db %s)",
			s.cmd.Release, orNone(s.j.Previous), backup, backup))
	case s.j.Migration == migrationStarted:
		s.warnAt(StageMigrate, fmt.Sprintf("the migration of release %s did not finish: the database may be partly migrated; backup %s holds it as it was before (golive-controller rollback --restore-db %s)",
			s.cmd.Release, backup, backup))
	case s.dbRestored:
		s.warnAt(StageRestoreDB, fmt.Sprintf("the database stays restored to backup %s while the binary went back to %s; safety backup %s holds the database as it was before the restore",
			s.j.RestoreBackupID, orNone(s.j.Previous), backup))
	}
}

func orNone(release string) string {
	if release == "" {
		return "(none)"
	}
	return release
}

// warn adds a warning to the current stage's report and to the result.
func (s *step) warn(msg string) {
	addWarning(s.res, s.report, msg)
}

// warnAt adds a warning to stage's report (the last one of that name) and to
// the result.
func (s *step) warnAt(stage, msg string) {
	var rep *StageReport
	for i := len(s.res.Stages) - 1; i >= 0; i-- {
		if s.res.Stages[i].Name == stage {
			rep = &s.res.Stages[i]
			break
		}
	}
	if rep == nil {
		s.res.Stages = append(s.res.Stages, StageReport{Name: stage})
		rep = &s.res.Stages[len(s.res.Stages)-1]
	}
	addWarning(s.res, rep, msg)
}

func addWarning(res *Result, rep *StageReport, msg string) {
	name := ""
	if rep != nil {
		name = rep.Name
		if rep.Warning != "" {
			rep.Warning += "; "
		}
		rep.Warning += msg
	}
	res.Warnings = append(res.Warnings, name+": "+msg)
}

// cleanBackupLeftovers removes what a crash in the middle of a backup named
// for release leaves: its dumps with no record (never verified) and its
// partial .tmp files. A scratch database golive_verify_* that Verify was
// restoring into when the agent died is not found here (its name is
// random); it is harmless and can be dropped by hand.
func (r *Runner) cleanBackupLeftovers(release string) error {
	ents, err := os.ReadDir(r.cfg.BackupDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(strings.TrimSuffix(name, ".tmp"), "-"+release+".dump") {
			continue
		}
		id, isDump := strings.CutSuffix(name, ".dump")
		stale := strings.HasSuffix(name, ".dump.tmp")
		if isDump {
			if _, err := os.Stat(filepath.Join(r.cfg.BackupDir, id+".json")); errors.Is(err, os.ErrNotExist) {
				stale = true
			}
		}
		if stale {
			r.log.Warn("removing a backup a crash left unverified", "file", name)
			if err := os.Remove(filepath.Join(r.cfg.BackupDir, name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
