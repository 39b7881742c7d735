package approval

import (
	"strings"
	"testing"
	"unicode"
)

func TestMatchPhrase(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"Start automation now", true},
		{"start automation now", true},
		{"  START   automation\tNOW \n", true},
		{"start automation", true},
		{"Begin automated deployment", true},
		{"begin live deployment automation", true},
		{"Activate deployment automation", true},
		{"activate production deployment", true},
		{"Proceed with automated live deployment", true},
		{"go live with automation", true},
		{"start\u00a0automation now", true}, // NBSP is white space
		{"start automation now!", false},
		{"start automation now please", false},
		{"startautomation now", false},
		{"start automatoin now", false},
		{"please start automation now", false},
		{"yes", false},
		{"", false},
		{"ѕtart automation now", false}, // Cyrillic s
		{"actİvate deployment automation", false},
		{"start automation now\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			_, got := MatchPhrase(tt.give)
			if got != tt.want {
				t.Fatalf("MatchPhrase(%q) = %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestPhraseErrorListsAccepted(t *testing.T) {
	msg := (&PhraseError{Given: "go"}).Error()
	for _, p := range AcceptedPhrases() {
		if !strings.Contains(msg, p) {
			t.Fatalf("error %q does not list %q", msg, p)
		}
	}
}

func FuzzMatchPhrase(f *testing.F) {
	for _, p := range AcceptedPhrases() {
		f.Add(p)
		f.Add(strings.ToUpper(p) + " ")
	}
	f.Add("start automation now!")
	f.Add("\u00a0go\tlive  with automation")
	f.Add("actİvate deployment automation")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		canon, ok := MatchPhrase(s)
		if !ok {
			if canon != "" {
				t.Fatalf("no match but canonical %q", canon)
			}
			return
		}
		// A match is exactly an accepted phrase after normalization, and
		// every non-space rune of the input is ASCII: no look-alikes.
		if NormalizePhrase(s) != canon {
			t.Fatalf("matched %q but normalizes to %q", canon, NormalizePhrase(s))
		}
		for _, r := range s {
			if r > 127 && !unicode.IsSpace(r) {
				t.Fatalf("input %q with non-ASCII rune %q matched %q", s, r, canon)
			}
		}
	})
}
