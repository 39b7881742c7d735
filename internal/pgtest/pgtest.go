// Package pgtest starts a throwaway PostgreSQL server for tests: initdb into a
// fresh directory, pg_ctl start on a free loopback port with its unix socket
// in the same directory, and pg_ctl stop plus removal in t.Cleanup.
//
// PostgreSQL refuses to run as root, so when the test runs as root the server
// runs as the "postgres" system user (or "nobody"), and its directory is
// created outside t.TempDir (which is 0700 and owned by root).
//
// A missing PostgreSQL skips the test, except under CI=true where it fails.
// Launch starts the same server outside a test, for benchmarks.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running PostgreSQL server.
type Server struct {
	BinDir   string // directory holding initdb, pg_ctl, psql, pg_dump, pg_restore
	Dir      string // data, socket and log live under it
	Port     int
	User     string // superuser name
	Password string // superuser password (scram-sha-256 on TCP and socket)

	cred *syscall.Credential // the user the server runs as; nil = us
}

// BinDir finds the PostgreSQL binaries: the directory of initdb on PATH
// (symlinks resolved), else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("initdb not found on PATH or in /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// ErrNotInstalled is returned by Launch when PostgreSQL is not installed.
var ErrNotInstalled = errors.New("PostgreSQL not installed")

// Config tunes a server Launch starts.
type Config struct {
	// Settings are extra server settings, "name=value" each (passed as
	// -c name=value), e.g. "max_wal_size=4GB".
	Settings []string
}

// Start starts a server for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(Config{})
	if errors.Is(err, ErrNotInstalled) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required under CI=true: %v", err)
		}
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Logf("%v", err)
		}
	})
	return s
}

// Launch starts a server outside a test (benchmarks use it): initdb in a
// fresh temporary directory, pg_ctl start on a free loopback port. The
// caller must Stop it. A missing PostgreSQL is ErrNotInstalled.
func Launch(cfg Config) (_ *Server, err error) {
	bin, err := BinDir()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "golive-pg-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{BinDir: bin, Dir: dir, User: "golive", Password: "pgtest-secret-pw", cred: cred}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o644); err != nil {
		return nil, err
	}
	out, err := s.exec("initdb", "-D", filepath.Join(dir, "data"), "-U", s.User,
		"--pwfile="+pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
	os.Remove(pwfile)
	if err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Port = port
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.Port, dir)
		for _, kv := range cfg.Settings {
			opts += " -c " + kv
		}
		_, lastErr = s.exec("pg_ctl", "start", "-w", "-t", "60", "-D", filepath.Join(dir, "data"),
			"-l", filepath.Join(dir, "log"), "-o", opts)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return nil, fmt.Errorf("pg_ctl start: %w\n%s", lastErr, log)
	}
	return s, nil
}

// Stop stops the server (immediate shutdown) and removes its directory.
func (s *Server) Stop() error {
	_, err := s.exec("pg_ctl", "stop", "-w", "-m", "immediate", "-D", filepath.Join(s.Dir, "data"))
	if rerr := os.RemoveAll(s.Dir); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w", err)
	}
	return nil
}

// DSN is a URL DSN for database db over TCP.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", s.User, s.Password, s.Port, db)
}

// Env is the environment for psql and friends to reach database db.
func (s *Server) Env(db string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(s.Port), "PGUSER="+s.User,
		"PGPASSWORD="+s.Password, "PGDATABASE="+db, "PGSSLMODE=disable")
}

// CreateDB creates database name.
func (s *Server) CreateDB(t testing.TB, name string) {
	t.Helper()
	s.Exec(t, "postgres", fmt.Sprintf(`CREATE DATABASE %q`, name))
}

// Exec runs sql in database db with psql and returns its unaligned,
// tuples-only output, trimmed.
func (s *Server) Exec(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := s.Query(t.Context(), db, sql)
	if err != nil {
		t.Fatalf("psql %q: %v", sql, err)
	}
	return out
}

// Query is Exec without the test: it returns the error.
func (s *Server) Query(ctx context.Context, db, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	cmd.Env = s.Env(db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func (s *Server) exec(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl start leaves postgres running with our pipes unless they are
	// files; a temp file keeps Wait from blocking on the daemon.
	f, err := os.CreateTemp("", "pgtest-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return out, err
}

// credential is the non-root user PostgreSQL runs as when we are root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and no postgres or nobody user to run PostgreSQL as")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
