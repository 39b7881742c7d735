package controllercli

// `serve --config FILE`: the controller daemon's settings in an HCL file
// (the packages install /etc/golive/controller.hcl), for what are flags of
// `serve`.
//
// The file's keys are the flags' names with "_" for "-" (listen,
// metrics_addr, max_approval_ttl, tls_ca, webhook, log_level, ...); values
// are strings, numbers, bools, or lists of strings for the repeatable flags
// (webhook) and etcd_endpoints. Each value is set through the flag itself,
// so a file value is parsed and checked exactly like the same flag on the
// command line. Precedence: defaults < file < flags: a flag given on the
// command line is not overwritten by the file. An unknown key, a block, or a
// value of the wrong type is an error naming the key and its file:line.
//
// There is no implicit default file: `serve` without --config reads none.
// The unit passes --config explicitly; a developer running `serve` on a
// host that has the package installed must not silently pick up the
// production settings (external etcd endpoints, TLS) from /etc.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/zclconf/go-cty/cty"
)

// maxServeConfigSize bounds the file applyServeConfig reads.
const maxServeConfigSize = 1 << 20

// configFlag is the name of the flag naming the file; not settable in it.
const configFlag = "config"

// applyServeConfig reads the HCL file at path and sets, for each key, the
// serve flag of that name, unless that flag was given on the command line.
func applyServeConfig(cmd *cobra.Command, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxServeConfigSize+1))
	if err != nil {
		return fmt.Errorf("--config: read %s: %w", path, err)
	}
	if len(src) > maxServeConfigSize {
		return fmt.Errorf("--config %s: larger than %d bytes", path, maxServeConfigSize)
	}
	return applyServeConfigSource(cmd.LocalFlags(), src, path)
}

// applyServeConfigSource applies HCL src (named filename in errors) to
// flags. Every problem in the file is reported, not only the first.
func applyServeConfigSource(flags *pflag.FlagSet, src []byte, filename string) error {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return fmt.Errorf("controller config: %w", diags)
	}
	body := file.Body.(*hclsyntax.Body)
	var errs []error
	for _, b := range body.Blocks {
		errs = append(errs, fmt.Errorf("%s: unexpected block %q: the controller config has only key = value settings (%s)",
			b.TypeRange, b.Type, strings.Join(serveConfigKeys(flags), ", ")))
	}
	// In file order, so errors come out in line order.
	attrs := make([]*hclsyntax.Attribute, 0, len(body.Attributes))
	for _, a := range body.Attributes {
		attrs = append(attrs, a)
	}
	slices.SortFunc(attrs, func(a, b *hclsyntax.Attribute) int { return a.SrcRange.Start.Byte - b.SrcRange.Start.Byte })
	for _, a := range attrs {
		if err := applyServeConfigAttr(flags, a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.NameRange, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("controller config %s: %w", filename, errors.Join(errs...))
	}
	return nil
}

func applyServeConfigAttr(flags *pflag.FlagSet, a *hclsyntax.Attribute) error {
	name := strings.ReplaceAll(a.Name, "_", "-")
	fl := flags.Lookup(name)
	if fl == nil || name == configFlag || name == "help" || strings.Contains(a.Name, "-") {
		return fmt.Errorf("unknown setting %q; known: %s", a.Name, strings.Join(serveConfigKeys(flags), ", "))
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return fmt.Errorf("%s: %w", a.Name, diags)
	}
	values, err := flagValues(fl, v)
	if err != nil {
		return fmt.Errorf("%s: %w", a.Name, err)
	}
	if fl.Changed {
		return nil // the command line wins
	}
	for _, s := range values {
		if err := fl.Value.Set(s); err != nil {
			return fmt.Errorf("%s = %q: %w", a.Name, s, err)
		}
	}
	// Not marked Changed: a second file (or a test) may still apply, and
	// Changed keeps meaning "given on the command line".
	return nil
}

// flagValues turns an HCL value into the strings to Set on fl: one for a
// scalar, one per element for a repeatable flag, the elements joined by
// commas for a comma-separated flag (etcd-endpoints).
func flagValues(fl *pflag.Flag, v cty.Value) ([]string, error) {
	if v.IsNull() || !v.IsKnown() {
		return nil, errors.New("no value")
	}
	repeatable := strings.HasSuffix(fl.Value.Type(), "Array") || strings.HasSuffix(fl.Value.Type(), "Slice")
	t := v.Type()
	if t.IsListType() || t.IsTupleType() || t.IsSetType() {
		var out []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			s, err := scalarString(e)
			if err != nil {
				return nil, fmt.Errorf("list element: %w", err)
			}
			out = append(out, s)
		}
		switch {
		case repeatable:
			return out, nil
		case fl.Name == "etcd-endpoints":
			return []string{strings.Join(out, ",")}, nil
		default:
			return nil, fmt.Errorf("want a single %s, not a list", fl.Value.Type())
		}
	}
	s, err := scalarString(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalarString(v cty.Value) (string, error) {
	if v.IsNull() || !v.IsKnown() {
		return "", errors.New("no value")
	}
	switch v.Type() {
	case cty.String:
		return v.AsString(), nil
	case cty.Bool:
		if v.True() {
			return "true", nil
		}
		return "false", nil
	case cty.Number:
		return v.AsBigFloat().Text('f', -1), nil
	default:
		return "", fmt.Errorf("want a string, number or bool, got %s", v.Type().FriendlyName())
	}
}

// serveConfigKeys lists the keys the file accepts.
func serveConfigKeys(flags *pflag.FlagSet) []string {
	var keys []string
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Name != configFlag && f.Name != "help" {
			keys = append(keys, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
	slices.Sort(keys)
	return keys
}
