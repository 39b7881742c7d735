package analysis

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const exampleFile = `# The issue's example.
metric "error-rate" {
  query     = "sum(rate(http_requests_total{code=~\"5..\",instance=~\"{{hosts_regex}}\"}[1m])) / sum(rate(http_requests_total{instance=~\"{{hosts_regex}}\"}[1m]))"
  interval  = "10s"
  count     = 3
  fail_if   = "> 0.001"
  failure_limit = 0
  consecutive_error_limit = 4
  on_no_data = "fail"
  reduce = "max"
}

metric "latency" {
  query      = "histogram_quantile(0.99, sum by (le) (rate(golive_agent_traffic_latency_seconds_bucket{service=\"{{service}}\",slot=\"{{slot}}\"}[1m])))"
  interval   = "30s"
  count      = 1
  success_if = "<= 0.25"
  on_no_data = "pass"
}
`

func TestParseExample(t *testing.T) {
	ms, err := Parse([]byte(exampleFile), "analysis.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d metrics, want 2", len(ms))
	}
	m := ms[0]
	if m.Name != "error-rate" || m.Interval != 10*time.Second || m.Count != 3 || m.FailIf == nil ||
		*m.FailIf != (Condition{OpGT, 0.001}) || m.SuccessIf != nil || m.FailureLimit != 0 ||
		m.ConsecutiveErrorLimit != 4 || m.OnNoData != NoDataFail || m.Reduce != ReduceMax || m.Line != 2 || m.File != "analysis.hcl" {
		t.Errorf("metric 0 = %+v", m)
	}
	if !strings.Contains(m.Query, `code=~"5.."`) {
		t.Errorf("query = %q", m.Query)
	}
	l := ms[1]
	if l.SuccessIf == nil || *l.SuccessIf != (Condition{OpLE, 0.25}) || l.OnNoData != NoDataPass ||
		l.ConsecutiveErrorLimit != DefaultConsecutiveErrorLimit || l.Reduce != ReduceNone {
		t.Errorf("metric 1 = %+v", l)
	}
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			t.Errorf("Validate(%s): %v", m.Name, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const ok = `query = "up"
  interval = "10s"
  count = 1
  fail_if = "> 1"`
	block := func(body string) string { return "metric \"m\" {\n  " + body + "\n}\n" }
	tests := []struct {
		name string
		give string
		want []string // substrings of the error, in order of lines
	}{
		{"empty file", "", []string{"a.hcl:1: no metric blocks"}},
		{"syntax", "metric \"m\" {\n", []string{"a.hcl:1:"}},
		{"unknown attribute", block(ok + "\n  thresold = 1"), []string{`a.hcl:6:`, "Unsupported argument"}},
		{"unknown block", "alert \"x\" {}\n", []string{"a.hcl:1:", "Unsupported block type"}},
		{"no label", "metric {\n" + ok + "\n}\n", []string{"a.hcl:1:"}},
		{"bad name", "metric \"a b\" {\n  " + ok + "\n}\n", []string{`a.hcl:1: metric "a b": invalid metric name`}},
		{"duplicate", block(ok) + block(ok), []string{`a.hcl:7: metric "m": metric "m" is also defined at line 1`}},
		{"missing query", block(`interval = "1s"
  count = 1
  fail_if = "> 1"`), []string{`a.hcl:1: metric "m": query: required`}},
		{"missing interval", block(`query = "up"
  count = 1
  fail_if = "> 1"`), []string{`a.hcl:1: metric "m": interval: required`}},
		{"missing count", block(`query = "up"
  interval = "1s"
  fail_if = "> 1"`), []string{`a.hcl:1: metric "m": count: required`}},
		{"missing condition", block(`query = "up"
  interval = "1s"
  count = 1`), []string{`a.hcl:1: metric "m": fail_if: required`}},
		{"both conditions", block(ok + "\n  success_if = \"< 1\""), []string{`a.hcl:6: metric "m": success_if: set only one`}},
		{"bad duration", block(strings.Replace(ok, `"10s"`, `"2x"`, 1)), []string{`a.hcl:3: metric "m": interval: invalid duration "2x"`}},
		{"short interval", block(strings.Replace(ok, `"10s"`, `"10ms"`, 1)), []string{`a.hcl:3: metric "m": interval: 10ms is out of range`}},
		{"interval number", block(strings.Replace(ok, `"10s"`, `10`, 1)), []string{`a.hcl:3: metric "m": interval: invalid duration "10"`}},
		{"count zero", block(strings.Replace(ok, "count = 1", "count = 0", 1)), []string{`a.hcl:4: metric "m": count: 0 is out of range`}},
		{"count fraction", block(strings.Replace(ok, "count = 1", "count = 1.5", 1)), []string{`a.hcl:4: metric "m": count: want a whole number`}},
		{"count huge", block(strings.Replace(ok, "count = 1", "count = 1e999999", 1)), []string{`a.hcl:4:`, "out of range"}},
		{"bad op", block(strings.Replace(ok, `"> 1"`, `"=> 1"`, 1)), []string{`a.hcl:5: metric "m": fail_if: invalid condition "=> 1"`}},
		{"no number", block(strings.Replace(ok, `"> 1"`, `">"`, 1)), []string{`a.hcl:5: metric "m": fail_if: invalid condition ">"`}},
		{"nan threshold", block(strings.Replace(ok, `"> 1"`, `"> NaN"`, 1)), []string{`fail_if: invalid condition "> NaN": "NaN" is not a finite number`}},
		{"inf threshold", block(strings.Replace(ok, `"> 1"`, `"< +Inf"`, 1)), []string{`fail_if: invalid condition`}},
		{"trailing junk", block(strings.Replace(ok, `"> 1"`, `"> 1 or 2"`, 1)), []string{`fail_if: invalid condition`}},
		{"negative limit", block(ok + "\n  failure_limit = -1"), []string{`a.hcl:6: metric "m": failure_limit: -1 is out of range`}},
		{"negative error limit", block(ok + "\n  consecutive_error_limit = -1"), []string{`consecutive_error_limit: -1 is out of range`}},
		{"bad on_no_data", block(ok + "\n  on_no_data = \"ignore\""), []string{`a.hcl:6: metric "m": on_no_data: "ignore" is not "fail" or "pass"`}},
		{"bad reduce", block(ok + "\n  reduce = \"median\""), []string{`a.hcl:6: metric "m": reduce: "median" is not max, min, sum or avg`}},
		{"unknown placeholder", block(strings.Replace(ok, `"up"`, `"up{host=\"{{host}}\"}"`, 1)), []string{`a.hcl:2: metric "m": query: unknown placeholder {{host}}`}},
		{"stray braces", block(strings.Replace(ok, `"up"`, `"up{host=\"{{hosts_regex\"}"`, 1)), []string{`query: stray "{{"`}},
		{"placeholder outside string", block(strings.Replace(ok, `"up"`, `"up{host=~{{hosts_regex}}}"`, 1)), []string{`query: placeholder {{hosts_regex}} must be inside a double-quoted string`}},
		{"placeholder in single quotes", block(strings.Replace(ok, `"up"`, `"up{host=~'{{hosts_regex}}'}"`, 1)), []string{`must be inside a double-quoted string`}},
		{"empty query", block(strings.Replace(ok, `"up"`, `"  "`, 1)), []string{`query: empty query`}},
		{"function call", block(strings.Replace(ok, `"up"`, `upper("up")`, 1)), []string{`a.hcl:2:`, "query"}},
		{"variable", block(strings.Replace(ok, `"up"`, `var.q`, 1)), []string{`a.hcl:2:`, "query"}},
		{"every problem at once", block(`query = ""
  interval = "x"
  count = 0
  fail_if = "?"`), []string{"a.hcl:2:", "a.hcl:3:", "a.hcl:4:", "a.hcl:5:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := Parse([]byte(tt.give), "a.hcl")
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", ms)
			}
			if ms != nil {
				t.Errorf("Parse returned metrics and an error")
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			msg := err.Error()
			at := 0
			for _, w := range tt.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error %q does not contain %q (after offset %d)", msg, w, at)
				}
				at += i
			}
			for _, e := range es {
				if e.Range.Filename != "a.hcl" || e.Range.Start.Line < 1 {
					t.Errorf("error %q has no file:line", e)
				}
			}
		})
	}
}

func TestParseCondition(t *testing.T) {
	tests := []struct {
		give    string
		want    Condition
		wantErr bool
	}{
		{give: "> 0.001", want: Condition{OpGT, 0.001}},
		{give: "<1", want: Condition{OpLT, 1}},
		{give: " >= -2.5e3 ", want: Condition{OpGE, -2500}},
		{give: "<= 0", want: Condition{OpLE, 0}},
		{give: "== 1", want: Condition{OpEQ, 1}},
		{give: "!= 0", want: Condition{OpNE, 0}},
		{give: "= 1", wantErr: true},
		{give: "1 >", wantErr: true},
		{give: "> ", wantErr: true},
		{give: "> 1_000", wantErr: true},
		{give: "> inf", wantErr: true},
		{give: "> 0x10", wantErr: true},
		{give: "> 0x1p4", wantErr: true},
		{give: "> .5", want: Condition{OpGT, 0.5}},
		{give: "> +5.", want: Condition{OpGT, 5}},
		{give: "<> 1", wantErr: true},
		{give: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseCondition(tt.give)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("ParseCondition(%q) = %v, %v; want %v, error %v", tt.give, got, err, tt.want, tt.wantErr)
		}
	}
	for _, tt := range []struct {
		c    Condition
		give float64
		want bool
	}{
		{Condition{OpGT, 1}, 1, false}, {Condition{OpGT, 1}, 1.1, true},
		{Condition{OpGE, 1}, 1, true}, {Condition{OpLT, 1}, 1, false},
		{Condition{OpLE, 1}, 1, true}, {Condition{OpEQ, 1}, 1, true},
		{Condition{OpNE, 1}, 1, false}, {Condition{OpNE, 1}, 2, true},
	} {
		if got := tt.c.Holds(tt.give); got != tt.want {
			t.Errorf("%v Holds(%v) = %v, want %v", tt.c, tt.give, got, tt.want)
		}
	}
}

func TestRender(t *testing.T) {
	v := Values{Hosts: []string{"web-2", "web-1.example", "web-2"}, Service: "api", Release: "v1.2.3+b", Slot: "green"}
	tests := []struct {
		give    string
		want    string
		wantErr string
	}{
		{give: `up{host=~"{{hosts_regex}}"}`, want: `up{host=~"(?:web-1\\.example|web-2)"}`},
		{give: `up{host=~"{{ hosts_regex }}"}`, want: `up{host=~"(?:web-1\\.example|web-2)"}`},
		{give: `count(up{service="{{service}}",release="{{release}}",slot="{{slot}}"}) # {{hosts}} in a comment is code`, wantErr: "must be inside a double-quoted string"},
		{give: `up{instance=~"{{hosts_regex}}:.*"}`, want: `up{instance=~"(?:web-1\\.example|web-2):.*"}`},
		{give: `label_replace(vector(1), "h", "{{hosts}}", "", "")`, want: `label_replace(vector(1), "h", "web-1.example,web-2", "", "")`},
		{give: `up{release="{{release}}",slot="{{slot}}",service="{{service}}"}`, want: `up{release="v1.2.3+b",slot="green",service="api"}`},
		{give: `up{a="\"{{slot}}\""}`, want: `up{a="\"green\""}`},
		{give: "up{a=`{{slot}}`}", wantErr: "must be inside a double-quoted string"},
		{give: `up{host="{{host}}"}`, wantErr: "unknown placeholder {{host}}"},
	}
	for _, tt := range tests {
		got, err := Render(tt.give, v)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Render(%q) = %q, %v; want error %q", tt.give, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tt.give, got, err, tt.want)
		}
	}

	// A value is escaped for the string it lands in.
	got, err := Render(`up{r="{{release}}"}`, Values{Release: `a"b\c`})
	if want := `up{r="a\"b\\c"}`; err != nil || got != want {
		t.Errorf("Render with quote and backslash = %q, %v; want %q", got, err, want)
	}
	// A placeholder without a value is refused, not rendered as "".
	for _, q := range []string{`up{host=~"{{hosts_regex}}"}`, `up{slot="{{slot}}"}`} {
		if got, err := Render(q, Values{Service: "api"}); err == nil {
			t.Errorf("Render(%q) with no value = %q, want an error", q, got)
		}
	}
}
