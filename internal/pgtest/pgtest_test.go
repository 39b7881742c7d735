package pgtest

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	s.CreateDB(t, "app")
	if got := s.Exec(t, "app", "SELECT 1"); got != "1" {
		t.Fatalf("SELECT 1 = %q", got)
	}
}
