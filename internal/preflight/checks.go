package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/svcmgr"
)

// DefaultMinDays is how many days of certificate validity TLS wants left
// when asked for zero or fewer.
const DefaultMinDays = 14

// DefaultDiskFactor is how many times the release size DiskFree wants free
// when given a factor of zero or less.
const DefaultDiskFactor = 3

// DefaultBackupMaxAge is the age BackupFresh allows when given zero or less.
const DefaultBackupMaxAge = 24 * time.Hour

// DNS checks that domain resolves to at least one address.
func DNS(ctx context.Context, domain string) Result {
	addrs, err := net.DefaultResolver.LookupHost(ctx, domain)
	if err != nil {
		return fail(NameDNS, "Domain %s does not resolve (%v); add its DNS record or fix this host's resolver before going live.", domain, err)
	}
	if len(addrs) == 0 {
		return fail(NameDNS, "Domain %s resolves to no address; add an A or AAAA record before going live.", domain)
	}
	return pass(NameDNS, "Domain %s resolves to %s; nothing to do.", domain, strings.Join(addrs, ", "))
}

// TLS connects to domain:port (443 when port is zero or less), verifies the certificate chain against roots
// (the system roots when nil) and the name domain at time now (time.Now when
// zero), and wants at least minDays (DefaultMinDays when zero or less) of
// validity left: fewer is a warning, an expired, untrusted or wrongly named
// certificate a failure.
func TLS(ctx context.Context, domain string, port int, roots *x509.CertPool, minDays int, now time.Time) Result {
	if minDays <= 0 {
		minDays = DefaultMinDays
	}
	if now.IsZero() {
		now = time.Now()
	}
	if port <= 0 {
		port = 443
	}
	addr := net.JoinHostPort(domain, strconv.Itoa(port))
	// Verification is done below, against now, so that an expired, a wrongly
	// named and an untrusted certificate each get their own advice.
	d := tls.Dialer{Config: &tls.Config{ServerName: domain, InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fail(NameTLS, "Cannot complete a TLS handshake with %s (%v); make sure the server listens there with TLS.", addr, err)
	}
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	conn.Close()
	if len(certs) == 0 {
		return fail(NameTLS, "Server %s sent no certificate; configure one for %s.", addr, domain)
	}
	leaf := certs[0]
	if now.After(leaf.NotAfter) {
		return fail(NameTLS, "Certificate for %s expired on %s; renew it before going live.", domain, leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	if now.Before(leaf.NotBefore) {
		return fail(NameTLS, "Certificate for %s is not valid before %s; check the server's certificate and this host's clock.", domain, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: domain, CurrentTime: now})
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	switch {
	case errors.As(err, &hostErr):
		return fail(NameTLS, "Certificate served at %s is for %s, not %s; install a certificate that covers %s.", addr, certNames(leaf), domain, domain)
	case errors.As(err, &authErr):
		return fail(NameTLS, "Certificate for %s does not chain to a trusted root (issuer %q); serve the full chain from a trusted CA.", domain, leaf.Issuer.String())
	case err != nil:
		return fail(NameTLS, "Certificate for %s does not verify (%v); replace it with a valid one.", domain, err)
	}
	left := leaf.NotAfter.Sub(now)
	if left < time.Duration(minDays)*24*time.Hour {
		return warn(NameTLS, "Certificate for %s expires in %d days (on %s), within %d days; renew it soon.", domain, int(left.Hours()/24), leaf.NotAfter.UTC().Format(time.DateOnly), minDays)
	}
	return pass(NameTLS, "Certificate for %s is trusted and valid until %s; nothing to do.", domain, leaf.NotAfter.UTC().Format(time.DateOnly))
}

func certNames(c *x509.Certificate) string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}

// Pinger is a database connection that can prove it is alive by a round trip
// to the server, such as SELECT 1. This package ships no driver, so that
// preflight depends on the standard library only: the agent opens the
// connection with its PostgreSQL driver from the DSN it read from the
// service's env file and passes it here (pgx's *pgx.Conn and *pgxpool.Pool
// have this method already; a wrapper running SELECT 1 over database/sql
// works as well). Ping must return when ctx is done.
type Pinger interface {
	Ping(ctx context.Context) error
}

// DatabaseReachable pings the database behind p. dsn is the connection
// string p was built from; it is used only to scrub the driver's error, so
// that neither the DSN nor its password ever reaches the Detail.
func DatabaseReachable(ctx context.Context, dsn string, p Pinger) Result {
	if p == nil {
		return fail(NameDatabase, "No database connection was configured for this check; set the service's database block or skip the check.")
	}
	if err := p.Ping(ctx); err != nil {
		return fail(NameDatabase, "Database is not reachable (%s); check the DSN key in the service's env file and that PostgreSQL is up.", scrub(err.Error(), dsn))
	}
	return pass(NameDatabase, "Database answers; nothing to do.")
}

var kvPassword = regexp.MustCompile(`(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// scrub removes dsn and any password it holds from msg.
func scrub(msg, dsn string) string {
	const mask = "[redacted]"
	var secrets []string
	if dsn != "" {
		secrets = append(secrets, dsn)
	}
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			secrets = append(secrets, url.QueryEscape(pw), url.PathEscape(pw), pw)
		}
	}
	if u, err := url.Parse(dsn); err == nil {
		if pw := u.Query().Get("password"); pw != "" {
			secrets = append(secrets, pw)
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		pw := m[1]
		secrets = append(secrets, pw, strings.Trim(pw, "'"))
	}
	// Longest first, so a password inside the DSN does not break the DSN's match.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, mask)
		}
	}
	return kvPassword.ReplaceAllString(msg, "password="+mask)
}

var envLine = regexp.MustCompile(`env file line \d+`)

// SecretsPresent checks that every key in required is set to a non-empty
// value in envFile. It reports the names of missing keys only; values are
// never copied into the Result.
func SecretsPresent(envFile string, required []string) Result {
	env, err := svcmgr.ReadEnvFile(envFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fail(NameSecrets, "Cannot read env file %s (%v); create it with the required keys (%s).", envFile, pe.Err, strings.Join(required, ", "))
		}
		// Parse errors may quote the start of a line, which could be a
		// secret: report where, never what.
		where := "a line"
		if m := envLine.FindString(err.Error()); m != "" {
			where = strings.TrimPrefix(m, "env file ")
		}
		return fail(NameSecrets, "Env file %s does not parse at %s; fix it to KEY=VALUE syntax.", envFile, where)
	}
	var missing, empty []string
	for _, k := range required {
		v, ok := env[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case v == "":
			empty = append(empty, k)
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(empty) > 0 {
		parts = append(parts, "empty "+strings.Join(empty, ", "))
	}
	if len(parts) > 0 {
		return fail(NameSecrets, "Env file %s lacks required keys (%s); set them before going live.", envFile, strings.Join(parts, "; "))
	}
	return pass(NameSecrets, "Env file %s sets all %d required keys; nothing to do.", envFile, len(required))
}

// DiskFree checks that the file system holding path has at least factor
// (DefaultDiskFactor when zero or less) times need bytes available to
// unprivileged users.
func DiskFree(path string, need int64, factor float64) Result {
	if factor <= 0 {
		factor = DefaultDiskFactor
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return fail(NameDisk, "Cannot stat the file system of %s (%v); create the directory or fix the path.", path, err)
	}
	free := float64(st.Bavail) * float64(st.Bsize)
	want := math.Ceil(float64(need) * factor)
	if free < want {
		return fail(NameDisk, "Only %s free on %s, %s needed (%.3gx the release's %s); free up space before going live.", humanBytes(free), path, humanBytes(want), factor, humanBytes(float64(need)))
	}
	return pass(NameDisk, "%s free on %s, %s needed; nothing to do.", humanBytes(free), path, humanBytes(want))
}

func humanBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%.0f B", n)
	}
	exp := 0
	for n >= unit && exp < 6 {
		n /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", n, "KMGTPE"[exp-1])
}

// BackupFresh checks that the last backup was taken within maxAge
// (DefaultBackupMaxAge when zero or less) of now (time.Now when zero) and that
// its restore was verified. No backup at all (a zero lastBackupTime) fails.
func BackupFresh(lastBackupTime time.Time, verified bool, maxAge time.Duration, now time.Time) Result {
	if now.IsZero() {
		now = time.Now()
	}
	if lastBackupTime.IsZero() {
		return fail(NameBackup, "There is no database backup; take one (and let golive verify it) before going live.")
	}
	if !verified {
		return fail(NameBackup, "The last backup (%s) was never verified by a restore; take a new backup and let golive verify it.", lastBackupTime.UTC().Format(time.RFC3339))
	}
	age := now.Sub(lastBackupTime)
	if maxAge <= 0 {
		maxAge = DefaultBackupMaxAge
	}
	if age > maxAge {
		return fail(NameBackup, "The last verified backup is %s old, older than %s; take a new backup before going live.", age.Round(time.Minute), maxAge)
	}
	return pass(NameBackup, "The last backup is %s old and verified; nothing to do.", age.Round(time.Minute))
}

// PreviousReleasePresent checks that the release a deploy of release would
// roll back to is on disk and committed (complete: releasedir only shows a
// release under its final name once it is whole). Before a deploy that
// target is the release current points at now; when release is already
// current (a redeploy), it is the previous one. No current release yet (a
// first deploy) is a warning: there is nothing to roll back to.
func PreviousReleasePresent(dir *releasedir.Dir, release string) Result {
	if dir == nil {
		return fail(NamePreviousRelease, "No release directory was given to this check; report this as a golive bug.")
	}
	cur, err := dir.Current()
	if err != nil {
		return fail(NamePreviousRelease, "Cannot read the current release (%v); repair the current link in %s.", err, dir.Path())
	}
	if cur == "" {
		return warn(NamePreviousRelease, "No release is live in %s yet, so there is nothing to roll back to; expect this only on a first deploy.", dir.Path())
	}
	target, what := cur, "Live release"
	if release != "" && release == cur {
		prev, err := dir.Previous()
		if err != nil {
			return fail(NamePreviousRelease, "Cannot read the previous release (%v); repair the previous link in %s.", err, dir.Path())
		}
		if prev == "" {
			return warn(NamePreviousRelease, "Release %s is already live and there is no previous release in %s to roll back to; expect this only right after a first deploy.", cur, dir.Path())
		}
		target, what = prev, "Previous release"
	}
	ok, err := dir.Exists(target)
	if err != nil {
		return fail(NamePreviousRelease, "Cannot check rollback target %s (%v); fix the release directory %s.", target, err, dir.Path())
	}
	if !ok {
		return fail(NamePreviousRelease, "%s %s, the rollback target, is gone from %s; redeploy it or accept a deploy without rollback by skipping this check.", what, target, dir.Path())
	}
	return pass(NamePreviousRelease, "%s %s is present for rollback; nothing to do.", what, target)
}
