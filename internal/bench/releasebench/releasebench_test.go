package releasebench

import (
	"testing"
)

func TestFetchUnpackSmall(t *testing.T) {
	res, err := FetchUnpack(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if m := metric(res, "golive_seconds"); m <= 0 {
		t.Fatalf("golive_seconds = %v", m)
	}
}

func TestSwapsSmall(t *testing.T) {
	res, err := Swaps(t.Context(), 200, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if f := metric(res, "failed_reads"); f != 0 {
		t.Fatalf("failed_reads = %v", f)
	}
	if r := metric(res, "reads"); r == 0 {
		t.Fatal("readers did not read")
	}
}

func metric(r Result, name string) float64 {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value
		}
	}
	return -1
}
