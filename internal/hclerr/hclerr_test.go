package hclerr

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestErrSortsAndFormats(t *testing.T) {
	if (Errors{}).Err() != nil {
		t.Fatal("no errors must be a nil error")
	}
	es := Errors{
		{Range: hcl.Range{Filename: "a.hcl", Start: hcl.Pos{Line: 9}}, Field: "ttl", Msg: "too long"},
		{Range: hcl.Range{Filename: "a.hcl", Start: hcl.Pos{Line: 2}}, Msg: "bad syntax"},
		{Field: "host_id", Msg: "missing"},
	}
	want := "host_id: missing\na.hcl:2: bad syntax\na.hcl:9: ttl: too long"
	if got := es.Err().Error(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	d := FromDiags("zone", hcl.Diagnostics{{Severity: hcl.DiagWarning, Summary: "w"}, {Severity: hcl.DiagError, Summary: "Unsupported argument", Detail: "x"}})
	if len(d) != 1 || d[0].Error() != "zone: Unsupported argument: x" {
		t.Fatalf("FromDiags = %v", d)
	}
}
