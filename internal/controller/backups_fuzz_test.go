package controller

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// FuzzParseBackup: whatever an agent sends as backup_json, parseBackup does
// not panic, and a record it accepts carries the stream's host and the
// command id, safe names (they become etcd key parts), printable text, and
// only the fields dbbackup.Record names.
func FuzzParseBackup(f *testing.F) {
	good := `{"id":"20261130T220000Z-v2","service":"app","host":"web-9","path":"/b/20261130T220000Z-v2.dump","size":10,` +
		`"sha256":"` + strings.Repeat("ab", 32) + `","database":"app","tables":[{"name":"public.users","rows":3}],` +
		`"release_before":"v1","release_after":"v2","created_at":"2026-11-30T22:00:00Z","verified_at":"2026-11-30T22:00:02Z"}`
	f.Add(good)
	f.Add(strings.Replace(good, `"id":`, `"dsn":"postgres://u:p@h/d","id":`, 1))
	f.Add(strings.Replace(good, `20261130T220000Z-v2"`, `../../x"`, 1))
	f.Add(`{"id":"a","tables":null}`)
	f.Add(`[]`)
	f.Add(``)
	known := map[string]bool{"id": true, "service": true, "host": true, "path": true, "size": true, "sha256": true, "database": true,
		"tables": true, "release_before": true, "release_after": true, "created_at": true, "verified_at": true}
	f.Fuzz(func(t *testing.T, js string) {
		rec, err := parseBackup("web-1", &golivev1.CommandResult{CommandId: "r-0", Service: "app", BackupJson: js})
		if err != nil {
			return
		}
		if rec.HostId != "web-1" || rec.CommandId != "r-0" || rec.Service != "app" {
			t.Fatalf("accepted %q as %v", js, rec)
		}
		for _, n := range []string{rec.Id, rec.ReleaseBefore, rec.ReleaseAfter} {
			if strings.ContainsAny(n, "/\\") || strings.Contains(n, "..") {
				t.Fatalf("unsafe name %q accepted", n)
			}
		}
		// Checked against literal patterns, not the parser's own helpers.
		if !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`).MatchString(rec.Id) ||
			!regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(rec.Sha256) || rec.Size < 0 {
			t.Fatalf("accepted %v", rec)
		}
		texts := []string{rec.Path, rec.Database}
		for _, tr := range rec.Tables {
			texts = append(texts, tr.Name)
			if tr.Rows < 0 {
				t.Fatalf("negative rows accepted: %v", rec)
			}
		}
		for _, s := range texts {
			if strings.IndexFunc(s, unicode.IsControl) >= 0 {
				t.Fatalf("control character accepted in %q", s)
			}
		}
		var top map[string]json.RawMessage
		if json.Unmarshal([]byte(js), &top) == nil {
			for k := range top {
				// encoding/json matches field names case-insensitively.
				if !known[strings.ToLower(k)] {
					t.Fatalf("unknown field %q accepted", k)
				}
			}
		}
	})
}
