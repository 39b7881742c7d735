package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/svcmgr"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// PreflightCAFileEnv names an environment variable of the agent: a PEM file
// whose certificates the TLS pre-live check trusts in addition to the
// system roots. It is meant for a private CA (and for tests, whose
// certificates are made on the fly); unset, only the system roots count.
const PreflightCAFileEnv = "GOLIVE_PREFLIGHT_CA_FILE"

// preflightTimeout bounds a whole preflight run on the agent; each check
// has its own, shorter timeout (preflight.DefaultTimeout).
const preflightTimeout = 25 * time.Second

// runPreflight runs a service's pre-live checks for a PreflightAction and
// sends the ack and the result (outcome SUCCEEDED with the checks, FAILED
// with an error when the checks could not run). It returns at once: the
// checks run off the stream's receive goroutine. No approval is needed:
// the checks only read.
func (a *Agent) runPreflight(cmd *golivev1.Command, enqueue func(*golivev1.ConnectRequest)) {
	enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: &golivev1.CommandAck{CommandId: cmd.Id, Accepted: true}}})
	a.ops.Add(1)
	go func() {
		defer a.ops.Done()
		ctx := a.opCtx
		if ctx == nil {
			ctx = context.Background()
		}
		res := a.preflightResult(ctx, cmd)
		enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}})
	}()
}

// preflightResult runs the checks a PreflightAction asks for and returns
// the command's result.
func (a *Agent) preflightResult(ctx context.Context, cmd *golivev1.Command) *golivev1.CommandResult {
	pf := cmd.GetPreflight()
	res := &golivev1.CommandResult{CommandId: cmd.Id, Service: pf.GetService(), Release: pf.GetRelease()}
	log := a.log.With("command_id", cmd.Id, "service", pf.GetService())
	s := a.service(pf.GetService())
	if s == nil {
		res.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED
		res.Error = fmt.Sprintf("service %q is not configured on host %s", pf.GetService(), a.cfg.HostID)
		res.FinishedAt = timestamppb.Now()
		log.Warn("preflight refused", "error", res.Error)
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	start := time.Now()
	results := preflight.Run(ctx, preflightChecks(s, pf, log), pf.GetSkipChecks())
	res.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED
	counts := map[preflight.Status]int{}
	for _, r := range results {
		counts[r.Status]++
		res.Checks = append(res.Checks, &golivev1.CheckResult{Name: r.Name, Status: string(r.Status), Detail: r.Detail})
	}
	res.FinishedAt = timestamppb.Now()
	log.Info("preflight finished", "ok", preflight.Summary(results), "pass", counts[preflight.StatusPass],
		"warn", counts[preflight.StatusWarn], "fail", counts[preflight.StatusFail], "skip", counts[preflight.StatusSkip],
		"duration", time.Since(start).Round(time.Millisecond))
	return res
}

// logger is the little of hclog.Logger the checks use.
type logger interface {
	Warn(msg string, args ...any)
}

// preflightChecks builds a service's checks from its configuration:
//
//	dns, tls          when preflight.domain is set
//	database, backup  when the service has a database block (backup also
//	                  needs preflight.max_backup_age > 0)
//	secrets           when preflight.required_secrets is not empty
//	disk              always: free space >= factor x the release's size
//	previous-release  always: the rollback target is on disk
//
// A service built without a config (tests) gets disk and previous-release.
func preflightChecks(s *Service, pf *golivev1.PreflightAction, log logger) []preflight.Check {
	cfg := s.Config
	if cfg == nil {
		cfg = agentconfig.DefaultService(s.Name)
	}
	p := cfg.Preflight
	var checks []preflight.Check
	if p.Domain != "" {
		checks = append(checks,
			preflight.Check{Name: preflight.NameDNS, Fn: func(ctx context.Context) preflight.Result {
				return preflight.DNS(ctx, p.Domain)
			}},
			preflight.Check{Name: preflight.NameTLS, Fn: func(ctx context.Context) preflight.Result {
				roots, err := preflightRoots()
				if err != nil {
					return preflight.Result{Status: preflight.StatusFail, Detail: err.Error()}
				}
				return preflight.TLS(ctx, p.Domain, p.TLSPort, roots, p.CertExpiryDays, time.Time{})
			}})
	}
	if cfg.Database != nil {
		db := cfg.Database
		checks = append(checks, preflight.Check{Name: preflight.NameDatabase, Fn: func(ctx context.Context) preflight.Result {
			return databaseCheck(ctx, cfg.DatabaseEnvFile(), db.DSNEnvKey)
		}})
		if p.MaxBackupAge > 0 {
			checks = append(checks, preflight.Check{Name: preflight.NameBackup, Fn: func(context.Context) preflight.Result {
				return backupCheck(s.BackupDir, p.MaxBackupAge)
			}})
		}
	}
	if len(p.RequiredSecrets) > 0 {
		checks = append(checks, preflight.Check{Name: preflight.NameSecrets, Fn: func(context.Context) preflight.Result {
			if f := cfg.SecretsEnvFile(); f != "" {
				return preflight.SecretsPresent(f, p.RequiredSecrets)
			}
			return preflight.Result{Status: preflight.StatusFail,
				Detail: fmt.Sprintf("Required secrets (%s) are configured but the service has no env file; set preflight.env_file or exec.env_file.", strings.Join(p.RequiredSecrets, ", "))}
		}})
	}
	checks = append(checks,
		preflight.Check{Name: preflight.NameDisk, Fn: func(ctx context.Context) preflight.Result {
			return diskCheck(ctx, s, pf.GetArtifactUrl(), p.MinFreeDiskFactor, log)
		}},
		preflight.Check{Name: preflight.NamePreviousRelease, Fn: func(context.Context) preflight.Result {
			if s.Dir == nil {
				return noReleaseDir()
			}
			return preflight.PreviousReleasePresent(s.Dir, pf.GetRelease())
		}})
	return checks
}

// noReleaseDir is the answer of the disk and rollback checks for a service
// the agent keeps no releases of (one built by hand, in tests).
func noReleaseDir() preflight.Result {
	return preflight.Result{Status: preflight.StatusWarn, Detail: "This agent keeps no release directory for the service, so there is nothing to check."}
}

// preflightRoots is the system pool plus the certificates of the file
// named by PreflightCAFileEnv, if set.
func preflightRoots() (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	f := os.Getenv(PreflightCAFileEnv)
	if f == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(f)
	if err != nil {
		return nil, fmt.Errorf("Cannot read the extra CA file %s named by %s (%v); fix the path or unset it.", f, PreflightCAFileEnv, errors.Unwrap(err))
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("The extra CA file %s named by %s holds no PEM certificate; fix it or unset it.", f, PreflightCAFileEnv)
	}
	return pool, nil
}

// databaseCheck reads the DSN from the env file and runs SELECT 1 through
// psql. The DSN reaches psql only through PG* environment variables, and
// neither it nor its password appears in the Result.
func databaseCheck(ctx context.Context, envFile, key string) preflight.Result {
	failf := func(format string, args ...any) preflight.Result {
		return preflight.Result{Status: preflight.StatusFail, Detail: fmt.Sprintf(format, args...)}
	}
	if envFile == "" {
		return failf("The database block has no env file to read its DSN from; set database.env_file or exec.env_file.")
	}
	env, err := svcmgr.ReadEnvFile(envFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return failf("Cannot read env file %s for the database DSN (%v); create it with key %s.", envFile, pe.Err, key)
		}
		return failf("Env file %s does not parse; fix it to KEY=VALUE syntax so the database DSN (key %s) can be read.", envFile, key)
	}
	dsn, ok := env[key]
	if !ok || strings.TrimSpace(dsn) == "" {
		return failf("Env file %s has no value for key %s (the database DSN); set it before going live.", envFile, key)
	}
	return preflight.DatabaseReachable(ctx, dsn, dsnPinger(dsn))
}

// dsnPinger pings with dbbackup.Ping: the DSN is parsed by the same code the
// backups use and reaches psql only through PG* variables.
type dsnPinger string

func (d dsnPinger) Ping(ctx context.Context) error { return dbbackup.Ping(ctx, string(d), "") }

// backupCheck looks at the newest backup record in dir.
func backupCheck(dir string, maxAge time.Duration) preflight.Result {
	recs, err := dbbackup.Records(dir)
	if err != nil {
		return preflight.Result{Status: preflight.StatusFail,
			Detail: fmt.Sprintf("Cannot read the backup records in %s (%v); fix the backup directory.", dir, err)}
	}
	if len(recs) == 0 {
		return preflight.BackupFresh(time.Time{}, false, maxAge, time.Time{})
	}
	last := recs[0]
	return preflight.BackupFresh(last.CreatedAt, !last.VerifiedAt.IsZero(), maxAge, time.Time{})
}

// diskCheck wants factor x the release's size free in the service's
// directory. The size is the artifact's (HEAD Content-Length, a ranged GET
// when HEAD is not allowed, or the file of a file:// URL), else the live
// release's on disk; unknown is a warning. An artifact that cannot be
// reached (404, refused, ...) fails the check: the deploy would fail to
// fetch it.
func diskCheck(ctx context.Context, s *Service, artifactURL string, factor float64, log logger) preflight.Result {
	if s.Dir == nil {
		return noReleaseDir()
	}
	size, from, note := int64(-1), "", ""
	if artifactURL != "" {
		n, err := artifactSize(ctx, artifactURL)
		switch {
		case errors.Is(err, errNoLength):
			log.Warn("preflight: the artifact's size is unknown", "error", err)
			note = " (the artifact's server gives no size)"
		case err != nil:
			return preflight.Result{Status: preflight.StatusFail,
				Detail: fmt.Sprintf("The agent cannot size the artifact: %v; a deploy would fail to fetch it: fix the artifact URL or publish the artifact before going live.", err)}
		default:
			size, from = n, "artifact"
		}
	}
	if size < 0 {
		if n, err := treeSize(s.Dir.CurrentPath()); err == nil {
			size, from = n, "live release"+note
		}
	}
	if size < 0 {
		return preflight.Result{Status: preflight.StatusWarn,
			Detail: fmt.Sprintf("The release size is unknown (no artifact size%s, no live release), so free space in %s was not compared; pass --artifact to size it.", note, s.Dir.Path())}
	}
	r := preflight.DiskFree(s.Dir.Path(), size, factor)
	if from != "" && r.Status == preflight.StatusPass {
		r.Detail = strings.TrimSuffix(r.Detail, "; nothing to do.") + " (sized from the " + from + "); nothing to do."
	}
	return r
}

// errNoLength: the artifact is there but its server does not say its size.
var errNoLength = errors.New("no Content-Length")

// artifactSize is the artifact's size in bytes; errNoLength when the server
// answers but gives no size. Errors never quote the URL (a signed URL's
// query is a credential).
func artifactSize(ctx context.Context, raw string) (int64, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, errors.New("artifact URL does not parse")
	}
	switch u.Scheme {
	case "file":
		fi, err := os.Stat(u.Path)
		if err != nil {
			return 0, fmt.Errorf("stat artifact: %w", errors.Unwrap(err))
		}
		return fi.Size(), nil
	case "http", "https":
	default:
		return 0, fmt.Errorf("unsupported artifact URL scheme %q", u.Scheme)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := artifactRequest(ctx, http.MethodHead, u)
	if err != nil {
		return 0, fmt.Errorf("HEAD artifact: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && resp.ContentLength >= 0:
		return resp.ContentLength, nil
	case resp.StatusCode == http.StatusOK:
		return 0, fmt.Errorf("HEAD artifact: %w", errNoLength)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return 0, fmt.Errorf("HEAD artifact: status %s", resp.Status)
	}
	// Some stores refuse HEAD (a URL signed for GET answers 403): ask for
	// the first byte, whose answer names the size.
	head := resp.Status
	resp, err = artifactRequest(ctx, http.MethodGet, u)
	if err != nil {
		return 0, fmt.Errorf("GET artifact (HEAD: status %s): %w", head, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var first, last, total int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &total); err == nil && total >= 0 {
			return total, nil
		}
		return 0, fmt.Errorf("GET artifact: %w", errNoLength)
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			return resp.ContentLength, nil
		}
		return 0, fmt.Errorf("GET artifact: %w", errNoLength)
	}
	return 0, fmt.Errorf("GET artifact: status %s", resp.Status)
}

// artifactRequest sends a HEAD, or a GET of the first byte only.
func artifactRequest(ctx context.Context, method string, u *url.URL) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, errors.New("artifact URL is not a valid request")
	}
	if method == http.MethodGet {
		req.Header.Set("Range", "bytes=0-0")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	return resp, nil
}

// treeSize sums the sizes of the regular files under root (following root
// itself when it is a symlink).
func treeSize(root string) (int64, error) {
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		return 0, err
	}
	var n int64
	err = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
