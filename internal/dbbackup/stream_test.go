package dbbackup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/pgtest"
)

func TestBackupAndVerifyStreamsRoundTrip(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	before := fingerprint(t, f.pg)

	rec, err := BackupAndVerify(ctx, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []TableCount{{`billing."Invoices"`, 37}, {"public.empty_table", 0}, {"public.orders", 2000}, {"public.users", 500}}
	if mustJSON(t, rec.Tables) != mustJSON(t, want) {
		t.Fatalf("tables = %s, want %s", mustJSON(t, rec.Tables), mustJSON(t, want))
	}
	if rec.VerifiedAt.IsZero() || rec.CreatedAt.IsZero() || rec.ReleaseBefore != "v1" || rec.ReleaseAfter != "v2" ||
		rec.Database != "app" || rec.Service != "app" || rec.Host != "host-1" {
		t.Fatalf("record = %+v", rec)
	}
	if !strings.HasSuffix(rec.Path, "-v2.dump") || filepath.Dir(rec.Path) != f.opts.Dir || rec.ID+".dump" != filepath.Base(rec.Path) {
		t.Fatalf("path = %s, id = %s", rec.Path, rec.ID)
	}
	// The sha256 and size taken while streaming are the file's.
	if size, sum, err := hashFile(rec.Path); err != nil || sum != rec.SHA256 || size != rec.Size || size == 0 {
		t.Fatalf("file sha256 %s size %d, recorded %s %d (%v)", sum, size, rec.SHA256, rec.Size, err)
	}
	if fi, err := os.Stat(rec.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v %v", fi, err)
	}
	if dbs := scratchDBs(t, f.pg); dbs != "" {
		t.Fatalf("scratch databases left: %s", dbs)
	}
	assertDir(t, f.opts.Dir, rec.ID+".dump", rec.ID+".json")
	if j := mustJSON(t, rec); strings.Contains(j, f.pg.Password) {
		t.Fatalf("record carries the password: %s", j)
	}

	loaded, err := LoadRecord(f.opts.Dir, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mustJSON(t, loaded) != mustJSON(t, rec) {
		t.Fatalf("loaded %s, saved %s", mustJSON(t, loaded), mustJSON(t, rec))
	}
	all, err := Records(f.opts.Dir)
	if err != nil || len(all) != 1 || all[0].ID != rec.ID {
		t.Fatalf("Records = %v, %v", all, err)
	}

	// The streamed dump (written to a pipe, so without data offsets) is
	// re-verifiable and restorable from the file.
	if err := Verify(ctx, loaded, f.opts); err != nil {
		t.Fatal(err)
	}
	f.pg.Exec(t, "app", `DELETE FROM orders WHERE id % 3 = 0; UPDATE users SET name = 'changed'; TRUNCATE billing."Invoices"`)
	f.opts.Now = func() time.Time { return time.Now().Add(time.Second) } // distinct file name
	safety, err := safetyBackupAndRestore(ctx, loaded, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, f.pg); got != before {
		t.Fatalf("after restore %s, want %s", got, before)
	}
	// The safety backup went through BackupAndVerify: it has its record.
	if sr, err := LoadRecord(f.opts.Dir, safety.ID); err != nil || sr.VerifiedAt.IsZero() || !strings.HasSuffix(sr.ID, "-pre-restore") {
		t.Fatalf("safety record %+v, %v", sr, err)
	}
	for _, tc := range safety.Tables {
		if tc.Name == `billing."Invoices"` && tc.Rows != 0 {
			t.Fatalf("safety backup counted %d invoices, want 0", tc.Rows)
		}
	}
	if all, _ := Records(f.opts.Dir); len(all) != 2 || all[0].ID != safety.ID {
		t.Fatalf("Records after the safety backup = %v", all)
	}
	if dbs := scratchDBs(t, f.pg); dbs != "" {
		t.Fatalf("scratch databases left: %s", dbs)
	}
}

// addBig adds a table of rows*~70 bytes, so pg_dump writes for a while.
func addBig(t *testing.T, pg *pgtest.Server, rows int) {
	t.Helper()
	pg.Exec(t, "app", fmt.Sprintf(`CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, %d) g`, rows))
}

// wrapBin is a BinDir whose psql, pg_dump and pg_restore are the real ones,
// except those given as shell scripts. A script finds the real tool in $REAL.
func wrapBin(t *testing.T, realDir string, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"psql", "pg_dump", "pg_restore"} {
		path := filepath.Join(dir, name)
		if body, ok := scripts[name]; ok {
			script := "#!/bin/sh\nREAL=" + filepath.Join(realDir, name) + "\nPSQL=" + filepath.Join(realDir, "psql") + "\n" + body + "\n"
			if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.Symlink(filepath.Join(realDir, name), path); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// assertDir fails unless dir holds exactly names (nil: nothing, or no dir).
func assertDir(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	names = slices.Sorted(slices.Values(names))
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func TestBackupAndVerifyFailsLeaveNothing(t *testing.T) {
	f := setup(t)
	addBig(t, f.pg, 300000) // a dump of several MB
	tests := []struct {
		name    string
		scripts map[string]string
		wantErr []string
	}{
		{
			// pg_dump passes on its first 1 MB, then is killed with SIGKILL.
			name:    "pg_dump killed midway",
			scripts: map[string]string{"pg_dump": `"$REAL" "$@" | head -c 1000000; kill -9 $$`},
			wantErr: []string{"pg_dump: signal: killed"},
		},
		{
			name:    "pg_dump fails",
			scripts: map[string]string{"pg_dump": `"$REAL" "$@" | head -c 1000000; echo "pg_dump: error: simulated dump failure" >&2; exit 1`},
			wantErr: []string{"pg_dump: exit status 1", "simulated dump failure"},
		},
		{
			// pg_restore gives up while pg_dump is still writing: pg_dump is
			// stopped and the error is pg_restore's.
			name:    "pg_restore fails midway",
			scripts: map[string]string{"pg_restore": `head -c 200000 >/dev/null; echo "pg_restore: error: simulated restore failure" >&2; exit 1`},
			wantErr: []string{"pg_restore: exit status 1", "simulated restore failure"},
		},
		{
			// pg_restore fails at once, before pg_dump is started or while it
			// is: the error is pg_restore's, never what stopping pg_dump
			// caused ("context canceled", "signal: killed").
			name:    "pg_restore fails at once",
			scripts: map[string]string{"pg_restore": `echo "pg_restore: error: simulated corrupt archive" >&2; exit 1`},
			wantErr: []string{"pg_restore: exit status 1", "simulated corrupt archive"},
		},
		{
			// pg_restore fails while pg_dump has not connected yet: pg_dump is
			// killed, the error is still pg_restore's.
			name: "pg_restore fails before pg_dump writes",
			scripts: map[string]string{
				"pg_restore": `echo "pg_restore: error: simulated early failure" >&2; exit 1`,
				"pg_dump":    `sleep 2; exec "$REAL" "$@"`,
			},
			wantErr: []string{"pg_restore: exit status 1", "simulated early failure"},
		},
		{
			name:    "pg_restore fails at the end",
			scripts: map[string]string{"pg_restore": `cat >/dev/null; echo "pg_restore: error: simulated late failure" >&2; exit 1`},
			wantErr: []string{"pg_restore: exit status 1", "simulated late failure"},
		},
		{
			// The restore "succeeds" but the copy lost rows.
			name:    "restored counts differ",
			scripts: map[string]string{"pg_restore": `"$REAL" "$@" || exit $?; "$PSQL" -X -q -c 'DELETE FROM billing."Invoices" WHERE id <= 3'`},
			wantErr: []string{`restored copy differs from the source at dump time: table billing."Invoices" has 34 rows, want 37`},
		},
		{
			// pg_restore stops reading early and exits 0: the counts catch it.
			name:    "pg_restore exits early with success",
			scripts: map[string]string{"pg_restore": `head -c 200000 >/dev/null; exit 0`},
			wantErr: []string{"restored copy differs from the source at dump time", "table public.big missing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := f.opts
			opts.Dir = filepath.Join(t.TempDir(), "backups")
			opts.BinDir = wrapBin(t, f.pg.BinDir, tt.scripts)
			rec, err := BackupAndVerify(t.Context(), opts)
			if err == nil {
				t.Fatalf("BackupAndVerify succeeded: %+v", rec)
			}
			t.Log(err)
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("err = %v, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), f.pg.Password) {
				t.Fatalf("error carries the password: %v", err)
			}
			if rec.ID != "" {
				t.Fatalf("record returned on failure: %+v", rec)
			}
			assertDir(t, opts.Dir)
			if all, err := Records(opts.Dir); err != nil || len(all) != 0 {
				t.Fatalf("Records = %v, %v", all, err)
			}
			if dbs := scratchDBs(t, f.pg); dbs != "" {
				t.Fatalf("scratch databases left: %s", dbs)
			}
		})
	}
}

func TestBackupAndVerifyCancelledMidway(t *testing.T) {
	f := setup(t)
	addBig(t, f.pg, 1500000)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := BackupAndVerify(ctx, f.opts)
		done <- err
	}()
	// Cancel once pg_dump is writing the dump (and pg_restore restoring it).
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
	assertDir(t, f.opts.Dir)
	if dbs := scratchDBs(t, f.pg); dbs != "" {
		t.Fatalf("scratch databases left: %s", dbs)
	}
}

func TestPruneRemovesRecords(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	var ids []string
	for i, age := range []time.Duration{0, time.Hour, 2 * time.Hour} {
		id := now.Add(-age).Format(timeLayout) + "-v" + itoa(i)
		ids = append(ids, id)
		os.WriteFile(filepath.Join(dir, id+".dump"), []byte("x"), 0o600)
		if err := SaveRecord(dir, &Record{ID: id, CreatedAt: now.Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	orphan := now.Add(-3*time.Hour).Format(timeLayout) + "-gone"
	if err := SaveRecord(dir, &Record{ID: orphan}); err != nil {
		t.Fatal(err)
	}
	unverified := now.Add(-time.Minute).Format(timeLayout) + "-unverified.dump"
	os.WriteFile(filepath.Join(dir, unverified), []byte("x"), 0o600)

	removed, err := Prune(dir, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[2] + ".json", ids[2] + ".dump", orphan + ".json"}
	if mustJSON(t, removed) != mustJSON(t, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	assertDir(t, dir, ids[1]+".dump", ids[1]+".json", ids[0]+".dump", ids[0]+".json", unverified)
	all, err := Records(dir)
	if err != nil || len(all) != 2 || all[0].ID != ids[0] || all[1].ID != ids[1] {
		t.Fatalf("Records = %v, %v", all, err)
	}
	if _, err := LoadRecord(dir, ids[2]); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("LoadRecord of a pruned backup: %v", err)
	}
}
