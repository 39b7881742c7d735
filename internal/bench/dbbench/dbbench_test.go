package dbbench

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/golive/golive/internal/pgtest"
)

func TestRunSmall(t *testing.T) {
	res, err := Run(t.Context(), Options{SizeMB: 5, Reps: 2})
	if errors.Is(err, pgtest.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := PrintTable(&b, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	if len(res.Samples) != 4 || res.Tables != 3 || res.Rows == 0 || res.DBBytes == 0 {
		t.Fatalf("result = %+v", res)
	}
	for _, s := range res.Samples {
		if s.Total <= 0 || s.DumpBytes == 0 {
			t.Fatalf("sample = %+v", s)
		}
	}
	if res.Ratio() <= 0 || !strings.Contains(b.String(), "ratio golive/baseline") {
		t.Fatalf("no ratio: %v", res.Ratio())
	}
}
