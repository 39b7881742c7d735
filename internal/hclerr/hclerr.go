// Package hclerr is the error list of golive's HCL configuration files
// (the agent's, the controller's DNS config): every problem with its
// file:line and the field it is about, sorted by position.
package hclerr

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// FieldError is one problem with one field of the config.
type FieldError struct {
	// Range is where the value (or the block missing it) is in the file; the
	// zero Range when it did not come from a file (a default or a flag).
	Range hcl.Range
	// Field names the field: "host_id", `zone "example.test.": key_file`.
	// Empty for errors that are about the file's syntax.
	Field string
	Msg   string
}

// Error formats e as "file:line: field: msg", dropping what is unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Range.Filename != "" {
		fmt.Fprintf(&b, "%s:%d: ", e.Range.Filename, e.Range.Start.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a config, sorted by position.
type Errors []*FieldError

// Error lists the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Err returns es sorted by position, as an error, or nil when empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	slices.SortStableFunc(es, func(a, b *FieldError) int {
		return cmp.Or(
			cmp.Compare(a.Range.Filename, b.Range.Filename),
			cmp.Compare(a.Range.Start.Line, b.Range.Start.Line),
		)
	})
	return es
}

// FromDiags turns HCL diagnostics into field errors ("Unsupported
// argument: An argument named "x" is not expected here.").
func FromDiags(field string, diags hcl.Diagnostics) Errors {
	var es Errors
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		e := &FieldError{Field: field, Msg: d.Summary}
		if d.Detail != "" {
			e.Msg = d.Summary + ": " + d.Detail
		}
		if d.Subject != nil {
			e.Range = *d.Subject
		}
		es = append(es, e)
	}
	return es
}
