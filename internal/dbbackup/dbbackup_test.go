package dbbackup

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/svcmgr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	pg   *pgtest.Server
	opts Options
}

// setup starts PostgreSQL with database "app" holding real rows, and an env
// file whose DATABASE_URL points at it.
func setup(t *testing.T) *fixture {
	t.Helper()
	pg := pgtest.Start(t)
	pg.CreateDB(t, "app")
	pg.Exec(t, "app", `
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), total numeric);
CREATE SCHEMA billing;
CREATE TABLE billing."Invoices" (id int PRIMARY KEY, note text);
CREATE TABLE empty_table (id int);
INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 500) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 500, g * 1.5 FROM generate_series(1, 2000) g;
INSERT INTO billing."Invoices" SELECT g, 'note ' || g FROM generate_series(1, 37) g;`)
	return &fixture{pg: pg, opts: optionsFor(t, pg, pg.DSN("app"))}
}

func optionsFor(t *testing.T, pg *pgtest.Server, dsn string) Options {
	t.Helper()
	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := svcmgr.WriteEnvFile(envFile, map[string]string{"DATABASE_URL": dsn, "OTHER": "x"}); err != nil {
		t.Fatal(err)
	}
	return Options{
		EnvFile:       envFile,
		DSNKey:        "DATABASE_URL",
		Dir:           filepath.Join(t.TempDir(), "backups", "app"),
		Service:       "app",
		Host:          "host-1",
		ReleaseBefore: "v1",
		ReleaseAfter:  "v2",
		BinDir:        pg.BinDir,
	}
}

// fingerprint is the content of the app tables, for before/after checks.
func fingerprint(t *testing.T, pg *pgtest.Server) string {
	t.Helper()
	return pg.Exec(t, "app", `SELECT
  (SELECT count(*) || ':' || md5(string_agg(id || name, ',' ORDER BY id)) FROM users) || '|' ||
  (SELECT count(*) || ':' || md5(string_agg(id || '/' || user_id || '/' || total, ',' ORDER BY id)) FROM orders) || '|' ||
  (SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM billing."Invoices")`)
}

func scratchDBs(t *testing.T, pg *pgtest.Server) string {
	t.Helper()
	return pg.Exec(t, "postgres", `SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'golive_verify_%'`)
}

func TestBackupVerifyRestoreRoundTrip(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	before := fingerprint(t, f.pg)

	rec, err := Backup(ctx, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []TableCount{{`billing."Invoices"`, 37}, {"public.empty_table", 0}, {"public.orders", 2000}, {"public.users", 500}}
	if got, _ := json.Marshal(rec.Tables); string(got) != mustJSON(t, want) {
		t.Fatalf("tables = %s, want %s", got, mustJSON(t, want))
	}
	if !strings.HasSuffix(rec.Path, "-v2.dump") || filepath.Dir(rec.Path) != f.opts.Dir {
		t.Fatalf("path = %s", rec.Path)
	}
	if _, sum, err := hashFile(rec.Path); err != nil || sum != rec.SHA256 {
		t.Fatalf("sha256 = %s, recorded %s (%v)", sum, rec.SHA256, err)
	}
	if fi, err := os.Stat(rec.Path); err != nil || fi.Size() != rec.Size || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v %v, recorded size %d", fi, err, rec.Size)
	}
	if rec.ReleaseBefore != "v1" || rec.ReleaseAfter != "v2" || rec.Database != "app" || rec.Service != "app" {
		t.Fatalf("record = %+v", rec)
	}
	if j := mustJSON(t, rec); strings.Contains(j, f.pg.Password) {
		t.Fatalf("record carries the password: %s", j)
	}

	if err := Verify(ctx, &rec, f.opts); err != nil {
		t.Fatal(err)
	}
	if rec.VerifiedAt.IsZero() {
		t.Fatal("VerifiedAt not set")
	}
	if dbs := scratchDBs(t, f.pg); dbs != "" {
		t.Fatalf("scratch databases left: %s", dbs)
	}

	// The "migration" and new data after the backup.
	f.pg.Exec(t, "app", `
DELETE FROM orders WHERE id % 2 = 0;
UPDATE users SET name = 'changed';
INSERT INTO users (name) VALUES ('late');
DROP TABLE billing."Invoices";
ALTER TABLE users ADD COLUMN email text;`)
	if n := f.pg.Exec(t, "app", "SELECT count(*) FROM users WHERE name = 'changed'"); n != "500" {
		t.Fatalf("data did not change: %s", n)
	}

	f.opts.Now = func() time.Time { return time.Now().Add(time.Second) } // distinct file name
	safety, err := safetyBackupAndRestore(ctx, &rec, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, f.pg); got != before {
		t.Fatalf("after restore %s, want %s", got, before)
	}
	if cols := f.pg.Exec(t, "app", `SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'`); cols != "0" {
		t.Fatal("restore kept the migrated column")
	}
	if safety.VerifiedAt.IsZero() || !strings.HasSuffix(safety.Path, "-pre-restore.dump") {
		t.Fatalf("safety = %+v", safety)
	}
	for _, tc := range safety.Tables {
		if tc.Name == "public.users" && tc.Rows != 501 {
			t.Fatalf("safety backup users = %d, want 501", tc.Rows)
		}
	}
}

func TestCountsMatchDumpUnderConcurrentWrites(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			f.pg.Query(ctx, "app", `INSERT INTO users (name) SELECT 'w' FROM generate_series(1, 50)`)
		}
	}()
	rec, err := Backup(t.Context(), f.opts)
	if err == nil {
		err = Verify(t.Context(), &rec, f.opts)
	}
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
}

func TestBackupCancelledMidwayLeavesNoFile(t *testing.T) {
	f := setup(t)
	f.pg.Exec(t, "app", `CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, 1500000) g`)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Backup(ctx, f.opts)
		done <- err
	}()
	// Cancel once pg_dump is writing the dump.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(f.opts.Dir, "*.tmp")); len(m) == 1 {
			if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("pg_dump never started writing")
		}
		select {
		case err := <-done:
			t.Fatalf("backup finished before it could be cancelled: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	err := <-done
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	entries, _ := os.ReadDir(f.opts.Dir)
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

func TestVerifyFails(t *testing.T) {
	f := setup(t)
	rec, err := Backup(t.Context(), f.opts)
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(rec.Path)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := func(t *testing.T, r *Record) {
		b := append([]byte(nil), good...)
		for i := len(b) / 2; i < len(b)/2+64 && i < len(b); i++ {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(r.Path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		give    func(t *testing.T, r *Record)
		wantErr string
	}{
		{"corrupt file", corrupt, "changed since the backup"},
		{"corrupt file with matching checksum", func(t *testing.T, r *Record) {
			corrupt(t, r)
			r.Size, r.SHA256, _ = hashFile(r.Path)
		}, "pg_restore"},
		{"truncated file with matching checksum", func(t *testing.T, r *Record) {
			os.WriteFile(r.Path, good[:len(good)/3], 0o600)
			r.Size, r.SHA256, _ = hashFile(r.Path)
		}, "pg_restore"},
		{"row counts differ", func(t *testing.T, r *Record) {
			r.Tables = append([]TableCount(nil), r.Tables...)
			r.Tables[3].Rows++
		}, "table public.users has 500 rows, want 501"},
		{"table missing from dump", func(t *testing.T, r *Record) {
			r.Tables = append(append([]TableCount(nil), r.Tables...), TableCount{"public.ghost", 1})
		}, "table public.ghost missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(rec.Path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			r := rec
			tt.give(t, &r)
			err := Verify(t.Context(), &r, f.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if !r.VerifiedAt.IsZero() {
				t.Fatal("VerifiedAt set on failure")
			}
			if dbs := scratchDBs(t, f.pg); dbs != "" {
				t.Fatalf("scratch databases left: %s", dbs)
			}
		})
	}
}

func TestWrongDSNErrorHasNoSecret(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB(t, "app")
	const canary = "Canary-Pw-7f3a9c"
	tests := []struct {
		name string
		give string
		want string
	}{
		{"bad password", "postgres://golive:" + canary + "@127.0.0.1:" + itoa(pg.Port) + "/app?sslmode=disable", "password authentication failed"},
		{"bad port", "postgres://golive:" + canary + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=3", "onnection refused"},
		{"keyword form", "host=127.0.0.1 port=" + itoa(pg.Port) + " dbname=app user=golive password='" + canary + " x' sslmode=disable", "password authentication failed"},
		{"unknown parameter", "postgres://golive:" + canary + "@127.0.0.1/app?bogus=" + canary, `unsupported parameter "bogus"`},
		{"no database", "postgres://golive:" + canary + "@127.0.0.1:" + itoa(pg.Port), "names no database"},
	}
	funcs := []struct {
		name string
		run  func(context.Context, Options) (Record, error)
	}{{"Backup", Backup}, {"BackupAndVerify", BackupAndVerify}}
	for _, fn := range funcs {
		for _, tt := range tests {
			t.Run(fn.name+"/"+tt.name, func(t *testing.T) {
				opts := optionsFor(t, pg, tt.give)
				_, err := fn.run(t.Context(), opts)
				if err == nil {
					t.Fatal("backup with a wrong DSN succeeded")
				}
				t.Log(err)
				if strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), tt.give) {
					t.Fatalf("error leaks the DSN: %v", err)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.want)
				}
				if m, _ := filepath.Glob(filepath.Join(opts.Dir, "*")); len(m) != 0 {
					t.Fatalf("left behind: %v", m)
				}
			})
		}
	}
	for _, tt := range tests {
		t.Run("Ping/"+tt.name, func(t *testing.T) {
			err := Ping(t.Context(), tt.give, "")
			if err == nil || strings.Contains(err.Error(), canary) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ping = %v, want an error with %q and without the password", err, tt.want)
			}
		})
	}
	t.Run("Ping/right DSN", func(t *testing.T) {
		if err := Ping(t.Context(), pg.DSN("app"), ""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		opts := optionsFor(t, pg, pg.DSN("app"))
		opts.DSNKey = "NOPE"
		_, err := Backup(t.Context(), opts)
		if err == nil || !strings.Contains(err.Error(), "has no key NOPE") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestParseDSN(t *testing.T) {
	tests := []struct {
		give string
		want map[string]string
	}{
		{"postgres://u:p%40ss@db.example:6543/app?sslmode=require", map[string]string{"user": "u", "password": "p@ss", "host": "db.example", "port": "6543", "dbname": "app", "sslmode": "require"}},
		{"postgresql:///app?host=/run/pg", map[string]string{"dbname": "app", "host": "/run/pg"}},
		{`host=h dbname=app password='it\'s a secret' user = u`, map[string]string{"host": "h", "dbname": "app", "password": "it's a secret", "user": "u"}},
	}
	for _, tt := range tests {
		c, err := parseDSN(tt.give)
		if err != nil {
			t.Fatalf("parseDSN(%q): %v", tt.give, err)
		}
		if mustJSON(t, c.params) != mustJSON(t, tt.want) {
			t.Errorf("parseDSN(%q) = %v, want %v", tt.give, c.params, tt.want)
		}
		for _, kv := range c.env() {
			if strings.Contains(kv, "postgres://") {
				t.Errorf("env carries the raw DSN: %s", kv)
			}
		}
	}
	for _, bad := range []string{"", "host=h password='open", "postgres://u:p@h/"} {
		if _, err := parseDSN(bad); err == nil {
			t.Errorf("parseDSN(%q) succeeded", bad)
		}
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	ages := []time.Duration{0, time.Hour, 2 * time.Hour, 48 * time.Hour, 72 * time.Hour}
	var names []string
	for i, a := range ages {
		name := now.Add(-a).Format(timeLayout) + "-v" + itoa(i) + ".dump"
		names = append(names, name)
		os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)
	oldTmp := filepath.Join(dir, "x.dump.tmp")
	os.WriteFile(oldTmp, nil, 0o600)
	os.Chtimes(oldTmp, now.Add(-48*time.Hour), now.Add(-48*time.Hour))

	tests := []struct {
		keep   int
		maxAge time.Duration
		want   []string
	}{
		{0, 0, nil},
		{4, 0, names[4:]},
		{0, 24 * time.Hour, names[3:4]}, // names[4] already gone
		{1, 0, names[1:3]},
	}
	for i, tt := range tests {
		got, err := Prune(dir, tt.keep, tt.maxAge)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if len(got) != 1 || got[0] != "x.dump.tmp" {
				t.Fatalf("first prune = %v, want the stale tmp only", got)
			}
			continue
		}
		if mustJSON(t, got) != mustJSON(t, tt.want) {
			t.Errorf("Prune(%d, %v) = %v, want %v", tt.keep, tt.maxAge, got, tt.want)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.dump"))
	if len(left) != 1 || filepath.Base(left[0]) != names[0] {
		t.Fatalf("left %v, want the newest only", left)
	}
}

func TestRedactorErrors(t *testing.T) {
	dsn := "postgres://u:s3cr%2Ft@h/app"
	c, err := parseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	r := newRedactor(dsn, c)
	err = r.err(errors.Join(context.Canceled, errors.New("dial "+dsn+" pw s3cr/t and s3cr%2Ft")))
	if strings.Contains(err.Error(), "s3cr") {
		t.Fatalf("not redacted: %v", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatal("lost context.Canceled")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(i int) string { return strconv.Itoa(i) }

// safetyBackupAndRestore is what the agent's restore does (with a journal
// write between the two): a verified "pre-restore" backup, then the restore.
func safetyBackupAndRestore(ctx context.Context, rec *Record, opts Options) (Record, error) {
	so := opts
	so.ReleaseAfter = "pre-restore"
	safety, err := BackupAndVerify(ctx, so)
	if err != nil {
		return Record{}, err
	}
	return safety, Restore(ctx, rec, opts)
}
