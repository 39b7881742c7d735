// Package dbbackup owns the agent's PostgreSQL backups: a pg_dump taken
// before every migration, proven restorable before the migration may run,
// restored only on an explicit rollback, and pruned by count and age.
//
//	BackupAndVerify ──► (migration runs) ... Restore (rollback --restore-db)
//	  │
//	  ├─ pg_dump -Fc ─┬─► <dir>/<UTC time>-<release>.dump via .tmp + fsync + rename
//	  │               └─► pg_restore into scratch database golive_verify_<random>
//	  │                   (concurrently), compare every table's row count,
//	  │                   always dropped
//	  └─ <dir>/<id>.json, the record, once verified
//
// Backup and Verify do the same in two sequential steps; Verify re-proves a
// dump already on disk. Restore makes the database equal to a dump, in one
// transaction (restore.go).
//
// Invariants:
//   - The DSN is read from a key of the service's env file and reaches the
//     PostgreSQL tools only through their environment (PGPASSWORD and
//     friends), never argv. It never appears in an error, a log line or a
//     Record: every error is passed through a redactor that replaces the DSN
//     and the password.
//   - A dump file under its final name is complete and fsynced; a failed or
//     cancelled pg_dump leaves no file behind.
//   - Row counts in the Record are those of the dump's own snapshot: a
//     REPEATABLE READ transaction exports its snapshot, counts every table,
//     and stays open while pg_dump --snapshot dumps exactly that state.
//   - Verify restores the dump into a scratch database and compares counts;
//     `pg_restore --list` alone is never taken as proof.
//   - Restore is exact and all or nothing: after it the user schemas hold
//     what the dump holds and nothing else (a table a migration added is
//     gone), or, when it fails, the database is as it was.
//
// The DSN's role needs CREATEDB (for the scratch database) and must own the
// objects that Restore drops and recreates: every object in the database's
// user schemas, and its large objects.
package dbbackup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/svcmgr"
)

// timeLayout is the UTC timestamp that starts every dump's file name; it
// sorts lexically in time order.
const timeLayout = "20060102T150405Z"

// Options says where the database and the backups are.
type Options struct {
	EnvFile       string // the service's env file
	DSNKey        string // key in EnvFile holding the PostgreSQL DSN
	Dir           string // backup directory, e.g. backups/<service>
	Service       string
	Host          string
	ReleaseBefore string // release running when the backup is taken
	ReleaseAfter  string // release about to be migrated to; names the file
	BinDir        string // directory of pg_dump, pg_restore, psql; "" = PATH
	Logger        hclog.Logger
	Now           func() time.Time // for tests; time.Now when nil
}

// TableCount is one table's row count at dump time.
type TableCount struct {
	Name string `json:"name"` // schema.table, quoted as needed
	Rows int64  `json:"rows"`
}

// Record describes one backup. It never contains the DSN.
type Record struct {
	ID            string       `json:"id"` // file name without .dump
	Service       string       `json:"service"`
	Host          string       `json:"host"`
	Path          string       `json:"path"`
	Size          int64        `json:"size"`
	SHA256        string       `json:"sha256"`
	Database      string       `json:"database"`
	Tables        []TableCount `json:"tables"`
	ReleaseBefore string       `json:"release_before"`
	ReleaseAfter  string       `json:"release_after"`
	CreatedAt     time.Time    `json:"created_at"`
	VerifiedAt    time.Time    `json:"verified_at,omitzero"`
}

var releaseRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (o Options) validate() error {
	switch {
	case o.EnvFile == "":
		return errors.New("dbbackup: EnvFile is required")
	case o.DSNKey == "":
		return errors.New("dbbackup: DSNKey is required")
	case o.Dir == "":
		return errors.New("dbbackup: Dir is required")
	case o.ReleaseAfter != "" && !releaseRE.MatchString(o.ReleaseAfter):
		return fmt.Errorf("dbbackup: ReleaseAfter %q may hold only letters, digits, '.', '_' and '-'", o.ReleaseAfter)
	}
	return nil
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

func (o Options) logger() hclog.Logger {
	l := o.Logger
	if l == nil {
		l = hclog.NewNullLogger()
	}
	return l.Named("dbbackup").With("service", o.Service)
}

func (o Options) bin(name string) string {
	if o.BinDir == "" {
		return name
	}
	return filepath.Join(o.BinDir, name)
}

// connect reads the DSN from the env file.
func (o Options) connect() (conn, redactor, error) {
	env, err := svcmgr.ReadEnvFile(o.EnvFile)
	if err != nil {
		return conn{}, redactor{}, fmt.Errorf("read database DSN: %w", err)
	}
	dsn, ok := env[o.DSNKey]
	if !ok {
		return conn{}, redactor{}, fmt.Errorf("env file %s has no key %s (the database DSN)", o.EnvFile, o.DSNKey)
	}
	c, err := parseDSN(dsn)
	r := newRedactor(dsn, c)
	if err != nil {
		return conn{}, r, fmt.Errorf("env file %s key %s: %w", o.EnvFile, o.DSNKey, err)
	}
	return c, r, nil
}

// Backup dumps the database with pg_dump -Fc into
// <Dir>/<UTC time>-<ReleaseAfter>.dump and records its size, sha256 and
// every table's row count in the dump's snapshot. It does not verify.
func Backup(ctx context.Context, opts Options) (Record, error) {
	if err := opts.validate(); err != nil {
		return Record{}, err
	}
	c, red, err := opts.connect()
	if err != nil {
		return Record{}, red.err(err)
	}
	rec, err := backup(ctx, opts, c)
	if err != nil {
		return Record{}, red.err(fmt.Errorf("backup database %s: %w", c.database(), whenStopped(ctx, err)))
	}
	opts.logger().Info("database backed up", "backup_id", rec.ID, "size", rec.Size, "tables", len(rec.Tables))
	return rec, nil
}

func backup(ctx context.Context, opts Options, c conn) (Record, error) {
	df, err := opts.newDumpFile()
	if err != nil {
		return Record{}, err
	}
	tmp := df.f.Name()
	df.f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()

	snap, err := openSnapshot(ctx, opts, c)
	if err != nil {
		return Record{}, err
	}
	defer snap.close()
	tables, err := snap.counts()
	if err != nil {
		return Record{}, err
	}

	cmd := exec.CommandContext(ctx, opts.bin("pg_dump"), "-Fc", "--no-password", "--snapshot="+snap.id, "-f", tmp)
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return Record{}, fmt.Errorf("pg_dump stopped: %w", ctx.Err())
		}
		return Record{}, fmt.Errorf("pg_dump: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := snap.close(); err != nil {
		return Record{}, err
	}

	size, sum, err := fsyncAndHash(tmp)
	if err != nil {
		return Record{}, err
	}
	if err := os.Rename(tmp, df.final); err != nil {
		return Record{}, err
	}
	ok = true
	if err := syncDir(opts.Dir); err != nil {
		return Record{}, err
	}
	return opts.record(df, size, sum, c, tables), nil
}

// dumpFile is a backup being written: its id, creation time, final path
// and open .tmp file.
type dumpFile struct {
	id      string
	created time.Time
	final   string
	f       *os.File
}

// newDumpFile picks the next backup's id and final path and creates its
// .tmp file (exclusively, 0600).
func (o Options) newDumpFile() (dumpFile, error) {
	release := o.ReleaseAfter
	if release == "" {
		release = "snapshot"
	}
	df := dumpFile{created: o.now()}
	df.id = df.created.Format(timeLayout) + "-" + release
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return dumpFile{}, err
	}
	df.final = filepath.Join(o.Dir, df.id+".dump")
	if _, err := os.Lstat(df.final); err == nil {
		return dumpFile{}, fmt.Errorf("%s already exists", df.final)
	}
	f, err := os.OpenFile(df.final+".tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return dumpFile{}, err
	}
	df.f = f
	return df, nil
}

// record is the Record of dump df, size bytes with sha256 sum.
func (o Options) record(df dumpFile, size int64, sum string, c conn, tables []TableCount) Record {
	return Record{
		ID:            df.id,
		Service:       o.Service,
		Host:          o.Host,
		Path:          df.final,
		Size:          size,
		SHA256:        sum,
		Database:      c.database(),
		Tables:        tables,
		ReleaseBefore: o.ReleaseBefore,
		ReleaseAfter:  o.ReleaseAfter,
		CreatedAt:     df.created,
	}
}

// snapshot is an open REPEATABLE READ, READ ONLY transaction whose exported
// snapshot both the row counts and pg_dump --snapshot see. It must stay open
// until pg_dump has finished.
type snapshot struct {
	s  *session
	id string
}

func openSnapshot(ctx context.Context, opts Options, c conn) (*snapshot, error) {
	s, err := startSession(ctx, opts.bin("psql"), c)
	if err != nil {
		return nil, err
	}
	if _, err := s.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"); err != nil {
		s.close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	lines, err := s.query("SELECT pg_export_snapshot();")
	if err != nil || len(lines) != 1 {
		s.close()
		return nil, fmt.Errorf("export snapshot: %v", err)
	}
	return &snapshot{s: s, id: strings.TrimSpace(lines[0])}, nil
}

// counts is every table's row count in the snapshot.
func (sn *snapshot) counts() ([]TableCount, error) {
	lines, err := sn.s.query(countSQL)
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	return parseCounts(strings.Join(lines, "\n"))
}

// close ends the transaction and the session; later calls return nil.
func (sn *snapshot) close() error { return sn.s.close() }

// whenStopped is err, or when ctx ended before the call returned, an error
// that says so first (wrapping ctx's error): a tool killed by the
// cancellation, or a pipe it broke, is the effect, not the cause. err's
// text is kept after it.
func whenStopped(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("stopped: %w (then: %v)", ctx.Err(), err)
}

func fsyncAndHash(path string) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), f.Close()
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkFile makes sure the dump on disk is the one the record describes.
func checkFile(rec *Record) error {
	size, sum, err := hashFile(rec.Path)
	if err != nil {
		return err
	}
	if size != rec.Size || sum != rec.SHA256 {
		return fmt.Errorf("%s changed since the backup: sha256 %s (%d bytes), recorded %s (%d bytes)", rec.Path, sum, size, rec.SHA256, rec.Size)
	}
	return nil
}

// Verify proves rec restorable: it checks the file's sha256, restores it into
// a scratch database golive_verify_<random> on the same server, and compares
// every table's row count with the counts taken at dump time. The scratch
// database is always dropped. On success rec.VerifiedAt is set.
func Verify(ctx context.Context, rec *Record, opts Options) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	c, red, err := opts.connect()
	if err != nil {
		return red.err(err)
	}
	defer func() {
		if err != nil {
			err = red.err(fmt.Errorf("verify backup %s: %w", rec.ID, whenStopped(ctx, err)))
		}
	}()
	if err := checkFile(rec); err != nil {
		return err
	}
	scratch, drop, err := createScratch(ctx, opts, c)
	defer func() {
		if derr := drop(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err != nil {
		return err
	}
	sc := c.withDatabase(scratch)
	if err := pgRestore(ctx, opts, sc, rec.Path, restoreVerifyArgs...); err != nil {
		return err
	}
	if err := compareRestored(ctx, opts, sc, rec.Tables); err != nil {
		return err
	}
	rec.VerifiedAt = opts.now()
	opts.logger().Info("backup verified", "backup_id", rec.ID, "tables", len(rec.Tables))
	return nil
}

// restoreVerifyArgs are pg_restore's flags for a restore into a scratch
// database: stop at the first error, skip ownership and grants (the scratch
// copy only has to prove the data comes back).
var restoreVerifyArgs = []string{"--exit-on-error", "--no-owner", "--no-privileges"}

// createScratch creates an empty scratch database golive_verify_<random>
// next to c's. drop drops it (WITH FORCE, on a context of its own so it also
// runs after ctx is cancelled); call it also when err is not nil: a create
// cut short may still have created the database. drop is idempotent.
func createScratch(ctx context.Context, opts Options, c conn) (name string, drop func() error, err error) {
	var b [6]byte
	rand.Read(b[:])
	name = "golive_verify_" + hex.EncodeToString(b[:])
	dropped := false
	drop = func() error {
		if dropped {
			return nil
		}
		dropped = true
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := runPSQL(dctx, opts.bin("psql"), c, fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, name)); err != nil {
			return fmt.Errorf("drop scratch database %s: %w", name, err)
		}
		return nil
	}
	if _, err := runPSQL(ctx, opts.bin("psql"), c, fmt.Sprintf(`CREATE DATABASE %q TEMPLATE template0`, name)); err != nil {
		return name, drop, fmt.Errorf("create scratch database: %w", err)
	}
	return name, drop, nil
}

// compareRestored counts every table's rows in the restored copy sc and
// compares them with want, the counts at dump time.
func compareRestored(ctx context.Context, opts Options, sc conn, want []TableCount) error {
	out, err := runPSQL(ctx, opts.bin("psql"), sc, countSQL)
	if err != nil {
		return fmt.Errorf("count restored rows: %w", err)
	}
	got, err := parseCounts(out)
	if err != nil {
		return err
	}
	if diff := compareCounts(want, got); diff != "" {
		return fmt.Errorf("restored copy differs from the source at dump time: %s", diff)
	}
	return nil
}

func compareCounts(want, got []TableCount) string {
	g := map[string]int64{}
	for _, t := range got {
		g[t.Name] = t.Rows
	}
	var diffs []string
	for _, t := range want {
		n, ok := g[t.Name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("table %s missing", t.Name))
		case n != t.Rows:
			diffs = append(diffs, fmt.Sprintf("table %s has %d rows, want %d", t.Name, n, t.Rows))
		}
		delete(g, t.Name)
	}
	for name := range g {
		diffs = append(diffs, fmt.Sprintf("unexpected table %s", name))
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

func pgRestore(ctx context.Context, opts Options, c conn, path string, args ...string) error {
	db := c.database()
	if strings.ContainsAny(db, "= ") || strings.Contains(db, "://") {
		return fmt.Errorf("database name %q is not a plain name", db)
	}
	args = append([]string{"--no-password", "-d", db}, args...)
	cmd := exec.CommandContext(ctx, opts.bin("pg_restore"), append(args, path)...)
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pg_restore stopped: %w", ctx.Err())
		}
		return fmt.Errorf("pg_restore: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Prune removes old dumps from dir: those beyond the newest keepCount and
// those older than maxAge (0 turns either limit off), each with its record
// (<id>.json). The newest dump is never removed. A record whose dump is gone
// goes too, and so do leftover .tmp files older than a day (a crash mid-dump).
// It returns the removed file names.
func Prune(dir string, keepCount int, maxAge time.Duration) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("prune backups: %w", err)
	}
	type dump struct {
		name string
		at   time.Time
	}
	var dumps []dump
	var removed []string
	remove := func(name string) error {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("prune backups: %w", err)
		}
		removed = append(removed, name)
		return nil
	}
	present := map[string]bool{}
	var records []string
	now := time.Now()
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		name := e.Name()
		present[name] = true
		switch {
		case strings.HasSuffix(name, ".dump"):
			at := info.ModTime()
			if len(name) > len(timeLayout) {
				if t, err := time.Parse(timeLayout, name[:len(timeLayout)]); err == nil {
					at = t
				}
			}
			dumps = append(dumps, dump{name, at})
		case strings.HasSuffix(name, recordSuffix) && !strings.HasPrefix(name, "."):
			records = append(records, name)
		case strings.HasSuffix(name, ".tmp") && now.Sub(info.ModTime()) > 24*time.Hour:
			if err := remove(name); err != nil {
				return removed, err
			}
		}
	}
	sort.Slice(dumps, func(i, j int) bool {
		if !dumps[i].at.Equal(dumps[j].at) {
			return dumps[i].at.After(dumps[j].at)
		}
		return dumps[i].name > dumps[j].name
	})
	for i, d := range dumps {
		if i == 0 {
			continue
		}
		if (keepCount > 0 && i >= keepCount) || (maxAge > 0 && now.Sub(d.at) > maxAge) {
			// The record first: a dump without a record is never offered.
			record := strings.TrimSuffix(d.name, ".dump") + recordSuffix
			if present[record] {
				if err := remove(record); err != nil {
					return removed, err
				}
			}
			if err := remove(d.name); err != nil {
				return removed, err
			}
			present[d.name] = false
		}
	}
	for _, r := range records {
		dumpName := strings.TrimSuffix(r, recordSuffix) + ".dump"
		if present[r] && !present[dumpName] && !slices.Contains(removed, r) {
			if _, err := os.Lstat(filepath.Join(dir, dumpName)); err == nil {
				continue // written after ReadDir looked
			}
			if err := remove(r); err != nil {
				return removed, err
			}
		}
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			return removed, fmt.Errorf("prune backups: %w", err)
		}
	}
	return removed, nil
}
