package analysis

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Defaults of the optional fields of a metric block.
const (
	DefaultConsecutiveErrorLimit = 4
	DefaultFailureLimit          = 0
)

// Bounds on a metric block, so that a run always ends in a known time.
const (
	MinInterval = time.Second
	MaxInterval = time.Hour
	MaxCount    = 10000
	// maxLimit bounds failure_limit and consecutive_error_limit.
	maxLimit = 10000
	// maxFileSize bounds the analysis file Load reads.
	maxFileSize = 1 << 20
	// maxQueryLen bounds a query's text.
	maxQueryLen = 64 << 10
)

// Op is a comparison of a condition.
type Op string

// The comparisons a condition may use.
const (
	OpGT Op = ">"
	OpLT Op = "<"
	OpGE Op = ">="
	OpLE Op = "<="
	OpEQ Op = "=="
	OpNE Op = "!="
)

// Condition is "<op> <number>", such as "> 0.001".
type Condition struct {
	Op        Op      `json:"op"`
	Threshold float64 `json:"threshold"`
}

// decimalRe is a decimal number, as thresholds are written.
var decimalRe = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// ParseCondition reads "<op> <number>": op one of > < >= <= == !=, the
// number finite.
func ParseCondition(s string) (Condition, error) {
	t := strings.TrimSpace(s)
	var op Op
	for _, o := range []Op{OpGE, OpLE, OpEQ, OpNE, OpGT, OpLT} { // two-character ones first
		if strings.HasPrefix(t, string(o)) {
			op = o
			break
		}
	}
	if op == "" {
		return Condition{}, fmt.Errorf("invalid condition %q: want an operator (> < >= <= == !=) then a number, such as \"> 0.01\"", s)
	}
	num := strings.TrimSpace(t[len(op):])
	x, err := strconv.ParseFloat(num, 64)
	if !decimalRe.MatchString(num) || err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return Condition{}, fmt.Errorf("invalid condition %q: %q is not a finite number", s, num)
	}
	return Condition{Op: op, Threshold: x}, nil
}

// String is the condition as written: "> 0.001".
func (c Condition) String() string {
	return string(c.Op) + " " + strconv.FormatFloat(c.Threshold, 'g', -1, 64)
}

// Holds reports whether v satisfies the condition. v must be finite: NaN
// and infinities are judged before a condition is (and never pass).
func (c Condition) Holds(v float64) bool {
	switch c.Op {
	case OpGT:
		return v > c.Threshold
	case OpLT:
		return v < c.Threshold
	case OpGE:
		return v >= c.Threshold
	case OpLE:
		return v <= c.Threshold
	case OpEQ:
		return v == c.Threshold
	case OpNE:
		return v != c.Threshold
	}
	return false
}

// Reduce says how a result with several series becomes one value.
type Reduce string

// The reductions. ReduceNone refuses a result of more than one series.
const (
	ReduceNone Reduce = ""
	ReduceMax  Reduce = "max"
	ReduceMin  Reduce = "min"
	ReduceSum  Reduce = "sum"
	ReduceAvg  Reduce = "avg"
)

// NoData says what an empty result means.
type NoData string

// The on_no_data values. NoDataFail is the default.
const (
	NoDataFail NoData = "fail"
	NoDataPass NoData = "pass"
)

// Metric is one metric block of an analysis file: a templated PromQL query
// taken Count times, Interval apart, each result judged by FailIf (a
// breach when it holds) or SuccessIf (a breach when it does not).
type Metric struct {
	Name  string `json:"name"`
	Query string `json:"query"`
	// Interval is the time between two measurements.
	Interval time.Duration `json:"interval"`
	// InitialDelay is how long after the bake starts the first measurement
	// is taken (Prometheus sees a new slot a scrape or two after the
	// switch; an empty answer before that would count as a failure).
	InitialDelay time.Duration `json:"initial_delay,omitempty"`
	// Count is how many conclusive measurements (not errors) a pass needs.
	Count int `json:"count"`
	// Exactly one of FailIf and SuccessIf is set.
	FailIf    *Condition `json:"fail_if,omitempty"`
	SuccessIf *Condition `json:"success_if,omitempty"`
	// FailureLimit is how many breaching (or inconclusive) measurements
	// are tolerated: one more fails the run.
	FailureLimit int `json:"failure_limit"`
	// ConsecutiveErrorLimit is how many query errors in a row are
	// retried: one more fails the run.
	ConsecutiveErrorLimit int    `json:"consecutive_error_limit"`
	OnNoData              NoData `json:"on_no_data"`
	Reduce                Reduce `json:"reduce,omitempty"`
	// File and Line are where the block starts (empty if not from a file).
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// Breach reports whether a finite value breaches the metric's condition.
func (m *Metric) Breach(v float64) bool {
	if m.FailIf != nil {
		return m.FailIf.Holds(v)
	}
	if m.SuccessIf != nil {
		return !m.SuccessIf.Holds(v)
	}
	return true // no condition: never passes (Validate refuses it)
}

// condition describes the metric's condition for messages.
func (m *Metric) condition() string {
	if m.FailIf != nil {
		return "fail_if " + m.FailIf.String()
	}
	if m.SuccessIf != nil {
		return "success_if " + m.SuccessIf.String()
	}
	return "no condition"
}

// Validate checks a metric built in code (Parse validates what it reads).
func (m *Metric) Validate() error {
	var es Errors
	fail := func(field, format string, args ...any) {
		es = append(es, &FieldError{Range: hcl.Range{Filename: m.File, Start: hcl.Pos{Line: m.Line}}, Metric: m.Name, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if !validName(m.Name) {
		fail("", "invalid metric name %q: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", m.Name)
	}
	if err := CheckQuery(m.Query); err != nil {
		fail("query", "%v", err)
	}
	if m.Interval < MinInterval || m.Interval > MaxInterval {
		fail("interval", "%s is out of range [%s, %s]", m.Interval, MinInterval, MaxInterval)
	}
	if m.InitialDelay < 0 || m.InitialDelay > MaxInterval {
		fail("initial_delay", "%s is out of range [0s, %s]", m.InitialDelay, MaxInterval)
	}
	if m.Count < 1 || m.Count > MaxCount {
		fail("count", "%d is out of range [1, %d]", m.Count, MaxCount)
	}
	if (m.FailIf == nil) == (m.SuccessIf == nil) {
		fail("fail_if", "set exactly one of fail_if and success_if")
	}
	for _, c := range []*Condition{m.FailIf, m.SuccessIf} {
		if c != nil && !slices.Contains([]Op{OpGT, OpLT, OpGE, OpLE, OpEQ, OpNE}, c.Op) {
			fail("fail_if", "invalid operator %q", c.Op)
		}
		if c != nil && (math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0)) {
			fail("fail_if", "threshold must be finite")
		}
	}
	if m.FailureLimit < 0 || m.FailureLimit > maxLimit {
		fail("failure_limit", "%d is out of range [0, %d]", m.FailureLimit, maxLimit)
	}
	if m.ConsecutiveErrorLimit < 0 || m.ConsecutiveErrorLimit > maxLimit {
		fail("consecutive_error_limit", "%d is out of range [0, %d]", m.ConsecutiveErrorLimit, maxLimit)
	}
	if m.OnNoData != NoDataFail && m.OnNoData != NoDataPass {
		fail("on_no_data", "%q is not \"fail\" or \"pass\"", m.OnNoData)
	}
	switch m.Reduce {
	case ReduceNone, ReduceMax, ReduceMin, ReduceSum, ReduceAvg:
	default:
		fail("reduce", "%q is not max, min, sum or avg", m.Reduce)
	}
	return es.err()
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '_' && r != '-') {
			return false
		}
	}
	return true
}

// Load reads and validates the analysis file at path.
func Load(path string) ([]Metric, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("analysis: read %s: %w", path, err)
	}
	if len(src) > maxFileSize {
		return nil, fmt.Errorf("analysis %s: larger than %d bytes", path, maxFileSize)
	}
	return Parse(src, path)
}

// Parse decodes and validates an analysis file; filename is used in error
// positions. The error, if any, is Errors, every one naming file:line and
// the metric and field. A file without any metric block is refused: it
// would judge nothing.
func Parse(src []byte, filename string) ([]Metric, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fromDiags("", "", diags).err()
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, Errors{{Range: hcl.Range{Filename: filename}, Msg: "not a native HCL file"}}
	}
	if diags := hugeLiterals(body); diags.HasErrors() {
		return nil, fromDiags("", "", diags).err()
	}
	var raw fileHCL
	d := &decoder{errs: fromDiags("", "", gohcl.DecodeBody(file.Body, nil, &raw))}
	var metrics []Metric
	seen := map[string]int{}
	for _, rm := range raw.Metrics {
		m := d.metric(rm)
		if prev, dup := seen[m.Name]; dup {
			d.fail(rm.DefRange, m.Name, "", "metric %q is also defined at line %d", m.Name, prev)
		}
		seen[m.Name] = m.Line
		metrics = append(metrics, m)
	}
	if len(raw.Metrics) == 0 && len(d.errs) == 0 {
		d.fail(hcl.Range{Filename: filename, Start: hcl.Pos{Line: 1}}, "", "", `no metric blocks: an analysis must judge something (metric "name" { query = ... })`)
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return metrics, nil
}

type fileHCL struct {
	Metrics []*metricHCL `hcl:"metric,block"`
}

type metricHCL struct {
	Name                  string         `hcl:"name,label"`
	DefRange              hcl.Range      `hcl:",def_range"`
	Query                 hcl.Expression `hcl:"query,optional"`
	Interval              hcl.Expression `hcl:"interval,optional"`
	InitialDelay          hcl.Expression `hcl:"initial_delay,optional"`
	Count                 hcl.Expression `hcl:"count,optional"`
	FailIf                hcl.Expression `hcl:"fail_if,optional"`
	SuccessIf             hcl.Expression `hcl:"success_if,optional"`
	FailureLimit          hcl.Expression `hcl:"failure_limit,optional"`
	ConsecutiveErrorLimit hcl.Expression `hcl:"consecutive_error_limit,optional"`
	OnNoData              hcl.Expression `hcl:"on_no_data,optional"`
	Reduce                hcl.Expression `hcl:"reduce,optional"`
}

type decoder struct{ errs Errors }

func (d *decoder) fail(rng hcl.Range, metric, field, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Range: rng, Metric: metric, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) metric(raw *metricHCL) Metric {
	m := Metric{
		Name:                  raw.Name,
		ConsecutiveErrorLimit: DefaultConsecutiveErrorLimit,
		FailureLimit:          DefaultFailureLimit,
		OnNoData:              NoDataFail,
		File:                  raw.DefRange.Filename,
		Line:                  raw.DefRange.Start.Line,
	}
	if !validName(raw.Name) {
		d.fail(raw.DefRange, raw.Name, "", "invalid metric name: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
	}
	f := fields{d: d, metric: raw.Name}
	if f.str(raw.Query, "query", &m.Query) {
		if err := CheckQuery(m.Query); err != nil {
			d.fail(raw.Query.Range(), raw.Name, "query", "%v", err)
		}
	} else if isAbsent(raw.Query) {
		d.fail(raw.DefRange, raw.Name, "query", "required")
	}
	if s := ""; f.str(raw.Interval, "interval", &s) {
		dur, err := time.ParseDuration(s)
		switch {
		case err != nil:
			d.fail(raw.Interval.Range(), raw.Name, "interval", "invalid duration %q (want e.g. \"10s\", \"1m\")", s)
		case dur < MinInterval || dur > MaxInterval:
			d.fail(raw.Interval.Range(), raw.Name, "interval", "%s is out of range [%s, %s]", s, MinInterval, MaxInterval)
		default:
			m.Interval = dur
		}
	} else if isAbsent(raw.Interval) {
		d.fail(raw.DefRange, raw.Name, "interval", "required (e.g. \"30s\")")
	}
	if s := ""; f.str(raw.InitialDelay, "initial_delay", &s) {
		dur, err := time.ParseDuration(s)
		switch {
		case err != nil:
			d.fail(raw.InitialDelay.Range(), raw.Name, "initial_delay", "invalid duration %q (want e.g. \"15s\")", s)
		case dur < 0 || dur > MaxInterval:
			d.fail(raw.InitialDelay.Range(), raw.Name, "initial_delay", "%s is out of range [0s, %s]", s, MaxInterval)
		default:
			m.InitialDelay = dur
		}
	}
	if f.int(raw.Count, "count", &m.Count) {
		if m.Count < 1 || m.Count > MaxCount {
			d.fail(raw.Count.Range(), raw.Name, "count", "%d is out of range [1, %d]", m.Count, MaxCount)
		}
	} else if isAbsent(raw.Count) {
		d.fail(raw.DefRange, raw.Name, "count", "required: how many measurements a pass needs (>= 1)")
	}
	m.FailIf = f.condition(raw.FailIf, "fail_if")
	m.SuccessIf = f.condition(raw.SuccessIf, "success_if")
	switch {
	case m.FailIf != nil && m.SuccessIf != nil:
		d.fail(raw.SuccessIf.Range(), raw.Name, "success_if", "set only one of fail_if and success_if")
	case isAbsent(raw.FailIf) && isAbsent(raw.SuccessIf):
		d.fail(raw.DefRange, raw.Name, "fail_if", "required: set fail_if or success_if (e.g. fail_if = \"> 0.01\")")
	}
	if f.int(raw.FailureLimit, "failure_limit", &m.FailureLimit) && (m.FailureLimit < 0 || m.FailureLimit > maxLimit) {
		d.fail(raw.FailureLimit.Range(), raw.Name, "failure_limit", "%d is out of range [0, %d]", m.FailureLimit, maxLimit)
	}
	if f.int(raw.ConsecutiveErrorLimit, "consecutive_error_limit", &m.ConsecutiveErrorLimit) && (m.ConsecutiveErrorLimit < 0 || m.ConsecutiveErrorLimit > maxLimit) {
		d.fail(raw.ConsecutiveErrorLimit.Range(), raw.Name, "consecutive_error_limit", "%d is out of range [0, %d]", m.ConsecutiveErrorLimit, maxLimit)
	}
	var s string
	if f.str(raw.OnNoData, "on_no_data", &s) {
		switch NoData(s) {
		case NoDataFail, NoDataPass:
			m.OnNoData = NoData(s)
		default:
			d.fail(raw.OnNoData.Range(), raw.Name, "on_no_data", "%q is not \"fail\" or \"pass\"", s)
		}
	}
	s = ""
	if f.str(raw.Reduce, "reduce", &s) {
		switch Reduce(s) {
		case ReduceMax, ReduceMin, ReduceSum, ReduceAvg:
			m.Reduce = Reduce(s)
		default:
			d.fail(raw.Reduce.Range(), raw.Name, "reduce", "%q is not max, min, sum or avg", s)
		}
	}
	return m
}

// isAbsent reports whether an optional attribute was left out (gohcl gives
// a null expression for it).
func isAbsent(e hcl.Expression) bool {
	if e == nil {
		return true
	}
	v, diags := e.Value(nil)
	return !diags.HasErrors() && v.IsNull()
}

// fields reads attribute values of one metric block.
type fields struct {
	d      *decoder
	metric string
}

// value evaluates e as ty. It reports false when the attribute is absent
// or wrong (after recording the error).
func (f fields) value(e hcl.Expression, key string, ty cty.Type, want string) (cty.Value, bool) {
	if e == nil {
		return cty.NilVal, false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		f.d.errs = append(f.d.errs, fromDiags(f.metric, key, diags)...)
		return cty.NilVal, false
	}
	if v.IsNull() {
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		f.d.fail(e.Range(), f.metric, key, "value must be known when the file is read")
		return cty.NilVal, false
	}
	if hasHugeNumber(v) {
		f.d.fail(e.Range(), f.metric, key, "number out of range")
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil || cv.IsNull() || !cv.IsWhollyKnown() {
		f.d.fail(e.Range(), f.metric, key, "want %s, got %s", want, v.Type().FriendlyName())
		return cty.NilVal, false
	}
	return cv, true
}

// str reads a string into dst.
func (f fields) str(e hcl.Expression, key string, dst *string) bool {
	v, ok := f.value(e, key, cty.String, "a string")
	if ok {
		*dst = v.AsString()
	}
	return ok
}

func (f fields) int(e hcl.Expression, key string, dst *int) bool {
	v, ok := f.value(e, key, cty.Number, "a whole number")
	if !ok {
		return false
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || n < math.MinInt32 || n > math.MaxInt32 {
		f.d.fail(e.Range(), f.metric, key, "want a whole number, got %s", bf.Text('g', 10))
		return false
	}
	*dst = int(n)
	return true
}

func (f fields) condition(e hcl.Expression, key string) *Condition {
	var s string
	if !f.str(e, key, &s) {
		return nil
	}
	c, err := ParseCondition(s)
	if err != nil {
		f.d.fail(e.Range(), f.metric, key, "%v", err)
		return nil
	}
	return &c
}

// hasHugeNumber reports whether v holds a number beyond float64's range.
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
// anything evaluates them (formatting 1e9999999 takes seconds).
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

// FieldError is one problem with one field of an analysis file.
type FieldError struct {
	// Range is where the value (or the block missing it) is.
	Range hcl.Range
	// Metric is the metric block's name, "" for file-level errors.
	Metric string
	// Field is the attribute, "" for the block itself or syntax errors.
	Field string
	Msg   string
}

// Error formats e as `file:line: metric "name": field: msg`.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Range.Filename != "" {
		fmt.Fprintf(&b, "%s:%d: ", e.Range.Filename, e.Range.Start.Line)
	}
	if e.Metric != "" {
		fmt.Fprintf(&b, "metric %q: ", e.Metric)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in an analysis file, sorted by position.
type Errors []*FieldError

// Error lists the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) err() error {
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

func fromDiags(metric, field string, diags hcl.Diagnostics) Errors {
	var es Errors
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		e := &FieldError{Metric: metric, Field: field, Msg: d.Summary}
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
