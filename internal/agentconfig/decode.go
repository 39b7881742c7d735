package agentconfig

import (
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// maxFileSize bounds the config file Load reads.
const maxFileSize = 4 << 20

// Load reads the config file at path over the defaults. It does not
// validate: apply flags, then call Validate.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("agent config: read %s: %w", path, err)
	}
	if len(src) > maxFileSize {
		return nil, fmt.Errorf("agent config %s: larger than %d bytes", path, maxFileSize)
	}
	return Parse(src, path)
}

// Parse decodes HCL src over the defaults; filename is used in error
// positions. The error, if any, is Errors. It does not validate.
func Parse(src []byte, filename string) (*Config, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fromDiags("", diags).Err()
	}
	if body, ok := file.Body.(*hclsyntax.Body); ok {
		if diags := hugeLiterals(body); diags.HasErrors() {
			return nil, fromDiags("", diags).Err()
		}
	}
	// Decode what the schema accepts even when some of it is wrong, so that
	// one run reports every problem.
	var raw fileHCL
	d := &decoder{errs: fromDiags("", gohcl.DecodeBody(file.Body, nil, &raw))}
	cfg := d.config(&raw)
	if err := d.errs.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// The *HCL types are the file's schema for gohcl. Attributes are kept as
// expressions so that decoding can name the field in every error, tell
// "absent" from "zero", and record each value's position for Validate.

type fileHCL struct {
	HostID      hcl.Expression `hcl:"host_id,optional"`
	Labels      hcl.Expression `hcl:"labels,optional"`
	StateDir    hcl.Expression `hcl:"state_dir,optional"`
	TrustedKeys hcl.Expression `hcl:"trusted_keys,optional"`
	Controller  *controllerHCL `hcl:"controller,block"`
	Artifacts   *artifactsHCL  `hcl:"artifacts,block"`
	Services    []*serviceHCL  `hcl:"service,block"`
}

type controllerHCL struct {
	DefRange hcl.Range      `hcl:",def_range"`
	Address  hcl.Expression `hcl:"address,optional"`
	CAFile   hcl.Expression `hcl:"ca_file,optional"`
	CertFile hcl.Expression `hcl:"cert_file,optional"`
	KeyFile  hcl.Expression `hcl:"key_file,optional"`
}

type artifactsHCL struct {
	DefRange         hcl.Range      `hcl:",def_range"`
	MaxBytes         hcl.Expression `hcl:"max_bytes,optional"`
	MaxUnpackedBytes hcl.Expression `hcl:"max_unpacked_bytes,optional"`
	MaxFiles         hcl.Expression `hcl:"max_files,optional"`
	Retries          hcl.Expression `hcl:"retries,optional"`
}

type serviceHCL struct {
	Name         string         `hcl:"name,label"`
	DefRange     hcl.Range      `hcl:",def_range"`
	SwapMode     hcl.Expression `hcl:"swap_mode,optional"`
	KeepReleases hcl.Expression `hcl:"keep_releases,optional"`
	Manager      hcl.Expression `hcl:"manager,optional"`
	Unit         hcl.Expression `hcl:"unit,optional"`
	Port         hcl.Expression `hcl:"port,optional"`
	Exec         *execHCL       `hcl:"exec,block"`
	Health       *healthHCL     `hcl:"health,block"`
	Hooks        *hooksHCL      `hcl:"hooks,block"`
	Database     *databaseHCL   `hcl:"database,block"`
	Migrate      *migrateHCL    `hcl:"migrate,block"`
	MetricsPath  hcl.Expression `hcl:"metrics_path,optional"`
	BlueGreen    *blueGreenHCL  `hcl:"blue_green,block"`
	Traffic      *trafficHCL    `hcl:"traffic,block"`
	Preflight    *preflightHCL  `hcl:"preflight,block"`
	Smoke        []*smokeHCL    `hcl:"smoke,block"`
	Scale        *scaleHCL      `hcl:"scale,block"`
}

type trafficHCL struct {
	DefRange    hcl.Range      `hcl:",def_range"`
	Source      hcl.Expression `hcl:"source,optional"`
	AccessLog   hcl.Expression `hcl:"access_log,optional"`
	AdminSocket hcl.Expression `hcl:"admin_socket,optional"`
	Backend     hcl.Expression `hcl:"backend,optional"`
	Server      hcl.Expression `hcl:"server,optional"`
}

type execHCL struct {
	DefRange    hcl.Range      `hcl:",def_range"`
	Command     hcl.Expression `hcl:"command,optional"`
	EnvFile     hcl.Expression `hcl:"env_file,optional"`
	Env         hcl.Expression `hcl:"env,optional"`
	StopTimeout hcl.Expression `hcl:"stop_timeout,optional"`
	LogFile     hcl.Expression `hcl:"log_file,optional"`
}

type healthHCL struct {
	DefRange     hcl.Range      `hcl:",def_range"`
	URL          hcl.Expression `hcl:"url,optional"`
	ExpectStatus hcl.Expression `hcl:"expect_status,optional"`
	Timeout      hcl.Expression `hcl:"timeout,optional"`
	Interval     hcl.Expression `hcl:"interval,optional"`
	Successes    hcl.Expression `hcl:"successes,optional"`
	Deadline     hcl.Expression `hcl:"deadline,optional"`
	Window       hcl.Expression `hcl:"window,optional"`
}

type hooksHCL struct {
	DefRange   hcl.Range      `hcl:",def_range"`
	PreSwap    hcl.Expression `hcl:"pre_swap,optional"`
	PostSwap   hcl.Expression `hcl:"post_swap,optional"`
	OnRollback hcl.Expression `hcl:"on_rollback,optional"`
	Timeout    hcl.Expression `hcl:"timeout,optional"`
}

type databaseHCL struct {
	DefRange     hcl.Range      `hcl:",def_range"`
	Kind         hcl.Expression `hcl:"kind,optional"`
	DSNEnvKey    hcl.Expression `hcl:"dsn_env_key,optional"`
	EnvFile      hcl.Expression `hcl:"env_file,optional"`
	BackupDir    hcl.Expression `hcl:"backup_dir,optional"`
	KeepBackups  hcl.Expression `hcl:"keep_backups,optional"`
	MaxBackupAge hcl.Expression `hcl:"max_backup_age,optional"`
}

type migrateHCL struct {
	DefRange hcl.Range      `hcl:",def_range"`
	Command  hcl.Expression `hcl:"command,optional"`
	Timeout  hcl.Expression `hcl:"timeout,optional"`
}

type blueGreenHCL struct {
	DefRange     hcl.Range      `hcl:",def_range"`
	BluePort     hcl.Expression `hcl:"blue_port,optional"`
	GreenPort    hcl.Expression `hcl:"green_port,optional"`
	KeepWarm     hcl.Expression `hcl:"keep_warm,optional"`
	DrainTimeout hcl.Expression `hcl:"drain_timeout,optional"`
	Router       *routerHCL     `hcl:"router,block"`
}

type routerHCL struct {
	DefRange     hcl.Range      `hcl:",def_range"`
	Kind         hcl.Expression `hcl:"kind,optional"`
	UpstreamFile hcl.Expression `hcl:"upstream_file,optional"`
	Reload       hcl.Expression `hcl:"reload,optional"`
	ProbeURL     hcl.Expression `hcl:"probe_url,optional"`
	AdminSocket  hcl.Expression `hcl:"admin_socket,optional"`
	Backend      hcl.Expression `hcl:"backend,optional"`
	AccessLog    hcl.Expression `hcl:"access_log,optional"`
}

type preflightHCL struct {
	DefRange          hcl.Range      `hcl:",def_range"`
	Domain            hcl.Expression `hcl:"domain,optional"`
	TLSPort           hcl.Expression `hcl:"tls_port,optional"`
	CertExpiryDays    hcl.Expression `hcl:"cert_expiry_days,optional"`
	EnvFile           hcl.Expression `hcl:"env_file,optional"`
	RequiredSecrets   hcl.Expression `hcl:"required_secrets,optional"`
	MinFreeDiskFactor hcl.Expression `hcl:"min_free_disk_factor,optional"`
	MaxBackupAge      hcl.Expression `hcl:"max_backup_age,optional"`
}

type smokeHCL struct {
	Name         string         `hcl:"name,label"`
	DefRange     hcl.Range      `hcl:",def_range"`
	Method       hcl.Expression `hcl:"method,optional"`
	Path         hcl.Expression `hcl:"path,optional"`
	Headers      hcl.Expression `hcl:"headers,optional"`
	ExpectStatus hcl.Expression `hcl:"expect_status,optional"`
	BodyContains hcl.Expression `hcl:"body_contains,optional"`
	MaxLatency   hcl.Expression `hcl:"max_latency,optional"`
}

// decoder turns the raw schema into a Config, collecting every error.
type decoder struct {
	errs Errors
}

func (d *decoder) config(raw *fileHCL) *Config {
	c := Default()
	c.pos = positions{}
	f := d.fields("", c.pos)
	f.str(raw.HostID, "host_id", &c.HostID)
	f.strMap(raw.Labels, "labels", &c.Labels)
	f.str(raw.StateDir, "state_dir", &c.StateDir)
	f.strList(raw.TrustedKeys, "trusted_keys", &c.TrustedKeys)
	if b := raw.Controller; b != nil {
		c.pos["controller"] = b.DefRange
		f.str(b.Address, "controller.address", &c.Controller.Address)
		f.str(b.CAFile, "controller.ca_file", &c.Controller.CAFile)
		f.str(b.CertFile, "controller.cert_file", &c.Controller.CertFile)
		f.str(b.KeyFile, "controller.key_file", &c.Controller.KeyFile)
	}
	if b := raw.Artifacts; b != nil {
		c.pos["artifacts"] = b.DefRange
		f.size(b.MaxBytes, "artifacts.max_bytes", &c.Artifacts.MaxBytes)
		f.size(b.MaxUnpackedBytes, "artifacts.max_unpacked_bytes", &c.Artifacts.MaxUnpackedBytes)
		f.int(b.MaxFiles, "artifacts.max_files", &c.Artifacts.MaxFiles)
		f.int(b.Retries, "artifacts.retries", &c.Artifacts.Retries)
	}
	for _, rs := range raw.Services {
		c.Services = append(c.Services, d.service(rs))
	}
	return c
}

func (d *decoder) service(raw *serviceHCL) *Service {
	s := DefaultService(raw.Name)
	s.pos = positions{"": raw.DefRange}
	f := d.fields(serviceField(raw.Name, ""), s.pos)

	var swap, manager string
	f.str(raw.SwapMode, "swap_mode", &swap)
	f.str(raw.Manager, "manager", &manager)
	if swap != "" {
		s.SwapMode = SwapMode(swap)
	}
	if manager != "" {
		s.Manager = ManagerKind(manager)
	}
	f.int(raw.KeepReleases, "keep_releases", &s.KeepReleases)
	f.str(raw.Unit, "unit", &s.Unit)
	f.int(raw.Port, "port", &s.Port)
	f.str(raw.MetricsPath, "metrics_path", &s.MetricsPath)

	if b := raw.Exec; b != nil {
		s.pos["exec"] = b.DefRange
		s.Exec = defaultExec()
		f.strList(b.Command, "exec.command", &s.Exec.Command)
		f.str(b.EnvFile, "exec.env_file", &s.Exec.EnvFile)
		f.strMap(b.Env, "exec.env", &s.Exec.Env)
		f.duration(b.StopTimeout, "exec.stop_timeout", &s.Exec.StopTimeout)
		f.str(b.LogFile, "exec.log_file", &s.Exec.LogFile)
	}
	if b := raw.Health; b != nil {
		s.pos["health"] = b.DefRange
		h := &s.Health
		f.str(b.URL, "health.url", &h.URL)
		f.int(b.ExpectStatus, "health.expect_status", &h.ExpectStatus)
		f.duration(b.Timeout, "health.timeout", &h.Timeout)
		f.duration(b.Interval, "health.interval", &h.Interval)
		f.int(b.Successes, "health.successes", &h.Successes)
		f.duration(b.Deadline, "health.deadline", &h.Deadline)
		f.duration(b.Window, "health.window", &h.Window)
	}
	if b := raw.Hooks; b != nil {
		s.pos["hooks"] = b.DefRange
		f.strList(b.PreSwap, "hooks.pre_swap", &s.Hooks.PreSwap)
		f.strList(b.PostSwap, "hooks.post_swap", &s.Hooks.PostSwap)
		f.strList(b.OnRollback, "hooks.on_rollback", &s.Hooks.OnRollback)
		f.duration(b.Timeout, "hooks.timeout", &s.Hooks.Timeout)
	}
	if b := raw.Database; b != nil {
		s.pos["database"] = b.DefRange
		s.Database = defaultDatabase()
		db := s.Database
		f.str(b.Kind, "database.kind", &db.Kind)
		f.str(b.DSNEnvKey, "database.dsn_env_key", &db.DSNEnvKey)
		f.str(b.EnvFile, "database.env_file", &db.EnvFile)
		f.str(b.BackupDir, "database.backup_dir", &db.BackupDir)
		f.int(b.KeepBackups, "database.keep_backups", &db.KeepBackups)
		f.duration(b.MaxBackupAge, "database.max_backup_age", &db.MaxBackupAge)
	}
	if b := raw.Migrate; b != nil {
		s.pos["migrate"] = b.DefRange
		s.Migrate = defaultMigrate()
		f.strList(b.Command, "migrate.command", &s.Migrate.Command)
		f.duration(b.Timeout, "migrate.timeout", &s.Migrate.Timeout)
	}
	if b := raw.BlueGreen; b != nil {
		s.pos["blue_green"] = b.DefRange
		s.BlueGreen = defaultBlueGreen()
		bg := s.BlueGreen
		f.int(b.BluePort, "blue_green.blue_port", &bg.BluePort)
		f.int(b.GreenPort, "blue_green.green_port", &bg.GreenPort)
		f.duration(b.KeepWarm, "blue_green.keep_warm", &bg.KeepWarm)
		f.duration(b.DrainTimeout, "blue_green.drain_timeout", &bg.DrainTimeout)
		if r := b.Router; r != nil {
			f.router(r, "blue_green.router", &bg.Router)
		}
	}
	if b := raw.Scale; b != nil {
		f.scale(b, s)
	}
	if b := raw.Traffic; b != nil {
		s.pos["traffic"] = b.DefRange
		s.Traffic = &Traffic{}
		var src string
		f.str(b.Source, "traffic.source", &src)
		s.Traffic.Source = TrafficSource(src)
		f.str(b.AccessLog, "traffic.access_log", &s.Traffic.AccessLog)
		f.str(b.AdminSocket, "traffic.admin_socket", &s.Traffic.AdminSocket)
		f.str(b.Backend, "traffic.backend", &s.Traffic.Backend)
		f.str(b.Server, "traffic.server", &s.Traffic.Server)
	}
	if b := raw.Preflight; b != nil {
		s.pos["preflight"] = b.DefRange
		p := &s.Preflight
		f.str(b.Domain, "preflight.domain", &p.Domain)
		f.int(b.TLSPort, "preflight.tls_port", &p.TLSPort)
		f.int(b.CertExpiryDays, "preflight.cert_expiry_days", &p.CertExpiryDays)
		f.str(b.EnvFile, "preflight.env_file", &p.EnvFile)
		f.strList(b.RequiredSecrets, "preflight.required_secrets", &p.RequiredSecrets)
		f.float(b.MinFreeDiskFactor, "preflight.min_free_disk_factor", &p.MinFreeDiskFactor)
		f.duration(b.MaxBackupAge, "preflight.max_backup_age", &p.MaxBackupAge)
	}
	for _, rs := range raw.Smoke {
		sm := defaultSmoke(rs.Name)
		sm.pos = positions{"": rs.DefRange}
		g := d.fields(serviceField(raw.Name, smokeField(rs.Name, "")), sm.pos)
		g.str(rs.Method, "method", &sm.Method)
		g.str(rs.Path, "path", &sm.Path)
		g.strMap(rs.Headers, "headers", &sm.Headers)
		g.int(rs.ExpectStatus, "expect_status", &sm.ExpectStatus)
		g.str(rs.BodyContains, "body_contains", &sm.BodyContains)
		g.duration(rs.MaxLatency, "max_latency", &sm.MaxLatency)
		s.Smoke = append(s.Smoke, sm)
	}
	return s
}

// serviceField names a field of service svc: `service "app": health.url`;
// with field "", the prefix of its fields (`service "app": `).
func serviceField(svc, field string) string {
	return fmt.Sprintf("service %q: %s", svc, field)
}

// smokeField names a field of a smoke check (`smoke "home".path`); with
// field "", the prefix of its fields.
func smokeField(name, field string) string {
	return fmt.Sprintf("smoke %q.%s", name, field)
}

// fields decodes the attributes of one owner (the file, a service, a smoke
// check): it records each present value's range under its key in pos, and
// names errors prefix + key.
type fields struct {
	d      *decoder
	prefix string
	pos    positions
}

func (d *decoder) fields(prefix string, pos positions) fields {
	return fields{d: d, prefix: prefix, pos: pos}
}

func (f fields) name(key string) string { return f.prefix + key }

func (f fields) fail(rng hcl.Range, key, format string, args ...any) {
	f.d.errs = append(f.d.errs, &FieldError{Range: rng, Field: f.name(key), Msg: fmt.Sprintf(format, args...)})
}

// value evaluates e (no variables, no functions) and converts it to ty. It
// returns ok=false when the attribute is absent or null, or on error.
func (f fields) value(e hcl.Expression, key string, ty cty.Type, want string) (cty.Value, bool) {
	if e == nil {
		return cty.NilVal, false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		f.d.errs = append(f.d.errs, fromDiags(f.name(key), diags)...)
		return cty.NilVal, false
	}
	if v.IsNull() {
		return cty.NilVal, false
	}
	rng := e.Range()
	if !v.IsWhollyKnown() {
		f.fail(rng, key, "value must be known when the file is read")
		return cty.NilVal, false
	}
	if hasHugeNumber(v) {
		// Formatting 1e9999999 as a string takes seconds; no field needs it.
		f.fail(rng, key, "number out of range")
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil || cv.IsNull() || !cv.IsWhollyKnown() {
		f.fail(rng, key, "want %s, got %s", want, v.Type().FriendlyName())
		return cty.NilVal, false
	}
	f.pos[key] = rng
	return cv, true
}

func (f fields) str(e hcl.Expression, key string, dst *string) {
	if v, ok := f.value(e, key, cty.String, "a string"); ok {
		*dst = v.AsString()
	}
}

func (f fields) strList(e hcl.Expression, key string, dst *[]string) {
	v, ok := f.value(e, key, cty.List(cty.String), "a list of strings")
	if !ok {
		return
	}
	out := make([]string, 0, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		_, ev := it.Element()
		if ev.IsNull() {
			f.fail(e.Range(), key, "list elements must not be null")
			delete(f.pos, key)
			return
		}
		out = append(out, ev.AsString())
	}
	*dst = out
}

func (f fields) strMap(e hcl.Expression, key string, dst *map[string]string) {
	v, ok := f.value(e, key, cty.Map(cty.String), "a map of strings")
	if !ok {
		return
	}
	out := make(map[string]string, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		if ev.IsNull() {
			f.fail(e.Range(), key, "value of %q must not be null", k.AsString())
			delete(f.pos, key)
			return
		}
		out[k.AsString()] = ev.AsString()
	}
	*dst = out
}

func (f fields) int(e hcl.Expression, key string, dst *int) {
	v, ok := f.value(e, key, cty.Number, "a whole number")
	if !ok {
		return
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || n < math.MinInt32 || n > math.MaxInt32 {
		f.fail(e.Range(), key, "want a whole number, got %s", bf.Text('g', 10))
		delete(f.pos, key)
		return
	}
	*dst = int(n)
}

func (f fields) float(e hcl.Expression, key string, dst *float64) {
	v, ok := f.value(e, key, cty.Number, "a number")
	if !ok {
		return
	}
	x, _ := v.AsBigFloat().Float64()
	if math.IsInf(x, 0) || math.IsNaN(x) {
		f.fail(e.Range(), key, "number out of range")
		delete(f.pos, key)
		return
	}
	*dst = x
}

func (f fields) duration(e hcl.Expression, key string, dst *time.Duration) {
	v, ok := f.value(e, key, cty.String, `a duration such as "30s"`)
	if !ok {
		return
	}
	s := v.AsString()
	dur, err := time.ParseDuration(s)
	if err != nil {
		f.fail(e.Range(), key, "invalid duration %q (want e.g. \"500ms\", \"30s\", \"10m\", \"720h\")", s)
		delete(f.pos, key)
		return
	}
	*dst = dur
}

func (f fields) size(e hcl.Expression, key string, dst *int64) {
	v, ok := f.value(e, key, cty.String, `a size such as "2GiB"`)
	if !ok {
		return
	}
	s := v.AsString()
	n, err := ParseSize(s)
	if err != nil {
		f.fail(e.Range(), key, "%v", err)
		delete(f.pos, key)
		return
	}
	*dst = n
}

// hasHugeNumber reports whether v holds a number beyond float64's range
// (binary exponent above 1024 or below -1074), anywhere inside it.
func hasHugeNumber(v cty.Value) bool {
	huge := false
	_ = cty.Walk(v, func(_ cty.Path, ev cty.Value) (bool, error) {
		if !huge && ev.Type() == cty.Number && ev.IsKnown() && !ev.IsNull() {
			bf := ev.AsBigFloat()
			if exp := bf.MantExp(nil); bf.Sign() != 0 && (exp > 1024 || exp < -1074) {
				huge = true
			}
		}
		return !huge, nil
	})
	return huge
}

// hugeLiterals refuses number literals beyond float64's range before
// anything evaluates them: turning 1e9999999 into text (in a template, or
// a conversion) takes seconds, and no field needs such a number.
func hugeLiterals(body *hclsyntax.Body) hcl.Diagnostics {
	var diags hcl.Diagnostics
	hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		if lit, ok := n.(*hclsyntax.LiteralValueExpr); ok && hasHugeNumber(lit.Val) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Number out of range",
				Detail:   "Numbers must be within the range of a 64-bit float.",
				Subject:  lit.SrcRange.Ptr(),
			})
		}
		return nil
	})
	return diags
}
