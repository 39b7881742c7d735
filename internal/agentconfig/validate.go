package agentconfig

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

var (
	// nameRe is the shape of host ids, service names, smoke check names and
	// label keys.
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// envKeyRe is the shape of an environment variable name.
	envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// unitRe is the shape of a systemd unit name or template prefix.
	unitRe = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]{1,255}$`)
	// tokenRe is an HTTP token (methods, header names).
	tokenRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	// domainRe is a DNS name.
	domainRe = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)
)

const nameRule = "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"

// ValidName reports whether s is a valid host id, service name or smoke
// check name.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// Validate checks the whole config, after flags. It reports every problem it
// finds, as Errors; nil means the agent may run with c. It reads no files.
func (c *Config) Validate() error {
	v := &validator{}
	v.config(c)
	return v.errs.Err()
}

type validator struct {
	errs Errors
}

// owner is what a group of checks reports against: a field-name prefix and
// the positions of the owner's values.
type owner struct {
	v      *validator
	prefix string
	pos    positions
}

// fail reports a problem with key, positioned at the first of keys found
// (key itself first), else at the owner's block.
func (o owner) fail(key string, fallbacks []string, format string, args ...any) {
	rng := o.pos.at(append([]string{key}, fallbacks...)...)
	o.v.add(rng, o.prefix+key, format, args...)
}

// failAt reports a problem with key positioned at key, or its enclosing
// blocks, or the owner.
func (o owner) failAt(key, format string, args ...any) {
	o.fail(key, enclosing(key), format, args...)
}

func (v *validator) add(rng hcl.Range, field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Range: rng, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// enclosing lists the block keys around key, innermost first:
// "blue_green.router.kind" -> ["blue_green.router", "blue_green"].
func enclosing(key string) []string {
	var out []string
	for i := strings.LastIndexByte(key, '.'); i > 0; i = strings.LastIndexByte(key, '.') {
		key = key[:i]
		out = append(out, key)
	}
	return out
}

func (v *validator) config(c *Config) {
	o := owner{v: v, pos: c.pos}
	switch {
	case c.HostID == "":
		o.failAt("host_id", "is required (no hostname found): set host_id or --host-id")
	case !nameRe.MatchString(c.HostID):
		o.failAt("host_id", "%q %s (it must also match the agent's certificate name)", c.HostID, nameRule)
	}
	for k, val := range c.Labels {
		if !nameRe.MatchString(k) {
			o.failAt("labels", "key %q %s", k, nameRule)
		}
		if len(val) > 256 || strings.ContainsFunc(val, isControl) {
			o.failAt("labels", "value of %q must be at most 256 printable characters", k)
		}
	}
	o.absPath("state_dir", c.StateDir, true)
	for _, k := range c.TrustedKeys {
		if k == "" || !filepath.IsAbs(k) {
			o.failAt("trusted_keys", "key file %q must be an absolute path", k)
		}
	}
	v.controller(o, &c.Controller)

	a := c.Artifacts
	if a.MaxBytes <= 0 {
		o.failAt("artifacts.max_bytes", "must be positive")
	}
	if a.MaxUnpackedBytes <= 0 {
		o.failAt("artifacts.max_unpacked_bytes", "must be positive")
	}
	if a.MaxFiles < 1 {
		o.failAt("artifacts.max_files", "must be at least 1, got %d", a.MaxFiles)
	}
	if a.Retries < 0 || a.Retries > 100 {
		o.failAt("artifacts.retries", "must be between 0 and 100, got %d", a.Retries)
	}

	seen := map[string]*Service{}
	for i, s := range c.Services {
		if s == nil {
			v.add(hcl.Range{}, fmt.Sprintf("services[%d]", i), "is nil")
			continue
		}
		if first, dup := seen[s.Name]; dup {
			so := owner{v: v, prefix: serviceField(s.Name, ""), pos: s.pos}
			where := ""
			if r := first.pos[""]; r.Filename != "" {
				where = fmt.Sprintf(" (first defined at %s:%d)", r.Filename, r.Start.Line)
			}
			so.v.add(so.pos[""], strings.TrimSuffix(so.prefix, ": "), "duplicate service name%s", where)
			continue
		}
		seen[s.Name] = s
		v.service(s)
	}
	v.portOverlaps(c.Services)
}

func (v *validator) controller(o owner, ctl *Controller) {
	if ctl.Address == "" {
		o.failAt("controller.address", "is required")
	} else if _, port, err := net.SplitHostPort(ctl.Address); err != nil || port == "" {
		o.failAt("controller.address", "%q is not host:port", ctl.Address)
	}
	o.absPath("controller.ca_file", ctl.CAFile, false)
	o.absPath("controller.cert_file", ctl.CertFile, false)
	o.absPath("controller.key_file", ctl.KeyFile, false)
	set := 0
	for _, f := range []string{ctl.CAFile, ctl.CertFile, ctl.KeyFile} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		o.failAt("controller", "set all of ca_file, cert_file and key_file (mTLS), or none (loopback dev mode)")
	}
}

func (v *validator) service(s *Service) {
	o := owner{v: v, prefix: serviceField(s.Name, ""), pos: s.pos}
	if !nameRe.MatchString(s.Name) {
		v.add(s.pos[""], strings.TrimSuffix(o.prefix, ": "), "name %s", nameRule)
	}
	if s.KeepReleases < 2 {
		o.failAt("keep_releases", "must be at least 2 (the live release and one to roll back to), got %d", s.KeepReleases)
	}
	if s.pos.has("port") || s.Port != 0 {
		o.port("port", s.Port)
	}

	switch s.SwapMode {
	case SwapRestart:
		if s.BlueGreen != nil {
			o.failAt("blue_green", `block is only used with swap_mode = "blue-green"`)
		}
	case SwapBlueGreen:
		if s.Port != 0 {
			o.failAt("port", `is not used with swap_mode = "blue-green": slots listen on blue_green.blue_port and green_port`)
		}
		if s.BlueGreen == nil {
			o.failAt("blue_green", `block is required with swap_mode = "blue-green"`)
		}
	default:
		o.failAt("swap_mode", `must be "restart" or "blue-green", got %q`, s.SwapMode)
	}

	v.manager(o, s)
	v.health(o, s)
	o.command("hooks.pre_swap", s.Hooks.PreSwap, false)
	o.command("hooks.post_swap", s.Hooks.PostSwap, false)
	o.command("hooks.on_rollback", s.Hooks.OnRollback, false)
	o.positive("hooks.timeout", s.Hooks.Timeout)
	v.database(o, s)
	if m := s.Migrate; m != nil {
		if s.Database == nil {
			o.failAt("migrate", "needs a database block: a backup is taken before every migration")
		}
		o.command("migrate.command", m.Command, true)
		o.positive("migrate.timeout", m.Timeout)
	}
	if s.BlueGreen != nil {
		v.blueGreen(o, s.BlueGreen)
	}
	v.traffic(o, s)
	v.scale(o, s)
	if s.MetricsPath != "" || s.pos.has("metrics_path") {
		if !strings.HasPrefix(s.MetricsPath, "/") || strings.ContainsFunc(s.MetricsPath, func(r rune) bool { return isControl(r) || r == ' ' }) {
			o.failAt("metrics_path", `must be a URL path starting with "/" (e.g. "/metrics"), got %q`, s.MetricsPath)
		} else if u, err := url.Parse(s.MetricsPath); err != nil || u.Host != "" || u.Fragment != "" {
			o.failAt("metrics_path", "%q is not a valid URL path", s.MetricsPath)
		}
	}
	v.preflight(o, s)

	seen := map[string]*Smoke{}
	for i, sm := range s.Smoke {
		if sm == nil {
			o.failAt(fmt.Sprintf("smoke[%d]", i), "is nil")
			continue
		}
		so := owner{v: v, prefix: o.prefix + smokeField(sm.Name, ""), pos: sm.pos}
		if first, dup := seen[sm.Name]; dup {
			where := ""
			if r := first.pos[""]; r.Filename != "" {
				where = fmt.Sprintf(" (first defined at %s:%d)", r.Filename, r.Start.Line)
			}
			v.add(sm.pos[""], strings.TrimSuffix(so.prefix, "."), "duplicate smoke check name%s", where)
			continue
		}
		seen[sm.Name] = sm
		v.smoke(so, sm)
	}
}

func (v *validator) manager(o owner, s *Service) {
	switch s.Manager {
	case ManagerExec:
		if s.Exec == nil || len(s.Exec.Command) == 0 {
			o.fail("exec.command", []string{"exec"}, `is required with manager = "exec"`)
		} else {
			o.command("exec.command", s.Exec.Command, true)
			o.placeholders("exec.command", strings.Join(s.Exec.Command, " "))
		}
		if s.Unit != "" {
			o.failAt("unit", `is only used with manager = "systemd"`)
		}
	case ManagerSystemd:
		if s.Exec != nil && len(s.Exec.Command) > 0 {
			o.failAt("exec.command", `is not used with manager = "systemd": the unit says what runs`)
		}
		switch {
		case s.Unit == "":
			o.failAt("unit", `is required with manager = "systemd"`)
		case !unitRe.MatchString(s.Unit):
			o.failAt("unit", "%q is not a systemd unit name", s.Unit)
		case s.SwapMode == SwapBlueGreen && !strings.HasSuffix(s.Unit, "@"):
			o.failAt("unit", `must be a template prefix ending in "@" with swap_mode = "blue-green" (e.g. "app@": slots run as app@blue and app@green), got %q`, s.Unit)
		case s.SwapMode != SwapBlueGreen && strings.HasSuffix(s.Unit, "@"):
			o.failAt("unit", `%q is a template prefix; with swap_mode = "restart" name the unit (e.g. "app.service")`, s.Unit)
		}
	default:
		o.failAt("manager", `must be "exec" or "systemd", got %q`, s.Manager)
	}
	if e := s.Exec; e != nil {
		o.absPath("exec.env_file", e.EnvFile, false)
		o.absPath("exec.log_file", e.LogFile, false)
		for k, val := range e.Env {
			if !envKeyRe.MatchString(k) {
				o.failAt("exec.env", "%q is not a valid environment variable name", k)
			}
			if strings.ContainsRune(val, 0) {
				o.failAt("exec.env", "value of %q contains a NUL byte", k)
			}
			o.placeholders("exec.env", val)
		}
		if s.Manager == ManagerExec {
			o.positive("exec.stop_timeout", e.StopTimeout)
		}
	}
	if s.SwapMode == SwapRestart && s.Port == 0 && s.usesPort() {
		o.fail("port", []string{"health.url", "exec.command"}, "is required: %s is used in health.url or exec", PortPlaceholder)
	}
}

// usesPort reports whether the service's command, env or health URL expands
// "{port}".
func (s *Service) usesPort() bool {
	if strings.Contains(s.Health.URL, PortPlaceholder) {
		return true
	}
	if s.Exec == nil {
		return false
	}
	for _, a := range s.Exec.Command {
		if strings.Contains(a, PortPlaceholder) {
			return true
		}
	}
	for _, val := range s.Exec.Env {
		if strings.Contains(val, PortPlaceholder) {
			return true
		}
	}
	return false
}

func (v *validator) health(o owner, s *Service) {
	h := s.Health
	if h.URL == "" {
		o.fail("health.url", []string{"health"}, "is required")
	} else {
		if o.placeholders("health.url", h.URL) {
			o.httpURL("health.url", h.URL)
		}
	}
	o.status("health.expect_status", h.ExpectStatus)
	o.positive("health.timeout", h.Timeout)
	o.positive("health.interval", h.Interval)
	o.positive("health.deadline", h.Deadline)
	o.positive("health.window", h.Window)
	if h.Successes < 1 {
		o.failAt("health.successes", "must be at least 1, got %d", h.Successes)
	}
	if h.Timeout > 0 && h.Deadline > 0 && h.Deadline < h.Timeout {
		o.failAt("health.deadline", "(%s) must be at least health.timeout (%s)", h.Deadline, h.Timeout)
	}
}

func (v *validator) database(o owner, s *Service) {
	db := s.Database
	if db == nil {
		return
	}
	if db.Kind != "postgres" {
		o.failAt("database.kind", `must be "postgres", got %q`, db.Kind)
	}
	if !envKeyRe.MatchString(db.DSNEnvKey) {
		o.failAt("database.dsn_env_key", "%q is not a valid environment variable name", db.DSNEnvKey)
	}
	if s.DatabaseEnvFile() == "" {
		o.failAt("database.env_file", "is required (or set exec.env_file): the DSN is read from it")
	} else {
		o.absPath("database.env_file", db.EnvFile, false)
	}
	o.absPath("database.backup_dir", db.BackupDir, false)
	if db.KeepBackups < 1 {
		o.failAt("database.keep_backups", "must be at least 1, got %d", db.KeepBackups)
	}
	o.optionalPositive("database.max_backup_age", db.MaxBackupAge)
}

func (v *validator) blueGreen(o owner, bg *BlueGreen) {
	o.port("blue_green.blue_port", bg.BluePort)
	o.port("blue_green.green_port", bg.GreenPort)
	if bg.BluePort != 0 && bg.BluePort == bg.GreenPort {
		o.failAt("blue_green.green_port", "must differ from blue_port (%d)", bg.BluePort)
	}
	o.positive("blue_green.keep_warm", bg.KeepWarm)
	o.positive("blue_green.drain_timeout", bg.DrainTimeout)

	v.router(o, "blue_green.router.", bg.Router)
}

// router checks a router block; p is its key prefix ("blue_green.router.").
func (v *validator) router(o owner, p string, r Router) {
	block := strings.TrimSuffix(p, ".")
	unused := func(key, val string, list []string) {
		if val != "" || len(list) > 0 {
			o.failAt(p+key, "is not used with router kind %q", r.Kind)
		}
	}
	switch r.Kind {
	case RouterNginx:
		if r.UpstreamFile == "" {
			o.fail(p+"upstream_file", []string{block}, `is required with kind = "nginx"`)
		} else {
			o.absPath(p+"upstream_file", r.UpstreamFile, false)
		}
		if len(r.Reload) == 0 {
			o.fail(p+"reload", []string{block}, `is required with kind = "nginx"`)
		} else {
			o.command(p+"reload", r.Reload, false)
		}
		unused("admin_socket", r.AdminSocket, nil)
		unused("backend", r.Backend, nil)
		o.absPath(p+"access_log", r.AccessLog, false)
	case RouterHAProxy:
		if r.AdminSocket == "" {
			o.fail(p+"admin_socket", []string{block}, `is required with kind = "haproxy"`)
		} else {
			o.absPath(p+"admin_socket", r.AdminSocket, false)
		}
		if r.Backend == "" {
			o.fail(p+"backend", []string{block}, `is required with kind = "haproxy"`)
		} else if !nameRe.MatchString(r.Backend) {
			o.failAt(p+"backend", "%q %s", r.Backend, nameRule)
		}
		unused("upstream_file", r.UpstreamFile, nil)
		unused("reload", "", r.Reload)
		unused("access_log", r.AccessLog, nil)
	case RouterNone:
		unused("upstream_file", r.UpstreamFile, nil)
		unused("reload", "", r.Reload)
		unused("admin_socket", r.AdminSocket, nil)
		unused("backend", r.Backend, nil)
		unused("access_log", r.AccessLog, nil)
	default:
		o.failAt(p+"kind", `must be "nginx", "haproxy" or "none", got %q`, r.Kind)
	}
	if r.ProbeURL != "" {
		o.httpURL(p+"probe_url", r.ProbeURL)
	}
}

// traffic checks where a restart-mode service's real traffic is read.
func (v *validator) traffic(o owner, s *Service) {
	tr := s.Traffic
	if tr == nil {
		return
	}
	const p = "traffic."
	if s.SwapMode == SwapBlueGreen {
		o.failAt("traffic", `block is only used with swap_mode = "restart": a blue-green service's traffic is read through blue_green.router (access_log for nginx, admin_socket for haproxy)`)
		return
	}
	unused := func(key, val string) {
		if val != "" {
			o.failAt(p+key, "is not used with source %q", tr.Source)
		}
	}
	switch tr.Source {
	case TrafficNginx:
		if tr.AccessLog == "" {
			o.fail(p+"access_log", []string{"traffic"}, `is required with source = "nginx"`)
		} else {
			o.absPath(p+"access_log", tr.AccessLog, false)
		}
		if s.Port == 0 {
			o.fail("port", []string{"traffic"}, `is required with traffic source = "nginx": the service's requests are those to 127.0.0.1:<port>`)
		}
		unused("admin_socket", tr.AdminSocket)
		unused("backend", tr.Backend)
		unused("server", tr.Server)
	case TrafficHAProxy:
		if tr.AdminSocket == "" {
			o.fail(p+"admin_socket", []string{"traffic"}, `is required with source = "haproxy"`)
		} else {
			o.absPath(p+"admin_socket", tr.AdminSocket, false)
		}
		for _, f := range []struct{ key, val string }{{"backend", tr.Backend}, {"server", tr.Server}} {
			if f.val == "" {
				o.fail(p+f.key, []string{"traffic"}, `is required with source = "haproxy"`)
			} else if !nameRe.MatchString(f.val) {
				o.failAt(p+f.key, "%q %s", f.val, nameRule)
			}
		}
		unused("access_log", tr.AccessLog)
	default:
		o.failAt(p+"source", `must be "nginx" or "haproxy", got %q`, tr.Source)
	}
}

func (v *validator) preflight(o owner, s *Service) {
	p := s.Preflight
	if p.Domain != "" && (len(p.Domain) > 253 || !domainRe.MatchString(p.Domain)) {
		o.failAt("preflight.domain", "%q is not a DNS name", p.Domain)
	}
	o.port("preflight.tls_port", p.TLSPort)
	if p.CertExpiryDays < 0 {
		o.failAt("preflight.cert_expiry_days", "must not be negative, got %d", p.CertExpiryDays)
	}
	o.absPath("preflight.env_file", p.EnvFile, false)
	if len(p.RequiredSecrets) > 0 && s.SecretsEnvFile() == "" {
		o.failAt("preflight.required_secrets", "need an env file to look in: set preflight.env_file or exec.env_file")
	}
	for _, k := range p.RequiredSecrets {
		if !envKeyRe.MatchString(k) {
			o.failAt("preflight.required_secrets", "%q is not a valid environment variable name", k)
		}
	}
	if !(p.MinFreeDiskFactor > 0) {
		o.failAt("preflight.min_free_disk_factor", "must be positive, got %g", p.MinFreeDiskFactor)
	}
	o.positive("preflight.max_backup_age", p.MaxBackupAge)
}

func (v *validator) smoke(o owner, sm *Smoke) {
	if !nameRe.MatchString(sm.Name) {
		v.add(sm.pos[""], strings.TrimSuffix(o.prefix, "."), "name %s", nameRule)
	}
	if !tokenRe.MatchString(sm.Method) || strings.ToUpper(sm.Method) != sm.Method {
		o.failAt("method", "%q is not an upper-case HTTP method such as GET", sm.Method)
	}
	if !strings.HasPrefix(sm.Path, "/") {
		o.fail("path", nil, `must start with "/", got %q`, sm.Path)
	} else if _, err := url.Parse(sm.Path); err != nil {
		o.failAt("path", "%q is not a valid URL path", sm.Path)
	}
	for k, val := range sm.Headers {
		if !tokenRe.MatchString(k) {
			o.failAt("headers", "%q is not a valid header name", k)
		}
		if strings.ContainsFunc(val, func(r rune) bool { return r == '\r' || r == '\n' || r == 0 }) {
			o.failAt("headers", "value of %q contains a line break", k)
		}
	}
	o.status("expect_status", sm.ExpectStatus)
	o.optionalPositive("max_latency", sm.MaxLatency)
}

// Shared checks.

func (o owner) port(key string, p int) {
	if p < 1 || p > 65535 {
		o.failAt(key, "must be a port between 1 and 65535, got %d", p)
	}
}

func (o owner) status(key string, code int) {
	if code < 100 || code > 599 {
		o.failAt(key, "must be an HTTP status between 100 and 599, got %d", code)
	}
}

func (o owner) positive(key string, d time.Duration) {
	if d <= 0 {
		o.failAt(key, "must be a positive duration, got %s", d)
	}
}

// optionalPositive checks a duration where 0 means "not set": it may be 0
// unless set in the file, never negative.
func (o owner) optionalPositive(key string, d time.Duration) {
	if d < 0 || (d == 0 && o.pos.has(key)) {
		o.failAt(key, "must be a positive duration, got %s", d)
	}
}

func (o owner) absPath(key, p string, required bool) {
	switch {
	case p == "" && required:
		o.failAt(key, "is required")
	case p != "" && !filepath.IsAbs(p):
		o.failAt(key, "%q must be an absolute path", p)
	}
}

// command checks an argv. A relative program (inRelease) is resolved in the
// release dir and must stay in it.
func (o owner) command(key string, argv []string, inRelease bool) {
	if len(argv) == 0 {
		if o.pos.has(key) {
			o.failAt(key, "must not be empty")
		}
		return
	}
	if strings.TrimSpace(argv[0]) == "" {
		o.failAt(key, "program (first element) must not be empty")
		return
	}
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			o.failAt(key, "arguments must not contain NUL bytes")
			return
		}
	}
	if inRelease && !filepath.IsAbs(argv[0]) {
		if c := filepath.Clean(argv[0]); c == ".." || strings.HasPrefix(c, "../") {
			o.failAt(key, "program %q leaves the release dir", argv[0])
		}
	}
}

// placeholders refuses "{...}" other than "{port}"; it reports whether s
// passed.
func (o owner) placeholders(key, s string) bool {
	rest := strings.ReplaceAll(s, PortPlaceholder, "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		if j := strings.IndexByte(rest[i:], '}'); j > 0 {
			o.failAt(key, "unknown placeholder %q (only %s is expanded)", rest[i:i+j+1], PortPlaceholder)
			return false
		}
	}
	return true
}

// httpURL checks an http(s) URL with a host; "{port}" stands for a port.
func (o owner) httpURL(key, raw string) {
	u, err := url.Parse(ExpandPort(raw, 1))
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https"):
		o.failAt(key, "%q must be an http:// or https:// URL", raw)
	case u.Host == "" || u.Hostname() == "":
		o.failAt(key, "%q has no host", raw)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
