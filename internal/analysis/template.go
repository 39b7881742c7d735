package analysis

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The placeholders a query may use, each inside a double-quoted PromQL
// string (a label matcher's value):
//
//	{{hosts_regex}}  the wave's host ids, each regexp.QuoteMeta'd, joined by
//	                 "|" in a group: (?:web-1|web-2), for =~ matchers, which
//	                 Prometheus anchors (^(?:...)$), so "web-1" never matches
//	                 "web-10"; the group keeps the alternation whole inside
//	                 a larger regexp: instance=~"{{hosts_regex}}:.*"
//	{{hosts}}        the host ids joined by ","
//	{{service}}      the service name
//	{{release}}      the release being rolled out
//	{{slot}}         the blue-green slot the release runs in ("blue", "green")
//
// Values are escaped for the string they are in (a backslash becomes
// "\\", a quote "\""), so a host id "web-1.example" makes the matcher
// host=~"(?:web-1\\.example)", which Prometheus reads as the regexp
// (?:web-1\.example).
const (
	PlaceholderHostsRegex = "hosts_regex"
	PlaceholderHosts      = "hosts"
	PlaceholderService    = "service"
	PlaceholderRelease    = "release"
	PlaceholderSlot       = "slot"
)

var placeholders = []string{PlaceholderHostsRegex, PlaceholderHosts, PlaceholderService, PlaceholderRelease, PlaceholderSlot}

// Values fill a query's placeholders: the rollout's wave (or every host
// it touched so far, as the lead's gate decides) and release.
type Values struct {
	Hosts   []string `json:"hosts"`
	Service string   `json:"service"`
	Release string   `json:"release"`
	Slot    string   `json:"slot,omitempty"`
}

var placeholderRe = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_]*)\s*\}\}`)

// token is a placeholder found in a query.
type token struct {
	name       string
	start, end int // byte offsets of "{{" and after "}}"
}

// scan finds the placeholders of query, refusing an unknown one, a stray
// "{{", and one that is not inside a double-quoted string.
func scan(query string) ([]token, error) {
	inDouble := inDoubleQuotes(query)
	var toks []token
	for i := 0; i < len(query); {
		j := strings.Index(query[i:], "{{")
		if j < 0 {
			break
		}
		at := i + j
		m := placeholderRe.FindStringSubmatchIndex(query[at:])
		if m == nil || m[0] != 0 {
			return nil, fmt.Errorf("stray \"{{\" at offset %d: placeholders are {{%s}}", at, strings.Join(placeholders, "}}, {{"))
		}
		name := query[at+m[2] : at+m[3]]
		if !slices.Contains(placeholders, name) {
			return nil, fmt.Errorf("unknown placeholder {{%s}}: known are {{%s}}", name, strings.Join(placeholders, "}}, {{"))
		}
		if !inDouble[at] {
			return nil, fmt.Errorf("placeholder {{%s}} must be inside a double-quoted string, such as host=~\"{{hosts_regex}}\"", name)
		}
		toks = append(toks, token{name: name, start: at, end: at + m[1]})
		i = at + m[1]
	}
	return toks, nil
}

// inDoubleQuotes marks the bytes of query that are inside a double-quoted
// PromQL string, skipping single-quoted and backquoted strings and
// comments, as the PromQL lexer does.
func inDoubleQuotes(query string) []bool {
	in := make([]bool, len(query))
	const (
		code = iota
		double
		single
		raw
		comment
	)
	state := code
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch state {
		case code:
			switch c {
			case '"':
				state = double
			case '\'':
				state = single
			case '`':
				state = raw
			case '#':
				state = comment
			}
		case double, single:
			in[i] = state == double
			switch {
			case c == '\\' && i+1 < len(query):
				i++
				in[i] = state == double
			case c == '"' && state == double, c == '\'' && state == single:
				in[i] = false
				state = code
			case c == '\n':
				state = code // the lexer refuses it; no placeholder belongs there
			}
		case raw:
			if c == '`' {
				state = code
			}
		case comment:
			if c == '\n' {
				state = code
			}
		}
	}
	return in
}

// CheckQuery refuses an empty or oversized query and any placeholder
// Render could not fill. It does not parse PromQL: Prometheus judges the
// syntax, and a query it refuses fails the run at its first measurement.
func CheckQuery(query string) error {
	if strings.TrimSpace(query) == "" {
		return fmt.Errorf("empty query")
	}
	if len(query) > maxQueryLen {
		return fmt.Errorf("query longer than %d bytes", maxQueryLen)
	}
	_, err := scan(query)
	return err
}

// Render fills query's placeholders with v. It refuses a placeholder whose
// value is empty (no hosts, no slot): a matcher on "" would silently match
// series without the label, or nothing.
func Render(query string, v Values) (string, error) {
	toks, err := scan(query)
	if err != nil {
		return "", err
	}
	hosts := slices.Clone(v.Hosts)
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	if len(hosts) > 0 && hosts[0] == "" {
		return "", fmt.Errorf("empty host id")
	}
	var b strings.Builder
	last := 0
	for _, t := range toks {
		var val string
		switch t.name {
		case PlaceholderHostsRegex:
			quoted := make([]string, len(hosts))
			for i, h := range hosts {
				quoted[i] = regexp.QuoteMeta(h)
			}
			if len(quoted) > 0 {
				val = "(?:" + strings.Join(quoted, "|") + ")"
			}
		case PlaceholderHosts:
			val = strings.Join(hosts, ",")
		case PlaceholderService:
			val = v.Service
		case PlaceholderRelease:
			val = v.Release
		case PlaceholderSlot:
			val = v.Slot
		}
		if val == "" {
			return "", fmt.Errorf("query uses {{%s}} but it has no value here", t.name)
		}
		b.WriteString(query[last:t.start])
		b.WriteString(escapeString(val))
		last = t.end
	}
	b.WriteString(query[last:])
	return b.String(), nil
}

// escapeString escapes s for the inside of a double-quoted PromQL string,
// whose escapes are Go's.
func escapeString(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
