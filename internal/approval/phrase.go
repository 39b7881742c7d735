package approval

import (
	"fmt"
	"strings"
	"unicode"
)

// acceptedPhrases are the only words that turn automation on, normalized
// (lower case, single spaces). The first is the canonical one.
var acceptedPhrases = []string{
	"start automation now",
	"start automation",
	"begin automated deployment",
	"begin live deployment automation",
	"activate deployment automation",
	"activate production deployment",
	"proceed with automated live deployment",
	"go live with automation",
}

// AcceptedPhrases returns the phrases that MatchPhrase accepts.
func AcceptedPhrases() []string {
	return append([]string(nil), acceptedPhrases...)
}

// NormalizePhrase lower-cases ASCII letters of s, folds every run of Unicode
// white space into one ASCII space and trims the ends. Non-ASCII letters are
// kept as they are, so a look-alike (Cyrillic "ѕ", Turkish "İ", the Kelvin
// sign) never lower-cases into an accepted phrase. Punctuation is kept too:
// "start automation now!" is not the phrase.
func NormalizePhrase(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// MatchPhrase reports whether s is one of the accepted phrases, compared
// case-insensitively after white space normalization. It returns the
// canonical (normalized) phrase on a match.
func MatchPhrase(s string) (string, bool) {
	n := NormalizePhrase(s)
	for _, p := range acceptedPhrases {
		if n == p {
			return p, true
		}
	}
	return "", false
}

// PhraseError is returned for a phrase that is not accepted.
type PhraseError struct{ Given string }

func (e *PhraseError) Error() string {
	quoted := make([]string, len(acceptedPhrases))
	for i, p := range acceptedPhrases {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%q is not an authorization phrase; say one of: %s", truncate(e.Given, 80), strings.Join(quoted, ", "))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
