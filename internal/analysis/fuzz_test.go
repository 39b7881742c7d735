package analysis

import (
	"errors"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and must
// return either valid metrics (each accepted by Validate, each query
// rendered for some values) or Errors, every one naming the file and a
// line.
func FuzzParse(f *testing.F) {
	seeds := []string{
		exampleFile,
		"",
		"metric \"m\" {\n  query = \"up\"\n  interval = \"1s\"\n  count = 1\n  fail_if = \"> 1\"\n}\n",
		"metric \"m\" {\n",
		"metric {}\n",
		"metric \"m\" {}\nmetric \"m\" {}\n",
		"metric \"m\" { count = 1e400 }\n",
		"metric \"m\" { count = 1e30 }\n",
		"metric \"m\" { query = \"${1e9999999}\" }\n",
		"metric \"m\" { query = \"{{\" }\n",
		"metric \"m\" { query = \"up{a=\\\"{{slot}}\" }\n",
		"metric \"m\" { query = \"up{a=`{{slot}}`}\" }\n",
		"metric \"m\" { fail_if = \">= -0\" }\n",
		"metric \"m\" { fail_if = null }\n",
		"metric \"m\" { interval = [\"1s\"] }\n",
		"metric \"m\" { reduce = upper(\"max\") }\n",
		"metric \"m\" { on_no_data = var.x }\n",
		"metric \"m\" { query = \"up\" \n interval = \"1h0m1s\" \n count = 10001 \n success_if = \"!= 0\" }\n",
		"\x00\xff{{{",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		ms, err := Parse(src, "fuzz.hcl")
		if err != nil {
			if ms != nil {
				t.Fatalf("Parse returned metrics and an error: %v", err)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not Errors: %T %v", err, err)
			}
			for _, e := range es {
				if e.Range.Filename != "fuzz.hcl" || e.Range.Start.Line < 1 || e.Msg == "" {
					t.Fatalf("error without file:line or message: %q", e)
				}
			}
			return
		}
		if len(ms) == 0 {
			t.Fatal("Parse returned no metrics and no error")
		}
		for _, m := range ms {
			if err := m.Validate(); err != nil {
				t.Fatalf("Parse accepted a metric Validate refuses: %v", err)
			}
			if _, err := Render(m.Query, Values{Hosts: []string{"h.1"}, Service: "s", Release: "r", Slot: "blue"}); err != nil {
				t.Fatalf("Parse accepted a query Render refuses: %v", err)
			}
		}
		if _, err := Start(ms, Values{Hosts: []string{"h.1"}, Service: "s", Release: "r", Slot: "blue"}, time.Unix(0, 0)); err != nil {
			t.Fatalf("Start refused parsed metrics: %v", err)
		}
	})
}
