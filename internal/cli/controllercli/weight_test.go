package controllercli

import "testing"

func TestParseWeight(t *testing.T) {
	for in, want := range map[string]uint32{"10%": 10, "10": 10, " 25 % ": 25, "1%": 1, "99%": 99} {
		got, err := parseWeight(in)
		if err != nil || got != want {
			t.Errorf("parseWeight(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0%", "100%", "150", "ten%", "-5%"} {
		if got, err := parseWeight(in); err == nil {
			t.Errorf("parseWeight(%q) = %d, want an error", in, got)
		}
	}
}
