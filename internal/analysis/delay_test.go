package analysis

import (
	"strings"
	"testing"
	"time"
)

// TestInitialDelay: a metric with initial_delay takes its first
// measurement that long after the run starts; a bad value is refused.
func TestInitialDelay(t *testing.T) {
	ms, err := Parse([]byte(`metric "m" {
  query         = "up"
  interval      = "5s"
  initial_delay = "12s"
  count         = 1
  fail_if       = "> 0"
}`), "a.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].InitialDelay != 12*time.Second {
		t.Fatalf("initial_delay = %s", ms[0].InitialDelay)
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s, err := Start(ms, Values{Hosts: []string{"h"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Due(now.Add(11 * time.Second)); len(d) != 0 {
		t.Fatalf("due %v before the delay", d)
	}
	if d := s.Due(now.Add(12 * time.Second)); len(d) != 1 || !s.NextAt().Equal(now.Add(12*time.Second)) {
		t.Fatalf("due %v, next %s at the delay", d, s.NextAt())
	}
	_, err = Parse([]byte(`metric "m" {
  query = "up"
  interval = "5s"
  initial_delay = "soon"
  fail_if = "> 0"
}`), "b.hcl")
	if err == nil || !strings.Contains(err.Error(), `b.hcl:4: metric "m": initial_delay: invalid duration`) {
		t.Fatalf("bad initial_delay: %v", err)
	}
}
