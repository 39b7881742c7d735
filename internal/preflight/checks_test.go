package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/svcmgr"
)

func checkResult(t *testing.T, got Result, wantName string, wantStatus Status, wantIn string) {
	t.Helper()
	if got.Name != wantName {
		t.Errorf("Name = %q, want %q", got.Name, wantName)
	}
	if got.Status != wantStatus {
		t.Errorf("Status = %q, want %q (detail: %s)", got.Status, wantStatus, got.Detail)
	}
	if !strings.Contains(got.Detail, wantIn) {
		t.Errorf("Detail = %q, want it to contain %q", got.Detail, wantIn)
	}
	if !strings.HasSuffix(got.Detail, ".") {
		t.Errorf("Detail = %q, want a sentence", got.Detail)
	}
}

func TestDNS(t *testing.T) {
	tests := []struct {
		give   string
		want   Status
		wantIn string
	}{
		{give: "localhost", want: StatusPass, wantIn: "resolves"},
		{give: "golive-check.invalid", want: StatusFail, wantIn: "does not resolve"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			checkResult(t, DNS(ctx, tt.give), NameDNS, tt.want, tt.wantIn)
		})
	}
}

func TestTLS(t *testing.T) {
	const host = "localhost"
	now := time.Now()
	day := 24 * time.Hour
	ca := newTestCA(t, "golive test CA")
	other := newTestCA(t, "someone else's CA")
	tests := []struct {
		name    string
		give    func(t *testing.T) (port int)
		minDays int
		want    Status
		wantIn  string
	}{
		{
			name: "valid",
			give: func(t *testing.T) int { return serveTLS(t, ca.leaf(t, host, now.Add(-day), now.Add(90*day))) },
			want: StatusPass, wantIn: "trusted and valid until",
		},
		{
			name: "expired",
			give: func(t *testing.T) int { return serveTLS(t, ca.leaf(t, host, now.Add(-90*day), now.Add(-day))) },
			want: StatusFail, wantIn: "expired on",
		},
		{
			name: "wrong name",
			give: func(t *testing.T) int {
				return serveTLS(t, ca.leaf(t, "other.example.com", now.Add(-day), now.Add(90*day)))
			},
			want: StatusFail, wantIn: "is for other.example.com, not localhost",
		},
		{
			name: "untrusted CA",
			give: func(t *testing.T) int { return serveTLS(t, other.leaf(t, host, now.Add(-day), now.Add(90*day))) },
			want: StatusFail, wantIn: "does not chain to a trusted root",
		},
		{
			name: "expiring in 3 days",
			give: func(t *testing.T) int { return serveTLS(t, ca.leaf(t, host, now.Add(-day), now.Add(3*day+time.Hour))) },
			want: StatusWarn, wantIn: "expires in 3 days",
		},
		{
			name:    "expiring in 3 days, 2 days wanted",
			give:    func(t *testing.T) int { return serveTLS(t, ca.leaf(t, host, now.Add(-day), now.Add(3*day+time.Hour))) },
			minDays: 2,
			want:    StatusPass, wantIn: "trusted and valid until",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := tt.give(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			checkResult(t, TLS(ctx, host, port, ca.pool(), tt.minDays, now), NameTLS, tt.want, tt.wantIn)
		})
	}
}

func TestTLSNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there any more
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	checkResult(t, TLS(ctx, "localhost", port, nil, 0, time.Time{}), NameTLS, StatusFail, "Cannot complete a TLS handshake")
}

// fakePinger fails with err, which a careless driver may fill with the DSN.
type fakePinger struct{ err error }

func (p fakePinger) Ping(context.Context) error { return p.err }

func TestDatabaseReachable(t *testing.T) {
	const (
		password = "s3cr3t-Pa55"
		urlDSN   = "postgres://app:" + password + "@db.internal:5432/app?sslmode=require"
		kvDSN    = "host=db.internal user=app password='" + password + "' dbname=app"
	)
	tests := []struct {
		name   string
		dsn    string
		give   Pinger
		want   Status
		wantIn string
	}{
		{name: "answers", dsn: urlDSN, give: fakePinger{}, want: StatusPass, wantIn: "answers"},
		{name: "no pinger", dsn: urlDSN, give: nil, want: StatusFail, wantIn: "No database connection"},
		{
			name: "url DSN echoed by driver",
			dsn:  urlDSN,
			give: fakePinger{err: fmt.Errorf("cannot parse %q: failed to connect", urlDSN)},
			want: StatusFail, wantIn: "failed to connect",
		},
		{
			name: "password echoed alone",
			dsn:  urlDSN,
			give: fakePinger{err: errors.New("auth failed for user app with password " + password)},
			want: StatusFail, wantIn: "auth failed for user app",
		},
		{
			name: "key=value DSN echoed by driver",
			dsn:  kvDSN,
			give: fakePinger{err: errors.New("dial error (" + kvDSN + "): connection refused")},
			want: StatusFail, wantIn: "connection refused",
		},
		{
			name: "password= of another form",
			dsn:  "host=db password=" + password,
			give: fakePinger{err: errors.New("bad config: password=" + password + " host=db")},
			want: StatusFail, wantIn: "bad config",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DatabaseReachable(t.Context(), tt.dsn, tt.give)
			checkResult(t, got, NameDatabase, tt.want, tt.wantIn)
			if strings.Contains(got.Detail, tt.dsn) || strings.Contains(got.Detail, password) {
				t.Errorf("Detail leaks the DSN or its password: %s", got.Detail)
			}
		})
	}
}

func TestSecretsPresent(t *testing.T) {
	const canary = "CANARY-9f8e7d6c5b4a-do-not-print"
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	if err := svcmgr.WriteEnvFile(envFile, map[string]string{
		"DATABASE_URL": "postgres://app:" + canary + "@db/app",
		"API_TOKEN":    canary,
		"EMPTY_KEY":    "",
	}); err != nil {
		t.Fatal(err)
	}
	// A line with no '=' whose text is a secret: svcmgr's parse error quotes
	// it, the check must not.
	badFile := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(badFile, []byte("OK=1\n"+canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		file    string
		give    []string
		want    Status
		wantIn  string
		wantOut string // a key name that must not be reported
	}{
		{name: "all present", file: envFile, give: []string{"DATABASE_URL", "API_TOKEN"}, want: StatusPass, wantIn: "all 2 required keys"},
		{name: "none required", file: envFile, give: nil, want: StatusPass, wantIn: "all 0 required keys"},
		{name: "one missing", file: envFile, give: []string{"DATABASE_URL", "SMTP_PASSWORD"}, want: StatusFail, wantIn: "missing SMTP_PASSWORD", wantOut: "DATABASE_URL"},
		{name: "empty counts as missing", file: envFile, give: []string{"EMPTY_KEY", "API_TOKEN"}, want: StatusFail, wantIn: "empty EMPTY_KEY", wantOut: "API_TOKEN"},
		{name: "no env file", file: filepath.Join(dir, "nope.env"), give: []string{"API_TOKEN"}, want: StatusFail, wantIn: "Cannot read env file"},
		{name: "unparsable env file", file: badFile, give: []string{"OK"}, want: StatusFail, wantIn: "does not parse at line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SecretsPresent(tt.file, tt.give)
			checkResult(t, got, NameSecrets, tt.want, tt.wantIn)
			if tt.wantOut != "" && strings.Contains(got.Detail, tt.wantOut) {
				t.Errorf("Detail names present key %s: %s", tt.wantOut, got.Detail)
			}
			if strings.Contains(fmt.Sprintf("%+v", got), canary[:12]) {
				t.Errorf("Result leaks the secret value: %+v", got)
			}
		})
	}
}

func TestDiskFree(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		path   string
		need   int64
		factor float64
		want   Status
		wantIn string
	}{
		{name: "small need", path: dir, need: 1 << 10, factor: 3, want: StatusPass, wantIn: "free on"},
		{name: "default factor", path: dir, need: 1 << 10, want: StatusPass, wantIn: "3.0 KiB needed"},
		{name: "huge need", path: dir, need: 1 << 60, factor: 3, want: StatusFail, wantIn: "free up space"},
		{name: "max need", path: dir, need: 1<<63 - 1, factor: 3, want: StatusFail, wantIn: "free up space"},
		{name: "missing path", path: filepath.Join(dir, "nope"), need: 1, factor: 3, want: StatusFail, wantIn: "Cannot stat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkResult(t, DiskFree(tt.path, tt.need, tt.factor), NameDisk, tt.want, tt.wantIn)
		})
	}
}

func TestBackupFresh(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		give     time.Time
		verified bool
		maxAge   time.Duration
		want     Status
		wantIn   string
	}{
		{name: "fresh and verified", give: now.Add(-time.Hour), verified: true, maxAge: 24 * time.Hour, want: StatusPass, wantIn: "1h0m0s old and verified"},
		{name: "fresh, not verified", give: now.Add(-time.Hour), verified: false, maxAge: 24 * time.Hour, want: StatusFail, wantIn: "never verified"},
		{name: "too old", give: now.Add(-25 * time.Hour), verified: true, maxAge: 24 * time.Hour, want: StatusFail, wantIn: "older than 24h0m0s"},
		{name: "default max age", give: now.Add(-25 * time.Hour), verified: true, want: StatusFail, wantIn: "older than 24h0m0s"},
		{name: "no backup", give: time.Time{}, verified: false, maxAge: 24 * time.Hour, want: StatusFail, wantIn: "no database backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkResult(t, BackupFresh(tt.give, tt.verified, tt.maxAge, now), NameBackup, tt.want, tt.wantIn)
		})
	}
}

func TestPreviousReleasePresent(t *testing.T) {
	commit := func(t *testing.T, d *releasedir.Dir, release string) {
		t.Helper()
		p, err := d.StagingDir(release)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := d.Commit(release); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		give    func(t *testing.T, d *releasedir.Dir)
		release string
		want    Status
		wantIn  string
	}{
		{
			name: "first deploy",
			give: func(t *testing.T, d *releasedir.Dir) {},
			want: StatusWarn, wantIn: "nothing to roll back to",
		},
		{
			// Before deploying r2 the rollback target is r1, the live
			// release, even though there is no previous link yet.
			name: "live release present, no previous",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				if err := d.Swap("r1"); err != nil {
					t.Fatal(err)
				}
			},
			release: "r2",
			want:    StatusPass, wantIn: "Live release r1 is present",
		},
		{
			name: "live release present, previous removed",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				commit(t, d, "r2")
				for _, r := range []string{"r1", "r2"} {
					if err := d.Swap(r); err != nil {
						t.Fatal(err)
					}
				}
				removeRelease(t, d, "r1")
			},
			release: "r3",
			want:    StatusPass, wantIn: "Live release r2 is present",
		},
		{
			name: "live release removed",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				if err := d.Swap("r1"); err != nil {
					t.Fatal(err)
				}
				removeRelease(t, d, "r1")
			},
			release: "r2",
			want:    StatusFail, wantIn: "Live release r1, the rollback target, is gone",
		},
		{
			name: "redeploy of the live release rolls back to previous",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				commit(t, d, "r2")
				for _, r := range []string{"r1", "r2"} {
					if err := d.Swap(r); err != nil {
						t.Fatal(err)
					}
				}
			},
			release: "r2",
			want:    StatusPass, wantIn: "Previous release r1 is present",
		},
		{
			name: "redeploy, previous removed",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				commit(t, d, "r2")
				for _, r := range []string{"r1", "r2"} {
					if err := d.Swap(r); err != nil {
						t.Fatal(err)
					}
				}
				removeRelease(t, d, "r1")
			},
			release: "r2",
			want:    StatusFail, wantIn: "Previous release r1, the rollback target, is gone",
		},
		{
			name: "redeploy right after a first deploy",
			give: func(t *testing.T, d *releasedir.Dir) {
				commit(t, d, "r1")
				if err := d.Swap("r1"); err != nil {
					t.Fatal(err)
				}
			},
			release: "r1",
			want:    StatusWarn, wantIn: "no previous release",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := releasedir.Open(t.TempDir(), "app")
			if err != nil {
				t.Fatal(err)
			}
			tt.give(t, d)
			checkResult(t, PreviousReleasePresent(d, tt.release), NamePreviousRelease, tt.want, tt.wantIn)
		})
	}
	t.Run("nil dir", func(t *testing.T) {
		checkResult(t, PreviousReleasePresent(nil, "r1"), NamePreviousRelease, StatusFail, "No release directory")
	})
}

func removeRelease(t *testing.T, d *releasedir.Dir, release string) {
	t.Helper()
	p, err := d.ReleasePath(release)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
}
