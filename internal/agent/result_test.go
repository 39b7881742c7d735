package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/deploystep"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func TestResultProtoBackupAndWarnings(t *testing.T) {
	rec := &dbbackup.Record{ID: "20261130T220000Z-v2", Service: "app", Host: "h1", SHA256: "ab", Size: 42,
		Tables: []dbbackup.TableCount{{Name: "public.users", Rows: 3}}, ReleaseBefore: "v1", ReleaseAfter: "v2",
		VerifiedAt: time.Date(2026, 11, 30, 22, 0, 1, 0, time.UTC)}
	migrated := "the schema stays migrated by release v2"
	failed := resultProto("app", deploystep.Result{CommandID: "c1", Outcome: deploystep.OutcomeRolledBack, Release: "v2",
		FailedStage: deploystep.StageHealth, Error: "health: unhealthy", Backup: rec,
		Warnings: []string{"migrate: " + migrated},
		Stages: []deploystep.StageReport{
			{Name: deploystep.StageMigrate, Warning: migrated},
			{Name: deploystep.StageHealth, Error: "health: unhealthy"},
		}})
	if failed.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK {
		t.Fatalf("outcome %s", failed.Outcome)
	}
	if !strings.HasPrefix(failed.Error, "health: unhealthy; warning: migrate: "+migrated) {
		t.Fatalf("error %q", failed.Error)
	}
	var got dbbackup.Record
	if err := json.Unmarshal([]byte(failed.BackupJson), &got); err != nil || got.ID != rec.ID || got.Tables[0].Rows != 3 || !got.VerifiedAt.Equal(rec.VerifiedAt) {
		t.Fatalf("backup_json %q: %+v, %v", failed.BackupJson, got, err)
	}
	if st := failed.Stages[0]; !st.Ok || st.Error != "warning: "+migrated {
		t.Fatalf("migrate stage %+v", st)
	}
	if st := failed.Stages[1]; st.Ok || st.Error != "health: unhealthy" {
		t.Fatalf("health stage %+v", st)
	}

	// A success keeps its error empty: warnings are in the stage reports.
	ok := resultProto("app", deploystep.Result{CommandID: "c2", Outcome: deploystep.OutcomeSucceeded, Release: "v2",
		Warnings: []string{"backup: prune backups: permission denied"},
		Stages:   []deploystep.StageReport{{Name: deploystep.StageBackup, Warning: "prune backups: permission denied"}}})
	if ok.Error != "" || ok.BackupJson != "" {
		t.Fatalf("success: error %q backup %q", ok.Error, ok.BackupJson)
	}
	if st := ok.Stages[0]; !st.Ok || st.Error != "warning: prune backups: permission denied" {
		t.Fatalf("backup stage %+v", st)
	}
}

// The runner a configured service gets knows the service's backup dir: a
// rollback asking for a backup recorded there finds it (and only then
// stops at the release, which this host does not have).
func TestServiceRunnerUsesConfiguredBackupDir(t *testing.T) {
	dir := t.TempDir()
	backups := filepath.Join(dir, "backups")
	envFile := filepath.Join(dir, "app.env")
	if err := os.WriteFile(envFile, []byte("DATABASE_URL=postgres://u:p@127.0.0.1:1/app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`
host_id = "host-7"
state_dir = %q
service "app" {
  port = 18080
  exec {
    command  = ["bin/app"]
    env_file = %q
  }
  database {
    backup_dir = %q
  }
  migrate {
    command = ["bin/migrate"]
  }
}
`, filepath.Join(dir, "state"), envFile, backups)
	cfg, err := agentconfig.Parse([]byte(src), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := &dbbackup.Record{ID: "20261130T220000Z-v2", Service: "app", ReleaseBefore: "v1", ReleaseAfter: "v2", VerifiedAt: time.Now()}
	if err := dbbackup.SaveRecord(backups, rec); err != nil {
		t.Fatal(err)
	}
	services, err := ServicesFromConfig(t.Context(), cfg, hclog.NewNullLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer closeServices(services, hclog.NewNullLogger())
	s := services[0]
	if s.BackupDir != backups {
		t.Fatalf("backup dir %q", s.BackupDir)
	}
	res := s.Exec.Run(t.Context(), deploystep.Command{ID: "r1", Kind: deploystep.KindRollback, RestoreBackupID: rec.ID}, nil)
	if res.Outcome != deploystep.OutcomeFailed || !strings.Contains(res.Error, `release "v1" is not on this host`) {
		t.Fatalf("rollback with restore: %s %q", res.Outcome, res.Error)
	}
	res = s.Exec.Run(t.Context(), deploystep.Command{ID: "r2", Kind: deploystep.KindRollback, RestoreBackupID: "20261130T220000Z-v9"}, nil)
	if res.Outcome != deploystep.OutcomeFailed || !strings.Contains(res.Error, "no such verified backup") {
		t.Fatalf("unknown backup: %s %q", res.Outcome, res.Error)
	}
}

// A failure before the swap goes out as FAILED with unchanged set, and a
// stage's note (why it was skipped) as its output.
func TestResultProtoUnchangedAndNotes(t *testing.T) {
	rp := resultProto("app", deploystep.Result{CommandID: "c1", Kind: deploystep.KindDeploy, Outcome: deploystep.OutcomeFailed,
		Release: "v2", Previous: "v1", FailedStage: deploystep.StageFetch, Unchanged: true,
		Error:  "fetch: http status 404: " + deploystep.NothingChanged,
		Stages: []deploystep.StageReport{{Name: deploystep.StageFetch, Error: "fetch: http status 404"}}})
	if rp.Outcome != golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED || !rp.Unchanged || !strings.Contains(rp.Error, "nothing changed on the host") {
		t.Fatalf("result %v", rp)
	}
	rp = resultProto("app", deploystep.Result{CommandID: "c2", Kind: deploystep.KindDeploy, Outcome: deploystep.OutcomeSucceeded,
		Release: "v2", Stages: []deploystep.StageReport{{Name: deploystep.StageFetch, Skipped: true, Note: "not fetched again"}}})
	if rp.Unchanged || rp.Stages[0].Output != "not fetched again" || !rp.Stages[0].Ok {
		t.Fatalf("result %v", rp)
	}
}
