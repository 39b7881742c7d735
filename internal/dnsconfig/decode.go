package dnsconfig

import (
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// maxFileSize bounds the config file Load reads.
const maxFileSize = 4 << 20

// Load reads, validates and loads the secrets of the config file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("dns config: read %s: %w", path, err)
	}
	if len(src) > maxFileSize {
		return nil, fmt.Errorf("dns config %s: larger than %d bytes", path, maxFileSize)
	}
	c, err := Parse(src, path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := c.LoadSecrets(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes HCL src; filename names the file in errors and anchors
// relative key_file paths (its directory). It does not validate and reads
// no key file. The error, if any, is Errors.
func Parse(src []byte, filename string) (*Config, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fromDiags("", diags).Err()
	}
	var raw fileHCL
	d := &decoder{errs: fromDiags("", gohcl.DecodeBody(file.Body, nil, &raw)), dir: filepath.Dir(filename)}
	c := &Config{}
	for _, z := range raw.Zones {
		c.Zones = append(c.Zones, d.zone(z))
	}
	for _, p := range raw.Pools {
		c.Pools = append(c.Pools, d.pool(p))
	}
	for _, f := range raw.Failovers {
		c.Failovers = append(c.Failovers, d.failover(f))
	}
	if err := d.errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadSecrets reads every zone's key file. Errors name the zone and the
// file, never the file's content.
func (c *Config) LoadSecrets() error {
	var es Errors
	for _, z := range c.Zones {
		s, err := readKeyFile(z.Key.File, z.Key.Name, string(z.Key.Algorithm))
		if err != nil {
			es = append(es, &FieldError{Range: z.pos.of("key_file"), Field: zoneField(z.Name, "key_file"), Msg: err.Error()})
			continue
		}
		z.Key.Secret = s
	}
	return es.Err()
}

// The *HCL types are the file's schema for gohcl. Attributes are kept as
// expressions so that every error names its field and line.

type fileHCL struct {
	Zones     []*zoneHCL     `hcl:"zone,block"`
	Pools     []*poolHCL     `hcl:"pool,block"`
	Failovers []*failoverHCL `hcl:"failover,block"`
}

type zoneHCL struct {
	Name         string         `hcl:"name,label"`
	DefRange     hcl.Range      `hcl:",def_range"`
	Server       hcl.Expression `hcl:"server,optional"`
	KeyName      hcl.Expression `hcl:"key_name,optional"`
	KeyAlgorithm hcl.Expression `hcl:"key_algorithm,optional"`
	KeyFile      hcl.Expression `hcl:"key_file,optional"`
	Timeout      hcl.Expression `hcl:"timeout,optional"`
}

type poolHCL struct {
	Name      string         `hcl:"name,label"`
	DefRange  hcl.Range      `hcl:",def_range"`
	Hosts     hcl.Expression `hcl:"hosts,optional"`
	Selector  hcl.Expression `hcl:"selector,optional"`
	Addresses hcl.Expression `hcl:"addresses,optional"`
}

type failoverHCL struct {
	Name      string         `hcl:"name,label"`
	DefRange  hcl.Range      `hcl:",def_range"`
	Zone      hcl.Expression `hcl:"zone,optional"`
	Type      hcl.Expression `hcl:"type,optional"`
	TTL       hcl.Expression `hcl:"ttl,optional"`
	Primary   hcl.Expression `hcl:"primary,optional"`
	Secondary hcl.Expression `hcl:"secondary,optional"`
	Check     *checkHCL      `hcl:"check,block"`
	Failback  hcl.Expression `hcl:"failback,optional"`
	HoldDown  hcl.Expression `hcl:"hold_down,optional"`
	MaxTTL    hcl.Expression `hcl:"max_ttl,optional"`
}

type checkHCL struct {
	DefRange  hcl.Range      `hcl:",def_range"`
	Interval  hcl.Expression `hcl:"interval,optional"`
	Threshold hcl.Expression `hcl:"threshold,optional"`
}

type decoder struct {
	errs Errors
	dir  string
}

func zoneField(name, f string) string     { return fmt.Sprintf("zone %q: %s", name, f) }
func poolField(name, f string) string     { return fmt.Sprintf("pool %q: %s", name, f) }
func failoverField(name, f string) string { return fmt.Sprintf("failover %q: %s", name, f) }

func (d *decoder) zone(raw *zoneHCL) *Zone {
	z := &Zone{Name: CanonicalName(raw.Name), Timeout: DefaultTimeout, pos: positions{"": raw.DefRange}}
	z.Key.Algorithm = DefaultAlgorithm
	f := fields{d: d, prefix: zoneField(z.Name, ""), pos: z.pos}
	f.str(raw.Server, "server", &z.Server)
	if z.Server != "" {
		if _, _, err := net.SplitHostPort(z.Server); err != nil {
			z.Server = net.JoinHostPort(z.Server, DefaultPort)
		}
	}
	f.str(raw.KeyName, "key_name", &z.Key.Name)
	if z.Key.Name != "" {
		z.Key.Name = CanonicalName(z.Key.Name)
	}
	var alg string
	f.str(raw.KeyAlgorithm, "key_algorithm", &alg)
	if alg != "" {
		z.Key.Algorithm = Algorithm(strings.ToLower(strings.TrimSuffix(alg, ".")))
	}
	f.str(raw.KeyFile, "key_file", &z.Key.File)
	if z.Key.File != "" && !filepath.IsAbs(z.Key.File) {
		z.Key.File = filepath.Join(d.dir, z.Key.File)
	}
	f.duration(raw.Timeout, "timeout", &z.Timeout)
	return z
}

func (d *decoder) pool(raw *poolHCL) *Pool {
	p := &Pool{Name: raw.Name, pos: positions{"": raw.DefRange}}
	f := fields{d: d, prefix: poolField(p.Name, ""), pos: p.pos}
	f.strList(raw.Hosts, "hosts", &p.Hosts)
	f.strMap(raw.Selector, "selector", &p.Selector)
	var addrs []string
	f.strList(raw.Addresses, "addresses", &addrs)
	for _, s := range addrs {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			f.fail(raw.Addresses.Range(), "addresses", "%q is not an IPv4 or IPv6 address", s)
			continue
		}
		p.Addresses = append(p.Addresses, a.Unmap())
	}
	return p
}

func (d *decoder) failover(raw *failoverHCL) *Failover {
	fo := &Failover{
		Name:     CanonicalName(raw.Name),
		Type:     TypeA,
		TTL:      DefaultTTL,
		Check:    Check{Interval: DefaultInterval, Threshold: DefaultThreshold},
		Failback: FailbackManual,
		HoldDown: DefaultHoldDown,
		MaxTTL:   DefaultMaxTTL,
		pos:      positions{"": raw.DefRange},
	}
	f := fields{d: d, prefix: failoverField(fo.Name, ""), pos: fo.pos}
	f.str(raw.Zone, "zone", &fo.Zone)
	if fo.Zone != "" {
		fo.Zone = CanonicalName(fo.Zone)
	}
	var typ, fb string
	f.str(raw.Type, "type", &typ)
	if typ != "" {
		fo.Type = RRType(strings.ToUpper(typ))
	}
	f.ttl(raw.TTL, "ttl", &fo.TTL)
	f.ref(raw.Primary, "primary", &fo.Primary)
	f.ref(raw.Secondary, "secondary", &fo.Secondary)
	if c := raw.Check; c != nil {
		fo.pos["check"] = c.DefRange
		f.duration(c.Interval, "check.interval", &fo.Check.Interval)
		f.int(c.Threshold, "check.threshold", &fo.Check.Threshold)
	}
	f.str(raw.Failback, "failback", &fb)
	if fb != "" {
		fo.Failback = Failback(strings.ToLower(fb))
	}
	f.duration(raw.HoldDown, "hold_down", &fo.HoldDown)
	f.ttl(raw.MaxTTL, "max_ttl", &fo.MaxTTL)
	return fo
}

// fields decodes the attributes of one block, recording each present
// value's range in pos and naming errors prefix + key.
type fields struct {
	d      *decoder
	prefix string
	pos    positions
}

func (f fields) fail(rng hcl.Range, key, format string, args ...any) {
	f.d.errs = append(f.d.errs, &FieldError{Range: rng, Field: f.prefix + key, Msg: fmt.Sprintf(format, args...)})
}

// maxNumber bounds numbers in the file: no field needs more, and formatting
// 1e9999999 takes seconds.
var maxNumber = big.NewFloat(1e15)

func hugeNumber(v cty.Value) bool {
	huge := false
	_ = cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if v.Type() == cty.Number && v.IsKnown() && !v.IsNull() {
			if new(big.Float).Abs(v.AsBigFloat()).Cmp(maxNumber) > 0 {
				huge = true
			}
		}
		return !huge, nil
	})
	return huge
}

// value evaluates e (no variables, no functions) as ty; ok=false when the
// attribute is absent or null, or on error (recorded).
func (f fields) value(e hcl.Expression, key string, ty cty.Type, want string) (cty.Value, bool) {
	if e == nil {
		return cty.NilVal, false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		f.d.errs = append(f.d.errs, fromDiags(f.prefix+key, diags)...)
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
	if hugeNumber(v) {
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

// ref reads a reference to a pool: a bare name (primary = blue) or a string.
func (f fields) ref(e hcl.Expression, key string, dst *string) {
	if e == nil {
		return
	}
	if tr, diags := hcl.AbsTraversalForExpr(e); !diags.HasErrors() {
		if len(tr) != 1 {
			f.fail(e.Range(), key, "want a pool's name")
			return
		}
		f.pos[key] = e.Range()
		*dst = tr.RootName()
		return
	}
	f.str(e, key, dst)
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
			f.fail(e.Range(), key, "map values must not be null")
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
	if acc != big.Exact {
		f.fail(e.Range(), key, "want a whole number")
		delete(f.pos, key)
		return
	}
	*dst = int(n)
}

func (f fields) duration(e hcl.Expression, key string, dst *time.Duration) {
	var s string
	f.str(e, key, &s)
	if _, ok := f.pos[key]; !ok {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f.fail(e.Range(), key, "invalid duration %q (want e.g. \"30s\", \"5m\")", s)
		delete(f.pos, key)
		return
	}
	*dst = d
}

// ttl reads a TTL: a number of seconds (30) or a duration ("30s").
func (f fields) ttl(e hcl.Expression, key string, dst *time.Duration) {
	if e == nil {
		return
	}
	if v, diags := e.Value(nil); !diags.HasErrors() && !v.IsNull() && v.IsKnown() && v.Type() == cty.Number {
		var n int
		f.int(e, key, &n)
		if _, ok := f.pos[key]; ok {
			if n < 0 || n > maxTTLSeconds {
				f.fail(e.Range(), key, "%d seconds is out of range (0 to %d)", n, maxTTLSeconds)
				return
			}
			*dst = time.Duration(n) * time.Second
		}
		return
	}
	f.duration(e, key, dst)
}
