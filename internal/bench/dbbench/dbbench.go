// Package dbbench measures golive's restore-verified database backup
// (dbbackup.BackupAndVerify: pg_dump -Fc streamed into the dump file and,
// at the same time, into pg_restore restoring a scratch database, then every
// table's row count compared) against the tools run one after the other:
// pg_dump -Fc to a file, then pg_restore of that file into a fresh scratch
// database.
//
// Run starts its own PostgreSQL (pgtest.Launch: initdb in a temporary
// directory, a free loopback port), fills a database of about SizeMB with
// INSERT ... SELECT generate_series (three tables, primary keys, secondary
// indexes, a foreign key), then alternates the two methods Reps times each
// and stops the server. The golive/baseline ratio is the figure of merit
// (goal <= 1.3).
package dbbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/svcmgr"
)

// Goal is the ratio golive/baseline the backup should stay under.
const Goal = 1.3

// Options sizes a run.
type Options struct {
	SizeMB int       // target database size; default 1024
	Reps   int       // measured runs of each method; default 3
	Log    io.Writer // progress; nil = none
}

// Method names.
const (
	MethodGolive   = "golive"
	MethodBaseline = "baseline"
)

// Sample is one measured run.
type Sample struct {
	Rep    int
	Method string
	Total  time.Duration
	// Dump and Restore split the baseline's Total (Restore includes
	// creating the scratch database); zero for golive.
	Dump, Restore time.Duration
	DumpBytes     int64
}

// Result is a whole run.
type Result struct {
	SizeMB   int
	DBBytes  int64 // pg_database_size after generation
	Tables   int
	Rows     int64
	Generate time.Duration
	Samples  []Sample
	Settings []string // extra server settings used
}

// Median is the median Total of method's samples.
func (r Result) Median(method string) time.Duration {
	var ds []time.Duration
	for _, s := range r.Samples {
		if s.Method == method {
			ds = append(ds, s.Total)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	if len(ds)%2 == 1 {
		return ds[len(ds)/2]
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
}

// Ratio is median golive / median baseline (0 if either is missing).
func (r Result) Ratio() float64 {
	g, b := r.Median(MethodGolive), r.Median(MethodBaseline)
	if g == 0 || b == 0 {
		return 0
	}
	return float64(g) / float64(b)
}

// serverSettings apply to both methods alike: a WAL large enough that
// checkpoints do not dominate a 1 GB restore, memory for index builds.
// pgtest also runs the server with fsync=off.
var serverSettings = []string{"max_wal_size=4GB", "maintenance_work_mem=256MB", "shared_buffers=256MB"}

// Run builds the database and measures both methods. The returned Result
// holds whatever was measured, also on error.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	if opts.SizeMB <= 0 {
		opts.SizeMB = 1024
	}
	if opts.Reps <= 0 {
		opts.Reps = 3
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "dbbench: "+format+"\n", args...)
		}
	}
	res = Result{SizeMB: opts.SizeMB, Settings: serverSettings}

	srv, err := pgtest.Launch(pgtest.Config{Settings: serverSettings})
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	work, err := os.MkdirTemp("", "golive-dbbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(work)

	logf("generating a ~%d MB database", opts.SizeMB)
	start := time.Now()
	if _, err := srv.Query(ctx, "postgres", "CREATE DATABASE app"); err != nil {
		return res, fmt.Errorf("create database: %w", err)
	}
	if err := generate(ctx, srv, opts.SizeMB); err != nil {
		return res, err
	}
	res.Generate = time.Since(start)
	out, err := srv.Query(ctx, "app", `SELECT pg_database_size('app'), count(*), sum(n_live_tup) FROM pg_stat_user_tables`)
	if err != nil {
		return res, err
	}
	if f := strings.Split(out, "|"); len(f) == 3 {
		res.DBBytes, _ = strconv.ParseInt(f[0], 10, 64)
		res.Tables, _ = strconv.Atoi(f[1])
		res.Rows, _ = strconv.ParseInt(f[2], 10, 64)
	}
	logf("generated %d MB (%d tables, %d rows) in %s", res.DBBytes>>20, res.Tables, res.Rows, res.Generate.Round(time.Millisecond))

	envFile := filepath.Join(work, "app.env")
	if err := svcmgr.WriteEnvFile(envFile, map[string]string{"DATABASE_URL": srv.DSN("app")}); err != nil {
		return res, err
	}
	bopts := dbbackup.Options{EnvFile: envFile, DSNKey: "DATABASE_URL", Dir: filepath.Join(work, "golive"),
		Service: "bench", Host: "localhost", ReleaseBefore: "v0", BinDir: srv.BinDir}

	for rep := 1; rep <= opts.Reps; rep++ {
		order := []string{MethodGolive, MethodBaseline}
		if rep%2 == 0 {
			order = []string{MethodBaseline, MethodGolive}
		}
		for _, m := range order {
			if err := settle(ctx, srv); err != nil {
				return res, err
			}
			var s Sample
			var err error
			if m == MethodGolive {
				bopts.ReleaseAfter = "r" + strconv.Itoa(rep)
				s, err = runGolive(ctx, bopts)
			} else {
				s, err = runBaseline(ctx, srv, filepath.Join(work, "baseline.dump"), rep)
			}
			if err != nil {
				return res, fmt.Errorf("%s run %d: %w", m, rep, err)
			}
			s.Rep, s.Method = rep, m
			res.Samples = append(res.Samples, s)
			logf("run %d %s: %s (dump %d MB)", rep, m, s.Total.Round(time.Millisecond), s.DumpBytes>>20)
		}
	}
	return res, nil
}

// settle puts the machine in the same state before every measured run:
// dirty pages written (CHECKPOINT, sync), the previous run's files gone.
func settle(ctx context.Context, srv *pgtest.Server) error {
	if _, err := srv.Query(ctx, "postgres", "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	syscall.Sync()
	return nil
}

func runGolive(ctx context.Context, opts dbbackup.Options) (Sample, error) {
	start := time.Now()
	rec, err := dbbackup.BackupAndVerify(ctx, opts)
	total := time.Since(start)
	if err != nil {
		return Sample{}, err
	}
	os.Remove(rec.Path)
	os.Remove(filepath.Join(opts.Dir, rec.ID+".json"))
	return Sample{Total: total, DumpBytes: rec.Size}, nil
}

// runBaseline is pg_dump -Fc -f file, then CREATE DATABASE and pg_restore
// of the file into it, one after the other. Dropping the scratch database
// afterwards is not timed (golive's time includes its drop and its row
// counts).
func runBaseline(ctx context.Context, srv *pgtest.Server, file string, rep int) (Sample, error) {
	scratch := "baseline_" + strconv.Itoa(rep)
	defer os.Remove(file)
	start := time.Now()
	if err := tool(ctx, srv, "app", "pg_dump", "-Fc", "--no-password", "-f", file); err != nil {
		return Sample{}, err
	}
	dumped := time.Now()
	if _, err := srv.Query(ctx, "postgres", fmt.Sprintf(`CREATE DATABASE %q TEMPLATE template0`, scratch)); err != nil {
		return Sample{}, fmt.Errorf("create scratch database: %w", err)
	}
	defer srv.Query(context.WithoutCancel(ctx), "postgres", fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, scratch))
	if err := tool(ctx, srv, scratch, "pg_restore", "--no-password", "--exit-on-error", "--no-owner", "--no-privileges", "-d", scratch, file); err != nil {
		return Sample{}, err
	}
	end := time.Now()
	fi, err := os.Stat(file)
	if err != nil {
		return Sample{}, err
	}
	return Sample{Total: end.Sub(start), Dump: dumped.Sub(start), Restore: end.Sub(dumped), DumpBytes: fi.Size()}, nil
}

func tool(ctx context.Context, srv *pgtest.Server, db, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(srv.BinDir, name), args...)
	cmd.Env = srv.Env(db)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// generate fills database app with about sizeMB of tables and indexes, the
// three tables concurrently. Rows per MB were measured on PostgreSQL 15.
func generate(ctx context.Context, srv *pgtest.Server, sizeMB int) error {
	users := max(1000, sizeMB*usersPerMB)
	orders := max(1000, sizeMB*ordersPerMB)
	events := max(1000, sizeMB*eventsPerMB)
	scripts := []string{
		fmt.Sprintf(`CREATE TABLE users (id bigint NOT NULL, email text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO users SELECT g, 'user' || g || '@example.com', 'User ' || md5(g::text), timestamptz '2026-01-01' - g * interval '1 second' FROM generate_series(1::bigint, %d) g;
ALTER TABLE users ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX users_email ON users (email);`, users),
		fmt.Sprintf(`CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, total numeric(12,2) NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, 1 + (g * 7919) %% %d, (g %% 100000) / 100.0, (ARRAY['new','paid','shipped','cancelled'])[1 + g %% 4], timestamptz '2026-01-01' - g * interval '1 minute' FROM generate_series(1::bigint, %d) g;
ALTER TABLE orders ADD PRIMARY KEY (id);
CREATE INDEX orders_user_id ON orders (user_id);`, users, orders),
		fmt.Sprintf(`CREATE TABLE events (id bigint NOT NULL, user_id bigint NOT NULL, kind text NOT NULL, payload text NOT NULL, at timestamptz NOT NULL);
INSERT INTO events SELECT g, 1 + g %% %d, 'kind_' || (g %% 20), md5(g::text) || md5((g * 31)::text), timestamptz '2026-01-01' - g * interval '10 milliseconds' FROM generate_series(1::bigint, %d) g;
ALTER TABLE events ADD PRIMARY KEY (id);
CREATE INDEX events_at ON events (at);`, users, events),
	}
	var wg sync.WaitGroup
	errs := make([]error, len(scripts))
	for i, sql := range scripts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := srv.Query(ctx, "app", sql); err != nil {
				errs[i] = fmt.Errorf("generate: %w", err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// A foreign key for pg_restore to validate; VACUUM FREEZE so no run
	// pays for setting hint bits the previous one left.
	if _, err := srv.Query(ctx, "app", `ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id)`); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if _, err := srv.Query(ctx, "app", `VACUUM (FREEZE, ANALYZE)`); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	return nil
}

// Rows per MB of database (heap and indexes), per table; about 15% users,
// 25% orders, 60% events by size.
const (
	usersPerMB  = 900
	ordersPerMB = 2300
	eventsPerMB = 3600
)

// PrintTable prints one row per measured run, then the medians and the
// ratio.
func PrintTable(w io.Writer, r Result) error {
	fmt.Fprintf(w, "Backup proven restorable: a %d MB PostgreSQL database (%d tables, %d rows; target %d MB), one server on loopback\n",
		r.DBBytes>>20, r.Tables, r.Rows, r.SizeMB)
	fmt.Fprintln(w, "golive   = dbbackup.BackupAndVerify: pg_dump -Fc streamed into the dump file (sha256, fsync) and into pg_restore")
	fmt.Fprintln(w, "           into a scratch database at once, then every table's row count compared, scratch dropped, record saved")
	fmt.Fprintln(w, "baseline = pg_dump -Fc -f file (fsynced), then CREATE DATABASE + pg_restore of the file (scratch drop not timed)")
	fmt.Fprintf(w, "server: fsync=off %s; data generated in %s s; runs alternate, CHECKPOINT + sync before each\n",
		strings.Join(r.Settings, " "), benchkit.Sec(r.Generate))
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "run\tmethod\tseconds\tpg_dump s\tpg_restore s\tdump MB\t")
	for _, s := range r.Samples {
		dump, restore := "-", "-"
		if s.Method == MethodBaseline {
			dump, restore = benchkit.Sec(s.Dump), benchkit.Sec(s.Restore)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%.1f\t\n", s.Rep, s.Method, benchkit.Sec(s.Total), dump, restore, float64(s.DumpBytes)/(1<<20))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	g, b := r.Median(MethodGolive), r.Median(MethodBaseline)
	if g > 0 && b > 0 {
		fmt.Fprintf(w, "  median: golive %s s, baseline %s s; ratio golive/baseline %.2f (goal <= %.1f: %s)\n",
			benchkit.Sec(g), benchkit.Sec(b), r.Ratio(), Goal, benchkit.MetWord(r.Ratio() <= Goal))
	}
	return nil
}
