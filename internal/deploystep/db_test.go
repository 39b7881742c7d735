package deploystep

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/svcmgr"
)

// migrateScript is every migration release's migrate command: it prints the
// DSN (to prove the step redacts it), applies migrate.sql with psql, and,
// with a CRASH_AGENT marker, SIGKILLs the agent (its parent) once the SQL
// ran: a crash in the middle of the migrate stage.
const migrateScript = `#!/bin/sh
set -e
echo "migrating with $DATABASE_URL"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -f migrate.sql
echo "migration applied"
if [ -f CRASH_AGENT ]; then kill -9 $PPID; sleep 10; fi
`

// migrationReleases makes the migration releases built on sampleapp v:
// m1 (v1, a no-op migration), m2 and mcrash (v2: a real migration; mcrash
// kills the agent after it), m3 (v3, fails health, migrates).
func migrationReleases(bin, v string) (map[string][]byte, error) {
	const runs = "CREATE TABLE IF NOT EXISTS migration_runs (release text);\n"
	sqls := map[string]map[string]string{
		"v1": {"m1": "SELECT 1;\n"},
		"v2": {
			"m2": runs + `INSERT INTO migration_runs VALUES ('m2');
ALTER TABLE users ADD COLUMN email text;
UPDATE users SET email = name || '@example.com';
CREATE TABLE audit (id serial PRIMARY KEY, what text);
INSERT INTO audit (what) SELECT 'migrated ' || g FROM generate_series(1, 7) g;
DELETE FROM orders WHERE id % 2 = 0;
`,
			"mcrash": runs + "INSERT INTO migration_runs VALUES ('mcrash');\n",
			"mbad":   "ALTER TABLE no_such_table ADD COLUMN x int;\n",
		},
		"v3": {"m3": runs + "INSERT INTO migration_runs VALUES ('m3');\nALTER TABLE users ADD COLUMN m3_flag bool;\n"},
	}
	out := map[string][]byte{}
	for name, sql := range sqls[v] {
		files := []tarFile{{"migrate", 0o755, migrateScript}, {"migrate.sql", 0o644, sql}}
		if name == "mcrash" {
			files = append(files, tarFile{"CRASH_AGENT", 0o644, "yes\n"})
		}
		b, err := makeTarball(bin, v, files...)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

// dbPlan gives the test service a database and a migration.
type dbPlan struct {
	EnvFile   string `json:"env_file"`
	BackupDir string `json:"backup_dir"`
	PGBinDir  string `json:"pg_bin_dir"`
	Keep      int    `json:"keep"`
}

func (p *dbPlan) apply(cfg *Config) {
	if p == nil {
		return
	}
	keep := p.Keep
	if keep == 0 {
		keep = 10
	}
	cfg.Service.Database = &agentconfig.Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL", EnvFile: p.EnvFile, KeepBackups: keep}
	cfg.Service.Migrate = &agentconfig.Migrate{Command: []string{"migrate"}, Timeout: time.Minute}
	cfg.BackupDir, cfg.PGBinDir, cfg.HostID = p.BackupDir, p.PGBinDir, "host-1"
}

// dbFixture is a PostgreSQL server with database "app" holding real rows,
// an env file pointing at it, and a bin dir of links to the PostgreSQL tools
// (replaceable by failing wrappers).
type dbFixture struct {
	pg   *pgtest.Server
	plan *dbPlan
}

func newDBFixture(t *testing.T) *dbFixture {
	t.Helper()
	pg := pgtest.Start(t)
	pg.CreateDB(t, "app")
	pg.Exec(t, "app", `
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), total numeric);
INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 500) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 500, g * 1.5 FROM generate_series(1, 200) g;`)
	dir := t.TempDir()
	bin := filepath.Join(dir, "pgbin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"psql", "pg_dump", "pg_restore"} {
		if err := os.Symlink(filepath.Join(pg.BinDir, tool), filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	f := &dbFixture{pg: pg, plan: &dbPlan{EnvFile: filepath.Join(dir, "app.env"), BackupDir: filepath.Join(dir, "backups"), PGBinDir: bin}}
	f.setDSN(t, pg.DSN("app"))
	return f
}

func (f *dbFixture) setDSN(t *testing.T, dsn string) {
	t.Helper()
	if err := svcmgr.WriteEnvFile(f.plan.EnvFile, map[string]string{"DATABASE_URL": dsn, "PG_BIN": f.pg.BinDir}); err != nil {
		t.Fatal(err)
	}
}

// setTool replaces a PostgreSQL tool in the fixture's bin dir by script
// ("" puts the real tool back).
func (f *dbFixture) setTool(t *testing.T, tool, script string) {
	t.Helper()
	path := filepath.Join(f.plan.PGBinDir, tool)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if script == "" {
		if err := os.Symlink(filepath.Join(f.pg.BinDir, tool), path); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// fingerprint is the users and orders data and the users columns.
func (f *dbFixture) fingerprint(t *testing.T) string {
	t.Helper()
	return f.pg.Exec(t, "app", `SELECT
  (SELECT count(*) || ':' || md5(string_agg(id || name, ',' ORDER BY id)) FROM users) || '|' ||
  (SELECT count(*) || ':' || md5(string_agg(id || '/' || user_id || '/' || total, ',' ORDER BY id)) FROM orders) || '|' ||
  (SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'users')`)
}

// tables lists the public tables, sorted, comma-separated.
func (f *dbFixture) tables(t *testing.T) string {
	t.Helper()
	return f.pg.Exec(t, "app", "SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables WHERE schemaname = 'public'")
}

func (f *dbFixture) hasColumn(t *testing.T, col string) bool {
	t.Helper()
	return f.pg.Exec(t, "app", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = '"+col+"'") == "1"
}

func (f *dbFixture) migrationRuns(t *testing.T) string {
	t.Helper()
	if f.pg.Exec(t, "app", "SELECT count(*) FROM pg_tables WHERE tablename = 'migration_runs'") == "0" {
		return ""
	}
	return f.pg.Exec(t, "app", "SELECT coalesce(string_agg(release, ',' ORDER BY release), '') FROM migration_runs")
}

// noSecret fails when text carries the database password or DSN.
func (f *dbFixture) noSecret(t *testing.T, what, text string) {
	t.Helper()
	if strings.Contains(text, f.pg.Password) || strings.Contains(text, "postgres://") {
		t.Fatalf("%s leaks the DSN or password: %s", what, text)
	}
}

func (f *dbFixture) resultNoSecret(t *testing.T, res Result) {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	f.noSecret(t, "result", string(b))
}

func stageReport(res Result, name string) *StageReport {
	for i := range res.Stages {
		if res.Stages[i].Name == name {
			return &res.Stages[i]
		}
	}
	return nil
}

func dumps(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.dump*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func TestMigrationBackupThenRestoreOnRollback(t *testing.T) {
	srv := serveArtifacts(t)
	db := newDBFixture(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)

	first := mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
	if first.Backup == nil || first.Backup.ReleaseBefore != "" || first.Backup.ReleaseAfter != "m1" {
		t.Fatalf("first deploy's backup %+v", first.Backup)
	}
	before := db.fingerprint(t)

	res := mustRun(t, r, deployCmd(srv, "c2", "m2"), OutcomeSucceeded)
	db.resultNoSecret(t, res)
	var order []string
	for _, st := range res.Stages {
		order = append(order, st.Name)
	}
	if got := strings.Join(order, ","); got != "fetch,verify,unpack,pre_swap,backup,migrate,swap,restart,health,smoke,post_swap,cleanup" {
		t.Fatalf("stages %s", got)
	}
	rec := res.Backup
	if rec == nil || rec.VerifiedAt.IsZero() || rec.ReleaseBefore != "m1" || rec.ReleaseAfter != "m2" || rec.Host != "host-1" || rec.Service != "app" {
		t.Fatalf("backup %+v", rec)
	}
	counts := map[string]int64{}
	for _, tc := range rec.Tables {
		counts[tc.Name] = tc.Rows
	}
	if counts["public.users"] != 500 || counts["public.orders"] != 200 || len(counts) != 2 {
		t.Fatalf("backup counts %v, want users 500, orders 200 (before the migration)", counts)
	}
	if stored, err := dbbackup.LoadRecord(db.plan.BackupDir, rec.ID); err != nil || stored.SHA256 != rec.SHA256 {
		t.Fatalf("stored record %+v, %v", stored, err)
	}
	// The migration ran, after the backup, with the DSN in its environment
	// but not in its reported output.
	if !db.hasColumn(t, "email") || db.migrationRuns(t) != "m2" {
		t.Fatalf("migration did not run: runs %q", db.migrationRuns(t))
	}
	if n := db.pg.Exec(t, "app", "SELECT count(*) FROM orders"); n != "100" {
		t.Fatalf("orders after migration %s", n)
	}
	t.Logf("backup %.2fs (%d bytes), migrate %.2fs", stageReport(res, StageBackup).Seconds, rec.Size, stageReport(res, StageMigrate).Seconds)
	mig := stageReport(res, StageMigrate)
	if !strings.Contains(mig.HookOutput, "migrating with [redacted]") || !strings.Contains(mig.HookOutput, "migration applied") {
		t.Fatalf("migrate output %q", mig.HookOutput)
	}
	if got := answers(t, port); got != "v2" {
		t.Fatalf("service answers %q", got)
	}
	afterMigration := db.fingerprint(t)

	// An unknown backup id: a clear error, nothing changed.
	bad := r.Run(t.Context(), Command{ID: "c3", Kind: KindRollback, RestoreBackupID: "20200101T000000Z-nope"}, nil)
	if bad.Outcome != OutcomeFailed || !strings.Contains(bad.Error, "no such verified backup") || !strings.Contains(bad.Error, "nothing was changed") {
		t.Fatalf("unknown backup: %s %q", bad.Outcome, bad.Error)
	}
	if current(t, r) != "m2" || answers(t, port) != "v2" || db.fingerprint(t) != afterMigration {
		t.Fatal("a rollback with an unknown backup changed something")
	}

	// Roll back with the restore: the release the backup was taken before,
	// the data as it was before the migration, a safety backup of the
	// migrated data.
	back := mustRun(t, r, Command{ID: "c4", Kind: KindRollback, RestoreBackupID: rec.ID}, OutcomeSucceeded)
	db.resultNoSecret(t, back)
	if back.Release != "m1" || current(t, r) != "m1" || answers(t, port) != "v1" {
		t.Fatalf("after restore: release %q current %q answers %q", back.Release, current(t, r), answers(t, port))
	}
	if got := db.fingerprint(t); got != before {
		t.Fatalf("after restore %s, want %s", got, before)
	}
	// The restore is exact: the tables m2's migration created are gone.
	if got := db.tables(t); got != "orders,users" {
		t.Fatalf("tables after restore %q, want only the backup's orders,users", got)
	}
	t.Logf("restore_db (stop, safety backup, restore) %.2fs", stageReport(back, StageRestoreDB).Seconds)
	safety := back.Backup
	if safety == nil || safety.VerifiedAt.IsZero() || safety.ReleaseAfter != "pre-restore" || safety.ID == rec.ID {
		t.Fatalf("safety backup %+v", safety)
	}
	for _, tc := range safety.Tables {
		if tc.Name == "public.orders" && tc.Rows != 100 {
			t.Fatalf("safety backup has %d orders, want the migrated 100", tc.Rows)
		}
	}
	if _, err := dbbackup.LoadRecord(db.plan.BackupDir, safety.ID); err != nil {
		t.Fatalf("safety backup not recorded: %v", err)
	}
	if _, err := os.Stat(safety.Path); err != nil {
		t.Fatal(err)
	}
	noJournal(t, r)

	// The safety backup is itself restorable: back to the migrated data.
	mustRun(t, r, Command{ID: "c5", Kind: KindRollback, Release: "m2", RestoreBackupID: safety.ID}, OutcomeSucceeded)
	if got := db.fingerprint(t); got != afterMigration || answers(t, port) != "v2" {
		t.Fatalf("after restoring the safety backup %s, want %s", got, afterMigration)
	}
	if got := db.tables(t); got != "audit,migration_runs,orders,users" || db.migrationRuns(t) != "m2" {
		t.Fatalf("tables after restoring the safety backup %q (runs %q), want m2's audit and migration_runs back", got, db.migrationRuns(t))
	}
}

// A failure after the migration swaps the binary back; the schema stays
// migrated and the result says so, naming the backup.
func TestHealthFailureAfterMigrationWarns(t *testing.T) {
	srv := serveArtifacts(t)
	db := newDBFixture(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
	mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
	res := mustRun(t, r, deployCmd(srv, "c2", "m3"), OutcomeRolledBack)
	if res.FailedStage != StageHealth || res.Backup == nil {
		t.Fatalf("failed at %q, backup %+v", res.FailedStage, res.Backup)
	}
	if !db.hasColumn(t, "m3_flag") {
		t.Fatal("m3's migration did not run")
	}
	if current(t, r) != "m1" || answers(t, port) != "v1" {
		t.Fatalf("not rolled back: current %q", current(t, r))
	}
	w := strings.Join(res.Warnings, "\n")
	if !strings.Contains(w, "schema stays migrated by release m3") || !strings.Contains(w, res.Backup.ID) {
		t.Fatalf("warnings %q", w)
	}
	if rep := stageReport(res, StageMigrate); rep == nil || !strings.Contains(rep.Warning, "schema stays migrated") {
		t.Fatalf("migrate report %+v", rep)
	}
	db.resultNoSecret(t, res)
}

// A failing migration stops the step before the swap; its output reaches
// the report without the DSN, and the result warns that the database may
// be partly migrated, naming the backup.
func TestFailingMigration(t *testing.T) {
	srv := serveArtifacts(t)
	db := newDBFixture(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
	mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
	res := r.Run(t.Context(), deployCmd(srv, "c2", "mbad"), nil)
	t.Logf("%s at %q: %s; warnings %q", res.Outcome, res.FailedStage, res.Error, res.Warnings)
	if res.Outcome == OutcomeSucceeded || res.FailedStage != StageMigrate || !strings.Contains(res.Error, "exit status") {
		t.Fatalf("outcome %s at %q: %s", res.Outcome, res.FailedStage, res.Error)
	}
	rep := stageReport(res, StageMigrate)
	if !strings.Contains(rep.HookOutput, `relation "no_such_table" does not exist`) || !strings.Contains(rep.HookOutput, "[redacted]") {
		t.Fatalf("migrate output %q", rep.HookOutput)
	}
	if res.Backup == nil || !strings.Contains(strings.Join(res.Warnings, ";"), "may be partly migrated; backup "+res.Backup.ID) {
		t.Fatalf("warnings %q, backup %+v", res.Warnings, res.Backup)
	}
	db.resultNoSecret(t, res)
	if current(t, r) != "m1" || answers(t, port) != "v1" {
		t.Fatalf("current %q answers %q", current(t, r), answers(t, port))
	}
	noJournal(t, r)
}

// A backup that cannot be taken or proven restorable stops the step before
// the migration: the schema is unchanged, current is untouched, and the
// error says why without the DSN.
func TestBackupFailureRunsNoMigration(t *testing.T) {
	srv := serveArtifacts(t)
	const canary = "Canary-Pw-b4d5e6"
	tests := []struct {
		name    string
		setup   func(t *testing.T, db *dbFixture)
		wantErr string
	}{
		{"pg_dump killed", func(t *testing.T, db *dbFixture) {
			db.setTool(t, "pg_dump", "#!/bin/sh\nkill -9 $$\n")
		}, "pg_dump"},
		{"restore of the dump fails verification", func(t *testing.T, db *dbFixture) {
			db.setTool(t, "pg_restore", "#!/bin/sh\necho 'pg_restore: error: simulated corrupt archive' >&2\nexit 1\n")
		}, "simulated corrupt archive"},
		{"wrong DSN", func(t *testing.T, db *dbFixture) {
			db.setDSN(t, "postgres://golive:"+canary+"@127.0.0.1:"+strconv.Itoa(db.pg.Port)+"/app?sslmode=disable")
		}, "password authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDBFixture(t)
			state, port := t.TempDir(), freePort(t)
			r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
			mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
			before, kept := db.fingerprint(t), dumps(t, db.plan.BackupDir)

			tt.setup(t, db)
			res := r.Run(t.Context(), deployCmd(srv, "c2", "m2"), nil)
			t.Logf("%s: %s", res.Outcome, res.Error)
			if res.Outcome == OutcomeSucceeded || res.FailedStage != StageBackup {
				t.Fatalf("outcome %s at %q: %s", res.Outcome, res.FailedStage, res.Error)
			}
			if !strings.Contains(res.Error, tt.wantErr) || !strings.Contains(res.Error, "no migration was run") {
				t.Fatalf("error %q, want %q", res.Error, tt.wantErr)
			}
			if strings.Contains(res.Error, canary) {
				t.Fatalf("error leaks the password: %s", res.Error)
			}
			db.resultNoSecret(t, res)
			if res.Backup != nil {
				t.Fatalf("a failed backup reported: %+v", res.Backup)
			}
			if rep := stageReport(res, StageMigrate); rep != nil {
				t.Fatalf("migrate stage ran: %+v", rep)
			}
			if got := db.fingerprint(t); got != before || db.migrationRuns(t) != "" {
				t.Fatalf("database changed: %s, runs %q", got, db.migrationRuns(t))
			}
			if current(t, r) != "m1" || answers(t, port) != "v1" {
				t.Fatalf("current %q answers %q", current(t, r), answers(t, port))
			}
			if got := dumps(t, db.plan.BackupDir); strings.Join(got, ",") != strings.Join(kept, ",") {
				t.Fatalf("backup dir %v, want only %v", got, kept)
			}
			noJournal(t, r)
		})
	}
}

func TestSmokeChecks(t *testing.T) {
	srv := serveArtifacts(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), func(c *Config) {
		c.Service.Smoke = []*agentconfig.Smoke{
			{Name: "home", Method: "GET", Path: "/", ExpectStatus: 200, BodyContains: "sampleapp", MaxLatency: 5 * time.Second},
			{Name: "health", Method: "GET", Path: "/healthz", Headers: map[string]string{"Accept": "text/plain"}, ExpectStatus: 200},
			{Name: "version", Method: "GET", Path: "/version", ExpectStatus: 200, BodyContains: "v1"},
		}
	})
	res := mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)
	rep := stageReport(res, StageSmoke)
	if rep == nil || rep.Skipped || rep.Error != "" || strings.Count(rep.HookOutput, "PASS ") != 3 {
		t.Fatalf("smoke report %+v", rep)
	}
	t.Logf("smoke output:\n%s", rep.HookOutput)

	// v2 answers /version with "v2": the version check fails, v1 goes back.
	res = mustRun(t, r, deployCmd(srv, "c2", "v2"), OutcomeRolledBack)
	if res.FailedStage != StageSmoke || !strings.Contains(res.Error, "1 of 3 smoke checks failed: version") ||
		!strings.Contains(res.Error, `body does not contain "v1"`) {
		t.Fatalf("failed at %q: %s", res.FailedStage, res.Error)
	}
	rep = stageReport(res, StageSmoke)
	if !strings.Contains(rep.HookOutput, "PASS home") || !strings.Contains(rep.HookOutput, "FAIL version") {
		t.Fatalf("smoke output %q", rep.HookOutput)
	}
	if current(t, r) != "v1" || answers(t, port) != "v1" {
		t.Fatalf("not rolled back: current %q", current(t, r))
	}
	noJournal(t, r)
}

// A crash in the middle of the migration: Recover does not run it again,
// puts the previous release back and reports FAILED with the backup's id.
// A crash after the backup, before the migration started: undone, the
// verified backup stays, no migration ran.
func TestRecoverAfterCrashWithDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	srv := serveArtifacts(t)
	bin := faultHelper(t)
	tests := []struct {
		name     string
		give     string
		fault    string
		want     Outcome
		wantRuns string
		wantErr  string
	}{
		// pg_dump kills the agent (its parent) once it has dumped, the
		// second time it runs (the first is m1's backup).
		{"during backup", "m2", "pg_dump", OutcomeRolledBack, "", "agent restarted during stage backup"},
		{"during migrate", "mcrash", "", OutcomeFailed, "mcrash", "may have run partly or completely, and is not run again"},
		{"before migrate", "m2", "before_migrate", OutcomeRolledBack, "", "agent restarted during stage migrate"},
		{"after the backup was recorded", "m2", "after_backup", OutcomeRolledBack, "", "agent restarted during stage backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDBFixture(t)
			state, port := t.TempDir(), freePort(t)
			inBackup := tt.fault == "pg_dump"
			if inBackup {
				count := filepath.Join(t.TempDir(), "count")
				db.setTool(t, "pg_dump", `#!/bin/sh
n=$(cat `+count+` 2>/dev/null || echo 0); n=$((n+1)); echo $n > `+count+`
if [ $n -ge 2 ]; then "`+filepath.Join(db.pg.BinDir, "pg_dump")+`" "$@"; kill -9 $PPID; sleep 10; exit 1; fi
exec "`+filepath.Join(db.pg.BinDir, "pg_dump")+`" "$@"
`)
				tt.fault = ""
			}
			last := deployCmd(srv, "crash", tt.give)
			plan, _ := json.Marshal(helperPlan{State: state, Port: port, Fault: tt.fault, DB: db.plan,
				Cmds: []Command{deployCmd(srv, "first", "m1"), last}})
			cmd := exec.Command(bin, "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die: %v\n%s", err, out)
			}
			killOrphans(t, state, port)

			r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
			j, err := r.ReadJournal()
			if err != nil || j == nil || (j.BackupID == "") != inBackup {
				t.Fatalf("journal after crash: %+v, %v", j, err)
			}
			left := dumps(t, db.plan.BackupDir)
			res, err := r.Recover(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovered: %s at %q: %s; warnings %q", res.Outcome, res.FailedStage, res.Error, res.Warnings)
			if res.Outcome != tt.want || !strings.Contains(res.Error, tt.wantErr) {
				t.Fatalf("Recover: %s %q, want %s %q", res.Outcome, res.Error, tt.want, tt.wantErr)
			}
			if inBackup {
				// The unverified dump goes; m1's verified backup stays.
				got := dumps(t, db.plan.BackupDir)
				t.Logf("backup dir before recovery %v, after %v", left, got)
				if len(got) != 1 || !strings.HasSuffix(got[0], "-m1.dump") || len(left) < 2 {
					t.Fatalf("backup dir after recovery %v (before %v)", got, left)
				}
				if res.Backup != nil || db.migrationRuns(t) != "" || current(t, r) != "m1" || answers(t, port) != "v1" {
					t.Fatalf("after a crash in backup: backup %+v, runs %q, current %q", res.Backup, db.migrationRuns(t), current(t, r))
				}
				noJournal(t, r)
				return
			}
			if res.Backup == nil || res.Backup.ID != j.BackupID {
				t.Fatalf("recovered result's backup %+v, journal names %s", res.Backup, j.BackupID)
			}
			if tt.want == OutcomeFailed && !strings.Contains(res.Error, j.BackupID) {
				t.Fatalf("error does not name the backup %s: %s", j.BackupID, res.Error)
			}
			db.resultNoSecret(t, *res)
			if got := db.migrationRuns(t); got != tt.wantRuns {
				t.Fatalf("migration runs %q, want %q", got, tt.wantRuns)
			}
			if current(t, r) != "m1" || answers(t, port) != "v1" {
				t.Fatalf("current %q answers %q", current(t, r), answers(t, port))
			}
			if _, err := dbbackup.LoadRecord(db.plan.BackupDir, j.BackupID); err != nil {
				t.Fatalf("the verified backup is gone: %v", err)
			}
			noJournal(t, r)
			// Sent again: the recovered result, the migration not rerun.
			again := r.Run(t.Context(), last, nil)
			if !again.Replayed || again.Outcome != tt.want || db.migrationRuns(t) != tt.wantRuns {
				t.Fatalf("re-sent: %+v, runs %q", again, db.migrationRuns(t))
			}
		})
	}
}

// A restore whose dump does not match its record fails before the database
// is changed; the service runs again on the release it ran.
func TestRestoreFailureChangesNothing(t *testing.T) {
	srv := serveArtifacts(t)
	db := newDBFixture(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
	mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
	res := mustRun(t, r, deployCmd(srv, "c2", "m2"), OutcomeSucceeded)
	migrated := db.fingerprint(t)
	if err := os.WriteFile(res.Backup.Path, []byte("not a dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	back := r.Run(t.Context(), Command{ID: "c3", Kind: KindRollback, RestoreBackupID: res.Backup.ID}, nil)
	t.Logf("%s at %q: %s", back.Outcome, back.FailedStage, back.Error)
	if back.Outcome == OutcomeSucceeded || back.FailedStage != StageRestoreDB || !strings.Contains(back.Error, res.Backup.ID) {
		t.Fatalf("outcome %s at %q: %s", back.Outcome, back.FailedStage, back.Error)
	}
	db.resultNoSecret(t, back)
	if got := db.fingerprint(t); got != migrated {
		t.Fatalf("database changed: %s, want %s", got, migrated)
	}
	if current(t, r) != "m2" || answers(t, port) != "v2" {
		t.Fatalf("current %q answers %q", current(t, r), answers(t, port))
	}
	noJournal(t, r)
}

// kill -9 in a rollback with a restore: once the restore completed, Recover
// finishes the rollback (the restored database belongs with the old
// release); in the middle of restore_db it cannot know whether the restore
// committed, so it reports FAILED, names the safety backup, and does not
// touch the database.
func TestRecoverRestoreAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a helper binary")
	}
	srv := serveArtifacts(t)
	bin := faultHelper(t)
	tests := []struct {
		name        string
		fault       string
		want        Outcome
		wantCurrent string
		wantErr     string
	}{
		{"after the restore, before the swap", "before_swap", OutcomeSucceeded, "m1", ""},
		{"at the end of restore_db", "after_restore_db", OutcomeFailed, "m2", "either as it was or fully restored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDBFixture(t)
			state, port := t.TempDir(), freePort(t)
			last := Command{ID: "crash", Kind: KindRollback, RestoreBackupID: previousBackup}
			plan, _ := json.Marshal(helperPlan{State: state, Port: port, Fault: tt.fault, DB: db.plan,
				Cmds: []Command{deployCmd(srv, "first", "m1"), deployCmd(srv, "second", "m2"), last}})
			cmd := exec.Command(bin, "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(plan))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die: %v\n%s", err, out)
			}
			killOrphans(t, state, port)

			r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
			j, err := r.ReadJournal()
			if err != nil || j == nil || j.RestoreBackupID == "" || j.BackupID == "" {
				t.Fatalf("journal after crash: %+v, %v", j, err)
			}
			res, err := r.Recover(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovered: %s at %q: %s; warnings %q", res.Outcome, res.FailedStage, res.Error, res.Warnings)
			if res.Outcome != tt.want || !strings.Contains(res.Error, tt.wantErr) {
				t.Fatalf("Recover: %s %q, want %s %q", res.Outcome, res.Error, tt.want, tt.wantErr)
			}
			if res.Backup == nil || res.Backup.ID != j.BackupID || res.Backup.ReleaseAfter != "pre-restore" {
				t.Fatalf("safety backup %+v", res.Backup)
			}
			if tt.want == OutcomeFailed && !strings.Contains(res.Error, j.BackupID) {
				t.Fatalf("error does not name the safety backup %s", j.BackupID)
			}
			db.resultNoSecret(t, *res)
			if c := current(t, r); c != tt.wantCurrent {
				t.Fatalf("current %q, want %q", c, tt.wantCurrent)
			}
			wantAnswer := map[string]string{"m1": "v1", "m2": "v2"}[tt.wantCurrent]
			if got := answers(t, port); got != wantAnswer {
				t.Fatalf("service answers %q, want %q", got, wantAnswer)
			}
			// Both crash points are after pg_restore committed.
			if db.hasColumn(t, "email") {
				t.Fatal("the database is not restored")
			}
			noJournal(t, r)
		})
	}
}
