// Package prometheus_test checks the alerting rules shipped in
// deploy/prometheus:
//
//   - always, with the standard library: every rule has a for:, a severity
//     label and summary and description annotations, and every metric an
//     expr references is exported by golive or the sample app (its name, a
//     golive_ or sampleapp_ string literal, is in a non-test Go file under
//     internal/ or cmd/sampleapp/), so an alert cannot silently watch a
//     series that does not exist;
//   - with promtool: `promtool check rules alerts.yml`,
//     `promtool test rules alerts_test.yml` and `promtool check config
//     prometheus.yml` (the scrape config through golive's service
//     discovery, which loads alerts.yml). Without promtool (Debian package
//     "prometheus") these skip, except under CI=true, where they fail.
package prometheus_test

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	alertsFile = "alerts.yml"
	unitTests  = "alerts_test.yml"
	configFile = "prometheus.yml"
	sourceRoot = "../../internal"
	sampleRoot = "../../cmd/sampleapp"
)

func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (%v): CI must check the alerting rules; install the Debian package prometheus", err)
		}
		t.Skipf("promtool not found (%v); skipping (it fails under CI=true; apt-get install prometheus)", err)
	}
	return path
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", alertsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	t.Logf("%s", out)
}

func TestPromtoolTestRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", unitTests).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", unitTests, err, out)
	}
}

func TestPromtoolCheckConfig(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "config", configFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", configFile, err, out)
	}
	if !strings.Contains(string(out), "1 rule files found") {
		t.Errorf("promtool check config %s does not load %s:\n%s", configFile, alertsFile, out)
	}
}

// TestConfigUsesServiceDiscovery keeps prometheus.yml pointed at the
// controller's SD endpoint (internal/promsd.Path on its default HTTP port).
func TestConfigUsesServiceDiscovery(t *testing.T) {
	b, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"http_sd_configs:", "url: http://127.0.0.1:7401/v1/prometheus/sd", "- " + alertsFile} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not contain %q", configFile, want)
		}
	}
	src, err := os.ReadFile(filepath.Join(sourceRoot, "promsd", "promsd.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), `const Path = "/v1/prometheus/sd"`) {
		t.Errorf("internal/promsd no longer serves /v1/prometheus/sd: update %s", configFile)
	}
}

// rule is what the line scanner below reads of an alerting rule.
type rule struct {
	alert string
	line  int
	expr  string
	keys  map[string]string // "for", "severity", "summary", "description": first line of each
}

var keyLine = regexp.MustCompile(`^(\s*)(?:- )?([a-z_]+):\s*(.*)$`)

// parseRules reads the alerting rules of a Prometheus rules file written as
// alerts.yml is: one "- alert:" per rule, scalar values inline or as block
// scalars (|, >, with chomping indicators). It is not a YAML parser; the
// promtool tests check the file's validity.
func parseRules(t *testing.T, text string) []rule {
	t.Helper()
	var rules []rule
	var cur *rule
	blockKey, blockIndent := "", -1 // the key whose block scalar we are reading
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if blockKey != "" {
			if trimmed == "" || indent > blockIndent {
				if blockKey == "expr" && cur != nil {
					cur.expr += " " + trimmed
				}
				continue
			}
			blockKey = ""
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key, value := m[2], strings.TrimSpace(m[3])
		keyIndent := len(m[1])
		if key == "alert" {
			rules = append(rules, rule{alert: value, line: n, keys: map[string]string{}})
			cur = &rules[len(rules)-1]
			continue
		}
		if key == "record" {
			cur = nil // recording rules are not checked for alert metadata
			continue
		}
		if cur == nil {
			continue
		}
		switch value {
		case "|", "|-", "|+", ">", ">-", ">+":
			blockKey, blockIndent = key, keyIndent
			value = ""
		}
		if key == "expr" {
			cur.expr = value
		}
		if _, seen := cur.keys[key]; !seen {
			cur.keys[key] = value
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rules
}

var metricRef = regexp.MustCompile(`\b(?:golive|sampleapp)_[a-z0-9_]+`)

// exportedMetrics returns every "golive_..." and "sampleapp_..." string
// literal in the non-test Go files under the roots.
func exportedMetrics(t *testing.T, roots ...string) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"((?:golive|sampleapp)_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, root := range roots {
		walkLiterals(t, root, lit, names)
	}
	if len(names) == 0 {
		t.Fatalf("no golive_ metric names found under %s", strings.Join(roots, ", "))
	}
	return names
}

func walkLiterals(t *testing.T, root string, lit *regexp.Regexp, names map[string]bool) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
}

// unknownMetrics returns the golive and sampleapp metrics expr references that are not in
// known; a histogram's _bucket, _count and _sum series count as its name.
func unknownMetrics(expr string, known map[string]bool) (refs, unknown []string) {
	for _, name := range metricRef.FindAllString(expr, -1) {
		refs = append(refs, name)
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	return refs, unknown
}

func TestRulesReferenceExportedMetrics(t *testing.T) {
	text, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	rules := parseRules(t, string(text))
	if len(rules) < 8 {
		t.Fatalf("read %d alerting rules from %s, want at least 8: is the scanner still in step with the file?", len(rules), alertsFile)
	}
	known := exportedMetrics(t, sourceRoot, sampleRoot)
	seen := map[string]int{}
	for _, r := range rules {
		if prev, dup := seen[r.alert]; dup {
			t.Errorf("%s:%d: alert %s is also defined at line %d", alertsFile, r.line, r.alert, prev)
		}
		seen[r.alert] = r.line
		refs, unknown := unknownMetrics(r.expr, known)
		if len(refs) == 0 {
			t.Errorf("%s:%d: alert %s: expr %q references no golive_ or sampleapp_ metric", alertsFile, r.line, r.alert, r.expr)
		}
		for _, name := range unknown {
			t.Errorf("%s:%d: alert %s references %s, which no Go file under internal/ or cmd/sampleapp/ exports", alertsFile, r.line, r.alert, name)
		}
		for _, key := range []string{"for", "severity", "summary", "description"} {
			if _, ok := r.keys[key]; !ok {
				t.Errorf("%s:%d: alert %s has no %s", alertsFile, r.line, r.alert, key)
			}
		}
		if s := r.keys["severity"]; s != "" && !slices.Contains([]string{"info", "warning", "critical"}, s) {
			t.Errorf("%s:%d: alert %s: severity %q is not info, warning or critical", alertsFile, r.line, r.alert, s)
		}
	}
}

// TestCheckerCatchesUnknownMetrics keeps the check above honest.
func TestCheckerCatchesUnknownMetrics(t *testing.T) {
	const text = `groups:
  - name: g
    rules:
      - alert: Inline
        expr: golive_made_up_total > 0 and golive_real_seconds_bucket > 0
        for: 1m
        labels:
          severity: page
      - alert: Block
        expr: >-
          sum(rate(golive_real_total[5m]))
          / sum(rate(golive_other_made_up_total[5m]))
        labels: {}
        annotations:
          summary: s
          description: |
            d
`
	rules := parseRules(t, text)
	if len(rules) != 2 {
		t.Fatalf("parsed %d rules, want 2", len(rules))
	}
	known := map[string]bool{"golive_real_total": true, "golive_real_seconds": true}
	tests := []struct {
		give        rule
		wantUnknown []string
		wantKeys    []string
	}{
		{rules[0], []string{"golive_made_up_total"}, []string{"expr", "for", "labels", "severity"}},
		{rules[1], []string{"golive_other_made_up_total"}, []string{"annotations", "description", "expr", "labels", "summary"}},
	}
	for _, tt := range tests {
		_, unknown := unknownMetrics(tt.give.expr, known)
		if !slices.Equal(unknown, tt.wantUnknown) {
			t.Errorf("%s: unknown = %v, want %v (expr %q)", tt.give.alert, unknown, tt.wantUnknown, tt.give.expr)
		}
		var keys []string
		for k := range tt.give.keys {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tt.wantKeys) {
			t.Errorf("%s: keys = %v, want %v", tt.give.alert, keys, tt.wantKeys)
		}
	}
}
