package e2e

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/pgtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// canary is the secret the test plants; it must be found nowhere.
const canary = "CANARY-7f3a9b-SECRET"

// TestSecretsNeverLeak plants a canary as the PostgreSQL password in the
// service's DSN and as another secret in the same env file, then runs a real
// agent process and controller process through a deploy with a migration
// (and so a verified backup) under approval, a preflight, and a deploy that
// fails on purpose because the DSN's password is wrong (a variant that
// still contains the canary). The canary appears in no log of either
// daemon, no etcd key or value (command results, backup records and the
// audit log live there), no RPC answer or error, no /metrics output, and no
// file under the agent's state and backup directories.
func TestSecretsNeverLeak(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB(t, "app")
	pg.Exec(t, "app", `CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 50) g;
CREATE TABLE orders (id serial PRIMARY KEY, total numeric);
INSERT INTO orders (total) SELECT g FROM generate_series(1, 20) g;`)
	pg.Exec(t, "app", fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", pg.User, canary))
	pg.Password = canary
	if got := pg.Exec(t, "app", "SELECT count(*) FROM users"); got != "50" {
		t.Fatalf("connect with the canary password: %q", got)
	}

	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr, etcdAddr, agentMetrics := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	ctlProc := start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdAddr, "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")

	dir := t.TempDir()
	envFile, script, backups := filepath.Join(dir, "app.env"), filepath.Join(dir, "migrate.sh"), filepath.Join(dir, "backups")
	writeEnv := func(password string) {
		t.Helper()
		dsn := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/app?sslmode=disable", pg.User, password, pg.Port)
		body := fmt.Sprintf("DATABASE_URL=%s\nPG_BIN=%s\nAPI_TOKEN=%s\n", dsn, pg.BinDir, canary)
		if err := os.WriteFile(envFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeEnv(canary)
	if err := os.WriteFile(script, []byte(migrateSh), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &sampleHost{id: "secret-1", port: freePort(t), state: t.TempDir()}
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
  preflight {
    required_secrets = ["DATABASE_URL", "API_TOKEN"]
  }
}
`, h.id, h.state, h.port, envFile, backups, script)
	if err := os.WriteFile(h.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	h.proc = start(t, h.id, filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--config", h.conf,
		"--metrics-addr", agentMetrics, "--grpc-addr", "")

	// answers collects every RPC answer and error, to be searched at the end.
	var answers strings.Builder
	record := func(m proto.Message, err error) {
		if m != nil {
			answers.WriteString(prototext.Format(m))
		}
		if err != nil {
			answers.WriteString(err.Error() + "\n")
		}
	}
	ctl, ctx := testenv.Control(t, ctlAddr, "alice")
	testenv.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.AgentsConnected == 1
	})
	ap, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour)})
	record(ap, err)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "agent holds the token", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 1 && la.Agents[0].FencingToken != 0
	})
	deploy := func(v string, skip ...string) *golivev1.Rollout {
		t.Helper()
		resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{h.id}, SkipChecks: skip,
			ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], MinHealthy: durationpb.New(time.Second)})
		record(resp, err)
		if err != nil {
			t.Fatalf("deploy %s: %v", v, err)
		}
		r := finish(t, ctl, ctx, resp.Rollout.Id)
		record(r, nil)
		return r
	}
	if r := deploy("v1", "backup"); r.State != "succeeded" {
		t.Fatalf("v1: %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if r := deploy("v2"); r.State != "succeeded" {
		t.Fatalf("v2 (migrates, after a verified backup): %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := pg.Exec(t, "app", "SELECT count(*) FROM orders"); got != "10" {
		t.Fatalf("v2's migration did not run: %s orders", got)
	}
	pf, err := ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app", Release: "v3",
		ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-v3.tar.gz", Sha256: sums["v3"]})
	record(pf, err)
	if err != nil || len(pf.Hosts) != 1 {
		t.Fatalf("preflight: %v %v", pf, err)
	}

	// A wrong password that still contains the canary: the backup before
	// the migration cannot connect, and the deploy fails.
	writeEnv(canary + "-wrong")
	pf, err = ctl.Preflight(ctx, &golivev1.PreflightRequest{Service: "app"})
	record(pf, err)
	if r := deploy("v1"); r.State == "succeeded" {
		t.Fatalf("deploy with the wrong DSN password succeeded: %v", r.Hosts)
	} else {
		t.Logf("deploy with a wrong password: %s: %s %v", r.State, r.Reason, r.Hosts)
	}
	// Past the pre-live database check, the backup step itself fails.
	if r := deploy("v1", "database", "backup"); r.State == "succeeded" || len(r.Hosts) != 1 || !strings.Contains(r.Hosts[0].Error, "backup") {
		t.Fatalf("deploy with the wrong DSN password, checks skipped: %s %s %v", r.State, r.Reason, r.Hosts)
	} else {
		t.Logf("deploy with a wrong password, checks skipped: %s: %s", r.State, r.Hosts[0].Error)
	}
	// A CLI run sees what operators see.
	for _, args := range [][]string{{"status"}, {"agents"}, {"rollouts"}, {"backups", "--service", "app"}, {"audit"}} {
		out, err := execCLI(bin, ctlAddr, args...)
		answers.WriteString(out)
		if err != nil {
			answers.WriteString(err.Error())
		}
	}
	lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app"})
	record(lb, err)
	if err != nil || len(lb.Backups) == 0 {
		t.Fatalf("backups: %v %v", lb, err)
	}
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{})
	record(au, err)
	if err != nil || len(au.Entries) == 0 {
		t.Fatalf("audit: %v %v", au, err)
	}
	la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	record(la, err)
	lr, err := ctl.ListRollouts(ctx, &golivev1.ListRolloutsRequest{})
	record(lr, err)
	st, err := ctl.Status(ctx, &golivev1.StatusRequest{})
	record(st, err)

	found := map[string]int{}
	search := func(where, s string) {
		if n := strings.Count(s, canary); n > 0 {
			found[where] += n
			i := strings.Index(s, canary)
			t.Errorf("the canary is in %s: …%s…", where, s[max(0, i-200):min(len(s), i+100)])
		}
	}
	// The search itself finds the canary where it is.
	if b, err := os.ReadFile(envFile); err != nil || strings.Count(string(b), canary) != 2 {
		t.Fatalf("the env file should hold the canary twice: %v", err)
	}
	search("RPC answers and errors", answers.String())
	for _, u := range []string{"http://" + httpAddr + "/metrics", "http://" + agentMetrics + "/metrics"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Fatalf("GET %s: %s", u, resp.Status)
		}
		search(u, string(b))
	}
	cli3, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli3.Close()
	all, err := cli3.Get(ctx, "", clientv3.WithPrefix())
	if err != nil || len(all.Kvs) == 0 {
		t.Fatalf("read etcd: %v", err)
	}
	for _, kv := range all.Kvs {
		search("etcd key", string(kv.Key))
		search("etcd value of "+string(kv.Key), string(kv.Value))
	}
	// Files the agent wrote: its journals, service logs, backups.
	for _, root := range []string{h.state, backups} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil {
				search("agent file "+p, string(b))
			}
			return nil
		})
	}
	// Logs last: stop both daemons so everything they would log is out.
	h.stop()
	ctlProc.stop()
	search("agent log", h.out.String())
	search("controller log", ctlProc.out.String())
	t.Logf("searched %d etcd keys, %d bytes of RPC answers, agent log %d bytes, controller log %d bytes: canary found %v",
		len(all.Kvs), answers.Len(), len(h.out.String()), len(ctlProc.out.String()), found)
}

func execCLI(bin, addr string, args ...string) (string, error) {
	out, err := exec.Command(filepath.Join(bin, "golive-controller"), append([]string{"--addr", addr}, args...)...).CombinedOutput()
	return string(out), err
}
