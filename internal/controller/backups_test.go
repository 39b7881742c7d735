package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/dbbackup"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// wireAgent speaks AgentService.Connect over real gRPC like an agent does,
// with the service states and results the test chooses.
type wireAgent struct {
	host   string
	mu     sync.Mutex // serializes Send
	stream grpc.BidiStreamingClient[golivev1.ConnectRequest, golivev1.ConnectResponse]
	cmds   chan *golivev1.Command
	acks   chan string
}

func connectWireAgent(t *testing.T, addr, host string, services ...*golivev1.ServiceState) *wireAgent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var a *wireAgent
	var last error
	// The controller refuses streams until its etcd session is up: retry.
	testenv.WaitFor(t, 10*time.Second, host+" connected", func() bool {
		a, last = dialWireAgent(t, conn, host, services)
		return last == nil
	})
	return a
}

func dialWireAgent(t *testing.T, conn *grpc.ClientConn, host string, services []*golivev1.ServiceState) (*wireAgent, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	a := &wireAgent{host: host, stream: stream, cmds: make(chan *golivev1.Command, 16), acks: make(chan string, 16)}
	err = stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: host, InstanceId: host + "-test", AgentVersion: "test", Services: services}}})
	if err != nil {
		cancel()
		return nil, err
	}
	welcome, err := stream.Recv()
	if err != nil || welcome.GetWelcome() == nil {
		cancel()
		return nil, fmt.Errorf("no welcome: %v %v", welcome, err)
	}
	t.Cleanup(cancel)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			switch p := m.Payload.(type) {
			case *golivev1.ConnectResponse_Command:
				a.cmds <- p.Command
			case *golivev1.ConnectResponse_ResultAck:
				a.acks <- p.ResultAck.CommandId
			}
		}
	}()
	return a, nil
}

func (a *wireAgent) send(t *testing.T, m *golivev1.ConnectRequest) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.stream.Send(m); err != nil {
		t.Fatalf("%s: send: %v", a.host, err)
	}
}

// result sends a result and waits for the controller's ack (sent once the
// result is stored).
func (a *wireAgent) result(t *testing.T, res *golivev1.CommandResult) {
	t.Helper()
	a.send(t, &golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: res}})
	timeout := time.After(10 * time.Second)
	for {
		select {
		case id := <-a.acks:
			if id == res.CommandId {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no ack for result %s", a.host, res.CommandId)
		}
	}
}

func (a *wireAgent) command(t *testing.T) *golivev1.Command {
	t.Helper()
	select {
	case c := <-a.cmds:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no command within 10s", a.host)
		return nil
	}
}

func (a *wireAgent) noCommand(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case c := <-a.cmds:
		t.Fatalf("%s got a command it should not have: %v", a.host, c)
	case <-time.After(d):
	}
}

func backupJSON(t *testing.T, rec dbbackup.Record) string {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func svc(name, current, previous string) *golivev1.ServiceState {
	return &golivev1.ServiceState{Name: name, CurrentRelease: current, PreviousRelease: previous, State: "running"}
}

// TestBackupRecordsAndRestoreRollback: a backup record in a deploy's result
// is kept in etcd under the stream's host (not the one the JSON names) and
// listed by ListBackups; a malformed or unknown-field record is dropped and
// the result still stored; a restore rollback needs confirm, an existing
// backup of the service and its host, and goes only to that host with the
// backup id; a plain rollback off a release that migrated warns.
func TestBackupRecordsAndRestoreRollback(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	web1 := connectWireAgent(t, c.GRPCAddr(), "web-1", svc("app", "v2", "v1"))
	web2 := connectWireAgent(t, c.GRPCAddr(), "web-2", svc("app", "v2", "v1"))
	ctl, ctx := testenv.Control(t, c.GRPCAddr(), "alice")
	testenv.WaitFor(t, 10*time.Second, "both agents listed", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 2
	})

	created := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	rec := dbbackup.Record{
		ID: "20261130T220000Z-v2", Service: "app", Host: "somebody-else", Path: "/var/lib/golive/app/backups/20261130T220000Z-v2.dump",
		Size: 12345, SHA256: strings.Repeat("ab", 32), Database: "appdb",
		Tables:        []dbbackup.TableCount{{Name: "public.users", Rows: 3}, {Name: "public.orders", Rows: 7}},
		ReleaseBefore: "v1", ReleaseAfter: "v2", CreatedAt: created, VerifiedAt: created.Add(2 * time.Second),
	}
	// The deploy command ids look like a rollout's (<rollout>-<n>); no
	// rollout record exists for them, which the controller tolerates.
	web1.result(t, &golivev1.CommandResult{CommandId: "20261130T215959-aaaaaa-0", Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
		Release: "v2", PreviousRelease: "v1", FinishedAt: timestamppb.Now(), BackupJson: backupJSON(t, rec)})

	lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if len(lb.Backups) != 1 {
		t.Fatalf("backups = %v", lb.Backups)
	}
	got := lb.Backups[0]
	if got.Id != rec.ID || got.HostId != "web-1" || got.Size != 12345 || got.Sha256 != rec.SHA256 || got.Database != "appdb" ||
		len(got.Tables) != 2 || got.Tables[1].Name != "public.orders" || got.Tables[1].Rows != 7 ||
		got.ReleaseBefore != "v1" || got.ReleaseAfter != "v2" || !got.CreatedAt.AsTime().Equal(created) ||
		!got.VerifiedAt.AsTime().Equal(created.Add(2*time.Second)) || got.CommandId != "20261130T215959-aaaaaa-0" {
		t.Fatalf("backup record = %v", got)
	}

	// Bad records: dropped, the result kept (without the record).
	bad := map[string]string{
		"not json":        `{"id": "x"`,
		"unknown field":   strings.Replace(backupJSON(t, rec), `"id":`, `"dsn":"postgres://u:secret@db/app","id":`, 1),
		"trailing data":   backupJSON(t, rec) + `{}`,
		"id with slash":   strings.Replace(backupJSON(t, rec), rec.ID, "../../etc", 1),
		"other service":   strings.Replace(backupJSON(t, rec), `"service":"app"`, `"service":"db"`, 1),
		"short sha256":    strings.Replace(backupJSON(t, rec), rec.SHA256, "abcd", 1),
		"negative rows":   strings.Replace(backupJSON(t, rec), `"rows":7`, `"rows":-7`, 1),
		"no created_at":   strings.Replace(backupJSON(t, rec), `"created_at":"2026-11-30T22:00:00Z"`, `"created_at":"0001-01-01T00:00:00Z"`, 1),
		"control in path": strings.Replace(backupJSON(t, rec), `.dump"`, `.dump\n"`, 1),
	}
	n := 0
	for name, js := range bad {
		n++
		id := "20261130T220100-bbbbbb-" + string(rune('0'+n))
		web2.result(t, &golivev1.CommandResult{CommandId: id, Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
			Release: "v2", FinishedAt: timestamppb.Now(), BackupJson: js})
		stored, err := c.Client().Get(t.Context(), c.Keys().Result("web-2", id))
		if err != nil || len(stored.Kvs) != 1 {
			t.Fatalf("%s: result not stored: %v", name, err)
		}
		if strings.Contains(string(stored.Kvs[0].Value), "backup_json") || strings.Contains(string(stored.Kvs[0].Value), "secret") {
			t.Fatalf("%s: the stored result kept the bad record: %s", name, stored.Kvs[0].Value)
		}
	}
	all, err := c.Client().Get(t.Context(), c.Keys().Backups(), clientv3.WithPrefix())
	if err != nil || all.Count != 1 {
		t.Fatalf("backups in etcd: %d (want the one good record), %v", all.Count, err)
	}
	if lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app", HostId: "web-2"}); err != nil || len(lb.Backups) != 0 {
		t.Fatalf("web-2's backups = %v, %v", lb, err)
	}
	metrics := scrape(t, c)
	if !strings.Contains(metrics, `golive_controller_backup_records_total{outcome="rejected"} 9`) ||
		!strings.Contains(metrics, `golive_controller_backup_records_total{outcome="stored"} 1`) {
		t.Fatalf("backup record metrics:\n%s", grepLines(metrics, "backup_records"))
	}

	// A newer backup on web-2 lists first; limit and host filter work.
	rec2 := rec
	rec2.ID, rec2.ReleaseBefore, rec2.ReleaseAfter, rec2.CreatedAt = "20261130T221000Z-v2", "v2", "v2", created.Add(10*time.Minute)
	web2.result(t, &golivev1.CommandResult{CommandId: "20261130T220959-cccccc-0", Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
		Release: "v2", FinishedAt: timestamppb.Now(), BackupJson: backupJSON(t, rec2)})
	lb, err = ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app"})
	if err != nil || len(lb.Backups) != 2 || lb.Backups[0].Id != rec2.ID || lb.Backups[0].HostId != "web-2" || lb.Backups[1].Id != rec.ID {
		t.Fatalf("newest first: %v, %v", lb, err)
	}
	if lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app", Limit: 1}); err != nil || len(lb.Backups) != 1 || lb.Backups[0].Id != rec2.ID {
		t.Fatalf("limit 1: %v, %v", lb, err)
	}
	if lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app", HostId: "web-1"}); err != nil || len(lb.Backups) != 1 || lb.Backups[0].Id != rec.ID {
		t.Fatalf("host web-1: %v, %v", lb, err)
	}
	if lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "db"}); err != nil || len(lb.Backups) != 0 {
		t.Fatalf("service db: %v, %v", lb, err)
	}

	// Restore rollbacks that must be refused write nothing.
	refused := []struct {
		name string
		req  *golivev1.RollbackRequest
		code codes.Code
		msg  string
	}{
		{"no confirm", &golivev1.RollbackRequest{Service: "app", RestoreDbBackupId: rec.ID}, codes.InvalidArgument, "add --yes"},
		{"unknown id", &golivev1.RollbackRequest{Service: "app", RestoreDbBackupId: "20200101T000000Z-v0", ConfirmRestore: true}, codes.NotFound, "no backup 20200101T000000Z-v0 of service app"},
		{"other service", &golivev1.RollbackRequest{Service: "db", RestoreDbBackupId: rec.ID, ConfirmRestore: true}, codes.NotFound, "no backup"},
		{"hosts without the holder", &golivev1.RollbackRequest{Service: "app", Hosts: []string{"web-2"}, RestoreDbBackupId: rec.ID, ConfirmRestore: true}, codes.InvalidArgument, "is on host web-1"},
		{"bad id", &golivev1.RollbackRequest{Service: "app", RestoreDbBackupId: "../x", ConfirmRestore: true}, codes.InvalidArgument, "backup id"},
	}
	for _, tt := range refused {
		rev0, n0 := etcdSnapshot(t, c)
		_, err := ctl.Rollback(ctx, tt.req)
		if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
			t.Fatalf("%s: got %v, want %v containing %q", tt.name, err, tt.code, tt.msg)
		}
		if rev1, n1 := etcdSnapshot(t, c); rev1 != rev0 || n1 != n0 {
			t.Fatalf("%s: etcd changed", tt.name)
		}
	}

	// A plain rollback off v2 (which migrated, backup rec) warns, naming
	// the backup to restore; it goes to every host of the service.
	rb, err := ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app"})
	if err != nil {
		t.Fatal(err)
	}
	want := "schema stays migrated: release v2 ran a migration (backup " + rec.ID + " taken before it); the old binary must work with the new schema (expand/contract), or roll back with --restore-db " + rec.ID + " --yes"
	if len(rb.Warnings) != 1 || rb.Warnings[0] != want {
		t.Fatalf("warnings = %q", rb.Warnings)
	}
	for _, a := range []*wireAgent{web1, web2} {
		cmd := a.command(t)
		if cmd.GetRollback().GetRestoreDbBackupId() != "" || cmd.GetRollback().GetToRelease() != "" {
			t.Fatalf("%s: plain rollback command = %v", a.host, cmd)
		}
		a.result(t, &golivev1.CommandResult{CommandId: cmd.Id, Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
			Release: "v1", FinishedAt: timestamppb.Now()})
	}
	testenv.WaitFor(t, 10*time.Second, "plain rollback ends", func() bool {
		r, err := ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: rb.Rollout.Id})
		return err == nil && r.Rollout.State == "succeeded"
	})

	// The restore goes only to web-1 (the holder, even when web-2 is named
	// too), carries the backup id, and puts back release_before (v1).
	rs, err := ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", Hosts: []string{"web-1", "web-2"}, RestoreDbBackupId: rec.ID, ConfirmRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Rollout.Hosts) != 1 || rs.Rollout.Hosts[0].HostId != "web-1" || rs.Rollout.Release != "v1" {
		t.Fatalf("restore rollout = %v", rs.Rollout)
	}
	if len(rs.Warnings) != 1 || !strings.Contains(rs.Warnings[0], "only on web-1") || !strings.Contains(rs.Warnings[0], "web-2 left as they are") {
		t.Fatalf("restore warnings = %q", rs.Warnings)
	}
	cmd := web1.command(t)
	if rb := cmd.GetRollback(); rb.GetRestoreDbBackupId() != rec.ID || rb.GetToRelease() != "v1" || rb.GetService() != "app" || !rb.GetOperator() {
		t.Fatalf("restore command = %v", cmd)
	}
	web2.noCommand(t, time.Second)
	au, err := ctl.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "rollback"})
	if err != nil || len(au.Entries) != 2 || !strings.Contains(au.Entries[0].Detail+au.Entries[1].Detail, "restore_db_backup="+rec.ID) {
		t.Fatalf("audit = %v, %v", au, err)
	}

	// The restore's safety backup (release_after v1, the release put back)
	// is listed, but is no migration: a later plain rollback does not warn
	// about it.
	safety := rec
	safety.ID, safety.ReleaseBefore, safety.ReleaseAfter, safety.CreatedAt = "20261130T223000Z-v1", "v2", "v1", created.Add(30*time.Minute)
	web1.result(t, &golivev1.CommandResult{CommandId: cmd.Id, Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
		Release: "v1", PreviousRelease: "v2", FinishedAt: timestamppb.Now(), BackupJson: backupJSON(t, safety)})
	// A rollback is a rollout: the next one of the service waits for its end.
	waitTerminal(t, ctl, ctx, rs.Rollout.Id, 30*time.Second)
	if lb, err := ctl.ListBackups(ctx, &golivev1.ListBackupsRequest{Service: "app", HostId: "web-1"}); err != nil || len(lb.Backups) != 2 || lb.Backups[0].Id != safety.ID {
		t.Fatalf("safety backup not listed: %v, %v", lb, err)
	}
	web1.send(t, &golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
		Services: []*golivev1.ServiceState{svc("app", "v1", "v2")}}}})
	testenv.WaitFor(t, 10*time.Second, "web-1 reported v1", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		if err != nil {
			return false
		}
		for _, a := range la.Agents {
			if a.HostId == "web-1" && len(a.Services) == 1 && a.Services[0].CurrentRelease == "v1" {
				return true
			}
		}
		return false
	})
	rb, err = ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", Hosts: []string{"web-1"}})
	if err != nil || len(rb.Warnings) != 0 {
		t.Fatalf("rollback off v1 = %v, %v", rb, err)
	}
	cmd = web1.command(t)
	web1.result(t, &golivev1.CommandResult{CommandId: cmd.Id, Service: "app", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED,
		Release: "v0", FinishedAt: timestamppb.Now()})
	waitTerminal(t, ctl, ctx, rb.Rollout.Id, 30*time.Second)

	// A restore with no hosts named runs on the holder and names the other
	// hosts of the service, which keep their binary against the restored
	// database.
	rs, err = ctl.Rollback(ctx, &golivev1.RollbackRequest{Service: "app", RestoreDbBackupId: rec.ID, ConfirmRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Rollout.Hosts) != 1 || rs.Rollout.Hosts[0].HostId != "web-1" || len(rs.Warnings) != 1 ||
		!strings.Contains(rs.Warnings[0], "web-2 also run app") || !strings.Contains(rs.Warnings[0], "rollback --service app --hosts web-2 --to v1") {
		t.Fatalf("restore without hosts: %v, warnings %q", rs.Rollout, rs.Warnings)
	}
	if cmd := web1.command(t); cmd.GetRollback().GetRestoreDbBackupId() != rec.ID {
		t.Fatalf("restore command = %v", cmd)
	}
	web2.noCommand(t, 500*time.Millisecond)
}

func scrape(t *testing.T, c *testenv.Controller) string {
	t.Helper()
	resp, err := http.Get("http://" + c.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
