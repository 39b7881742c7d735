package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// migrateSh is the service's migrate command: release v2 changes the schema
// and loses rows; every other release migrates nothing.
const migrateSh = `#!/bin/sh
set -e
if [ "$GOLIVE_RELEASE" = v2 ]; then
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "
ALTER TABLE users ADD COLUMN email text;
DELETE FROM orders WHERE id % 2 = 0;
CREATE TABLE audit (id serial PRIMARY KEY, what text);
INSERT INTO audit (what) VALUES ('v2 migrated');"
fi
`

// TestBackupBeforeMigrationListedAndRestoredOnRollback: a real agent
// process with a PostgreSQL database deploys v1 then v2 (whose migration
// changes the schema and deletes rows) under approval. The controller lists
// the verified backup taken before v2's migration, under the agent's host.
// `rollback --restore-db ID --yes` (the CLI, without approval) puts the rows
// and the changed table's columns back and v1 serves again; the restore's
// safety backup (the database as it was before) is listed too. A plain
// rollback then warns on stderr that the schema stays migrated. The DSN's
// password reaches neither etcd nor the CLI's output.
func TestBackupBeforeMigrationListedAndRestoredOnRollback(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB(t, "app")
	pg.Exec(t, "app", `
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), total numeric);
INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 300) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 300, g * 1.5 FROM generate_series(1, 120) g;`)

	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr, etcdAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdAddr, "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")

	dir := t.TempDir()
	envFile, script, backups := filepath.Join(dir, "app.env"), filepath.Join(dir, "migrate.sh"), filepath.Join(dir, "backups")
	if err := os.WriteFile(envFile, []byte(fmt.Sprintf("DATABASE_URL=%s\nPG_BIN=%s\n", pg.DSN("app"), pg.BinDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(migrateSh), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &sampleHost{id: "db-1", port: freePort(t), state: t.TempDir()}
	h.conf = filepath.Join(dir, "agent.hcl")
	conf := fmt.Sprintf(`
host_id   = %q
state_dir = %q
service "app" {
  port = %d
  keep_releases = 3
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    env_file     = %q
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    timeout   = "1s"
    successes = 2
    deadline  = "5s"
  }
  database {
    kind        = "postgres"
    dsn_env_key = "DATABASE_URL"
    backup_dir  = %q
  }
  migrate {
    command = [%q]
    timeout = "1m"
  }
}
`, h.id, h.state, h.port, envFile, backups, script)
	if err := os.WriteFile(h.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	h.proc = start(t, h.id, filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--config", h.conf,
		"--metrics-addr", "", "--grpc-addr", "")

	ctl, ctx := testenv.Control(t, ctlAddr, "alice")
	testenv.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "agent holds the token", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 1 && la.Agents[0].FencingToken != 0
	})
	deploy := func(v string, skip ...string) {
		t.Helper()
		resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{h.id}, SkipChecks: skip,
			ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], MinHealthy: durationpb.New(time.Second)})
		if err != nil {
			t.Fatalf("deploy %s: %v", v, err)
		}
		if r := finish(t, ctl, ctx, resp.Rollout.Id); r.State != "succeeded" {
			t.Fatalf("deploy %s: rollout %s %s: %v", v, r.State, r.Reason, r.Hosts)
		}
		if got := h.answers(); got != v {
			t.Fatalf("answers %q after deploying %s", got, v)
		}
	}
	// The first deploy has no backup yet for the pre-live check: skipped
	// (audited). Its own (no-op) migration takes the first backup.
	deploy("v1", "backup")
	deploy("v2")
	counts := func() string {
		return pg.Exec(t, "app", `SELECT (SELECT count(*) FROM users) || ' ' || (SELECT count(*) FROM orders) || ' ' ||
  (SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email') || ' ' ||
  (SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit')`)
	}
	if got := counts(); got != "300 60 1 1" {
		t.Fatalf("after v2's migration: users orders email audit = %q", got)
	}

	// The backup taken (and restore-verified) right before v2's migration.
	var b *golivev1.BackupRecord
	testenv.WaitFor(t, 10*time.Second, "backup listed", func() bool {
		lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app"})
		if err != nil {
			return false
		}
		for _, r := range lb.Backups {
			if r.ReleaseAfter == "v2" {
				b = r
			}
		}
		return b != nil
	})
	rows := map[string]int64{}
	for _, tr := range b.Tables {
		rows[tr.Name] = tr.Rows
	}
	if b.HostId != h.id || b.ReleaseBefore != "v1" || b.VerifiedAt == nil || b.Size <= 0 || len(b.Sha256) != 64 ||
		!strings.HasPrefix(b.Path, backups) || rows["public.users"] != 300 || rows["public.orders"] != 120 {
		t.Fatalf("backup record = %v", b)
	}
	out, err := exec.Command(filepath.Join(bin, "golive-controller"), "--addr", ctlAddr, "backups", "--service", "app").CombinedOutput()
	if err != nil || !strings.Contains(string(out), b.Id) || !strings.Contains(string(out), "v1→v2") || !strings.Contains(string(out), "420") {
		t.Fatalf("backups: %v\n%s", err, out)
	}

	// Without --yes the CLI refuses and nothing is sent.
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, "golive-controller"), append([]string{"--addr", ctlAddr, "--as", "alice"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cli("rollback", "--service", "app", "--restore-db", b.Id); err == nil || !strings.Contains(out, "add --yes") {
		t.Fatalf("restore without --yes: %v\n%s", err, out)
	}
	// Restore under no approval (the operator's safety path).
	if _, err := ctl.Revoke(ctx, &golivev1.RevokeRequest{}); err != nil {
		t.Fatal(err)
	}
	out2, err := cli("rollback", "--service", "app", "--restore-db", b.Id, "--yes", "--wait")
	if err != nil {
		t.Fatalf("rollback --restore-db: %v\n%s", err, out2)
	}
	// Rows and the users table's columns are back, and the restore is
	// exact: the table v2's migration added is gone (dbbackup.Restore).
	if got := counts(); got != "300 120 0 0" {
		t.Fatalf("after the restore: users orders email audit = %q, want the rows and columns from before v2\n%s", got, out2)
	}
	if got := h.answers(); got != "v1" {
		t.Fatalf("answers %q after the restore rollback, want v1", got)
	}
	// The safety backup holds the database as it was before the restore.
	// It is listed once the agent's report reaches the controller.
	var lb *golivev1.ListBackupsResponse
	testenv.WaitFor(t, 30*time.Second, "the safety backup listed", func() bool {
		var err error
		lb, err = ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app", HostId: h.id})
		return err == nil && len(lb.Backups) >= 3 && lb.Backups[0].ReleaseAfter == "pre-restore"
	})
	if lb.Backups[0].CreatedAt.AsTime().Before(b.CreatedAt.AsTime()) || lb.Backups[0].Id == b.Id {
		t.Fatalf("backups after the restore: %v", lb)
	}
	safety := map[string]int64{}
	for _, tr := range lb.Backups[0].Tables {
		safety[tr.Name] = tr.Rows
	}
	if safety["public.orders"] != 60 || safety["public.audit"] != 1 {
		t.Fatalf("safety backup = %v", lb.Backups[0])
	}
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "rollback"})
	if err != nil || len(au.Entries) != 1 || !strings.Contains(au.Entries[0].Detail, "restore_db_backup="+b.Id) {
		t.Fatalf("audit: %v, %v", au, err)
	}
	if strings.Contains(out2, pg.Password) || strings.Contains(string(out), pg.Password) {
		t.Fatal("the DSN's password reached the CLI's output")
	}
	// A plain rollback off v1 (whose migration step ran, after backup
	// v1's) warns on stderr that the schema stays migrated, naming it.
	var v1 *golivev1.BackupRecord
	for _, r := range lb.Backups {
		if r.ReleaseAfter == "v1" {
			v1 = r
		}
	}
	if v1 == nil {
		t.Fatalf("no backup before v1's migration: %v", lb.Backups)
	}
	cmd := exec.Command(filepath.Join(bin, "golive-controller"), "--addr", ctlAddr, "--as", "alice", "rollback", "--service", "app", "--wait")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil || !strings.Contains(stderr.String(), "warning: schema stays migrated: release v1 ran a migration (backup "+v1.Id+" taken before it)") ||
		strings.Contains(string(stdout), "warning") {
		t.Fatalf("plain rollback: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr.String())
	}

	cli3, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli3.Close()
	all, err := cli3.Get(ctx, "/golive/", clientv3.WithPrefix())
	if err != nil || len(all.Kvs) == 0 {
		t.Fatalf("read etcd: %v", err)
	}
	for _, kv := range all.Kvs {
		if strings.Contains(string(kv.Value), pg.Password) || strings.Contains(string(kv.Value), "DATABASE_URL=") {
			t.Fatalf("etcd key %s holds the DSN", kv.Key)
		}
	}
}
