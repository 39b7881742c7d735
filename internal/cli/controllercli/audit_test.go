package controllercli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/testenv"
)

// TestAuditVerifyAndExport: the chain verifies, an export verifies offline,
// and a rewritten entry (in etcd or in the export) is named.
func TestAuditVerifyAndExport(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	addr := []string{"--addr", c.GRPCAddr()}
	cmd := func(args ...string) []string { return append(append([]string{}, addr...), args...) }
	mustRun(t, cmd("--as", "alice", "authorize", "Start automation now", "--ttl", "10m", "--reason", "audit test")...)
	mustRun(t, cmd("--as", "bob", "stop", "--reason", "done")...)
	mustRun(t, cmd("--as", "alice", "authorize", "Start automation now", "--ttl", "10m", "--reason", "again")...)

	out := mustRun(t, cmd("audit", "verify")...)
	if !strings.Contains(out, "audit chain intact: 3 entries") {
		t.Fatalf("verify: %s", out)
	}
	out = mustRun(t, cmd("audit", "--actor", "alice")...)
	if strings.Contains(out, "bob") || strings.Count(out, "alice") != 2 {
		t.Fatalf("--actor alice:\n%s", out)
	}
	if out := mustRun(t, cmd("audit", "--since", "1h", "--action", "revoke")...); !strings.Contains(out, "bob") || strings.Contains(out, "authorize") {
		t.Fatalf("--since 1h --action revoke:\n%s", out)
	}
	export := mustRun(t, cmd("audit", "--jsonl")...)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(file, []byte(export), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, "audit", "verify", "--file", file); !strings.Contains(out, "intact: 3 entries") {
		t.Fatalf("verify export: %s", out)
	}
	// Tamper with the export: entry 2 now says carol revoked.
	lines := strings.Split(strings.TrimSpace(export), "\n")
	orig := lines[1]
	var e audit.Entry
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil {
		t.Fatal(err)
	}
	e.Actor = "carol"
	b, _ := json.Marshal(e)
	lines[1] = string(b)
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, "audit", "verify", "--file", file)
	if code != 1 || !strings.Contains(out, "BROKEN at entry 2") {
		t.Fatalf("tampered export: exit %d %s", code, out)
	}
	// Tamper with the live log in etcd.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Client().Put(ctx, c.Keys().AuditEntry(2), string(b)); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, cmd("audit", "verify")...)
	if code != 1 || !strings.Contains(out, "BROKEN at entry 2") || !strings.Contains(out, "altered") {
		t.Fatalf("tampered log: exit %d %s", code, out)
	}
	// Cut the newest entry off: the head still names it.
	if _, err := c.Client().Delete(ctx, c.Keys().AuditEntry(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().Put(ctx, c.Keys().AuditEntry(2), orig); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, cmd("audit", "verify")...)
	if code != 1 || !strings.Contains(out, "BROKEN at entry 3") || !strings.Contains(out, "removed") {
		t.Fatalf("truncated log: exit %d %s", code, out)
	}
}
