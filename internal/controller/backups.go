package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/rollout"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/dbbackup"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Backup records: an agent that took a verified database backup (before a
// migration, or a restore's safety backup) sends its record in the command's
// result (backup_json, the JSON of dbbackup.Record). recordResult stores it
// at backups/<service>/<host>/<id> in the result's transaction. The record
// is the agent's word: the controller shows it and names its id back to
// that same host for a restore; it never opens the path, and the host is the
// stream's, not the JSON's.

// Limits on what an agent may send; anything beyond is refused, not cut.
const (
	maxBackupJSON   = 4 << 20
	maxBackupTables = 100_000
	maxBackupText   = 4096
)

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// errBadBackup marks a backup record the controller refuses to keep.
var errBadBackup = errors.New("bad backup record")

// parseBackup validates res.BackupJson and maps it into the record the
// controller keeps, with host (the stream's authenticated host) and the
// command id. Unknown fields are refused, so that nothing the record format
// does not name — a DSN above all — is stored. Errors never quote the
// record's values.
func parseBackup(host string, res *golivev1.CommandResult) (*golivev1.BackupRecord, error) {
	if len(res.BackupJson) > maxBackupJSON {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", errBadBackup, len(res.BackupJson), maxBackupJSON)
	}
	dec := json.NewDecoder(strings.NewReader(res.BackupJson))
	dec.DisallowUnknownFields()
	var rec dbbackup.Record
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadBackup, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the record", errBadBackup)
	}
	bad := func(what string) error { return fmt.Errorf("%w: %s", errBadBackup, what) }
	switch {
	case validName("backup id", rec.ID) != nil:
		return nil, bad("invalid id")
	case validName("service", rec.Service) != nil:
		return nil, bad("invalid service")
	case res.Service != "" && rec.Service != res.Service:
		return nil, bad("its service is not the command's")
	case rec.Size < 0:
		return nil, bad("negative size")
	case !sha256RE.MatchString(rec.SHA256):
		return nil, bad("sha256 is not 64 lower-case hex digits")
	case rec.CreatedAt.IsZero():
		return nil, bad("no created_at")
	case !printable(rec.Path) || !printable(rec.Database):
		return nil, bad("path or database name is not printable text of at most 4096 bytes")
	case rec.ReleaseBefore != "" && validName("release", rec.ReleaseBefore) != nil,
		rec.ReleaseAfter != "" && validName("release", rec.ReleaseAfter) != nil:
		return nil, bad("invalid release name")
	case len(rec.Tables) > maxBackupTables:
		return nil, bad("too many tables")
	}
	out := &golivev1.BackupRecord{
		Id: rec.ID, Service: rec.Service, HostId: host, Path: rec.Path, Size: rec.Size, Sha256: rec.SHA256,
		Database: rec.Database, ReleaseBefore: rec.ReleaseBefore, ReleaseAfter: rec.ReleaseAfter,
		CreatedAt: timestamppb.New(rec.CreatedAt), CommandId: res.CommandId,
	}
	if !rec.VerifiedAt.IsZero() {
		out.VerifiedAt = timestamppb.New(rec.VerifiedAt)
	}
	for _, t := range rec.Tables {
		if t.Name == "" || !printable(t.Name) || t.Rows < 0 {
			return nil, bad("a table has no printable name or a negative row count")
		}
		out.Tables = append(out.Tables, &golivev1.TableRows{Name: t.Name, Rows: t.Rows})
	}
	return out, nil
}

// printable reports whether s is valid UTF-8 without control characters
// and at most maxBackupText bytes.
func printable(s string) bool {
	if len(s) > maxBackupText || !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, unicode.IsControl) < 0
}

// backupOps returns the etcd ops that store the backup record res carries,
// if any. A record that fails validation is logged, counted and dropped:
// the result itself is still stored (without the record).
func (s *Server) backupOps(host string, res *golivev1.CommandResult) ([]clientv3.Op, *golivev1.CommandResult) {
	if res.BackupJson == "" {
		return nil, res
	}
	rec, err := parseBackup(host, res)
	if err != nil {
		s.metrics.BackupRecords.WithLabelValues("rejected").Inc()
		s.log.Warn("dropped the backup record of a result", "host_id", host, "command_id", res.CommandId, "error", err)
		clean := proto.Clone(res).(*golivev1.CommandResult)
		clean.BackupJson = ""
		return nil, clean
	}
	s.metrics.BackupRecords.WithLabelValues("stored").Inc()
	s.log.Info("backup recorded", "host_id", host, "service", rec.Service, "backup_id", rec.Id, "command_id", res.CommandId,
		"release_before", rec.ReleaseBefore, "release_after", rec.ReleaseAfter)
	return []clientv3.Op{s.store.OpPutBackup(rec)}, res
}

// listBackups returns the backup records of service (all services when
// empty) made on host (any when empty), newest first.
func (s *Server) listBackups(ctx context.Context, service, host string) ([]*golivev1.BackupRecord, error) {
	out, err := s.store.Backups(ctx, service, host, func(key string, err error) {
		s.log.Error("corrupt backup record in etcd", "key", key, "error", err)
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].CreatedAt.AsTime(), out[j].CreatedAt.AsTime()
		if !a.Equal(b) {
			return a.After(b)
		}
		if out[i].Id != out[j].Id {
			return out[i].Id > out[j].Id
		}
		return out[i].HostId < out[j].HostId
	})
	return out, nil
}

// ListBackups lists backup records, newest first.
func (c *control) ListBackups(ctx context.Context, req *golivev1.ListBackupsRequest) (*golivev1.ListBackupsResponse, error) {
	if req.Service != "" {
		if err := validName("service", req.Service); err != nil {
			return nil, apierr.ToStatus(err)
		}
	}
	if req.HostId != "" && !hub.ValidHostID(req.HostId) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: host id %q: use letters, digits, '.', '_' or '-'", apierr.ErrInvalid, req.HostId))
	}
	recs, err := c.s.listBackups(ctx, req.Service, req.HostId)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.Limit > 0 && len(recs) > int(req.Limit) {
		recs = recs[:req.Limit]
	}
	return &golivev1.ListBackupsResponse{Backups: recs}, nil
}

// restoreTarget checks a rollback that restores backup id of req.Service
// and returns the one host it runs on, the backup, and warnings. The backup
// must exist; when hosts were named they must include its host.
func (s *Server) restoreTarget(ctx context.Context, req *golivev1.RollbackRequest) (string, *golivev1.BackupRecord, []string, error) {
	id := req.RestoreDbBackupId
	if err := validName("service", req.Service); err != nil {
		return "", nil, nil, err
	}
	if err := validName("backup id", id); err != nil {
		return "", nil, nil, err
	}
	if !req.ConfirmRestore {
		return "", nil, nil, fmt.Errorf("%w: restoring backup %s replaces the database of service %s with its contents "+
			"(the agent takes a safety backup of the current database first): add --yes to confirm", apierr.ErrInvalid, id, req.Service)
	}
	all, err := s.listBackups(ctx, req.Service, "")
	if err != nil {
		return "", nil, nil, err
	}
	var holders []*golivev1.BackupRecord
	for _, b := range all {
		if b.Id == id {
			holders = append(holders, b)
		}
	}
	if len(holders) == 0 {
		return "", nil, nil, fmt.Errorf("%w: no backup %s of service %s (see `golive-controller backups --service %s`)", apierr.ErrNotFound, id, req.Service, req.Service)
	}
	var hostsOf []string
	for _, b := range holders {
		hostsOf = append(hostsOf, b.HostId)
	}
	if len(req.Hosts) > 0 {
		var named []*golivev1.BackupRecord
		for _, b := range holders {
			if slices.Contains(req.Hosts, b.HostId) {
				named = append(named, b)
			}
		}
		if len(named) == 0 {
			return "", nil, nil, fmt.Errorf("%w: backup %s is on host %s and the restore runs only there: name it with --hosts %s, or leave --hosts out",
				apierr.ErrInvalid, id, strings.Join(hostsOf, ", "), hostsOf[0])
		}
		holders = named
	}
	if len(holders) > 1 {
		return "", nil, nil, fmt.Errorf("%w: hosts %s each hold a backup %s: name one with --hosts", apierr.ErrInvalid, strings.Join(hostsOf, ", "), id)
	}
	b := holders[0]
	var warnings []string
	var left []string
	for _, h := range req.Hosts {
		if h != b.HostId {
			left = append(left, h)
		}
	}
	if len(left) > 0 {
		warnings = append(warnings, fmt.Sprintf("the restore runs only on %s, the host that holds backup %s; %s left as they are (roll them back without --restore-db)",
			b.HostId, id, strings.Join(left, ", ")))
	}
	return b.HostId, b, warnings, nil
}

// otherHostsWarning names the hosts besides holder that run service: a
// restore leaves their binary as it is, against the restored database.
func otherHostsWarning(service, holder, id, release string, agents []*golivev1.Agent) string {
	var others []string
	for _, a := range agents {
		if a.HostId == holder {
			continue
		}
		for _, sv := range a.Services {
			if sv.Name == service {
				others = append(others, a.HostId)
			}
		}
	}
	if len(others) == 0 {
		return ""
	}
	sort.Strings(others)
	to := ""
	if release != "" {
		to = " --to " + release
	}
	return fmt.Sprintf("the restore runs only on %s, the host that holds backup %s; %s also run %s and keep their release against the restored database: "+
		"roll them back too (golive-controller rollback --service %s --hosts %s%s)", holder, id, strings.Join(others, ", "), service, service, strings.Join(others, ","), to)
}

// migrationWarnings warns, for a plain rollback of service on hosts, about
// each current release that ran a migration: a binary rollback leaves the
// migrated schema in place. A restore's safety backup is not a migration's
// and is skipped.
func (s *Server) migrationWarnings(ctx context.Context, service string, hosts []string, agents []*golivev1.Agent) []string {
	current := map[string]bool{}
	for _, a := range agents {
		if !slices.Contains(hosts, a.HostId) {
			continue
		}
		for _, sv := range a.Services {
			if sv.Name == service && sv.CurrentRelease != "" {
				current[sv.CurrentRelease] = true
			}
		}
	}
	if len(current) == 0 {
		return nil
	}
	all, err := s.listBackups(ctx, service, "")
	if err != nil {
		s.log.Warn("cannot check for migrations before a rollback", "service", service, "error", err)
		return []string{fmt.Sprintf("could not check whether the current release of %s ran a migration (%v): if it did, the schema stays migrated", service, err)}
	}
	kinds := map[string]string{}
	var warnings []string
	for _, b := range all { // newest first: the backup taken right before the migration
		if !current[b.ReleaseAfter] || b.ReleaseAfter == b.ReleaseBefore {
			continue
		}
		rid := rolloutOf(b.CommandId)
		if _, ok := kinds[rid]; !ok {
			kinds[rid] = ""
			if r, err := s.store.GetRollout(ctx, rid); err == nil {
				kinds[rid] = string(r.State.Plan.Kind)
			}
		}
		if kinds[rid] == string(rollout.KindRollback) {
			continue
		}
		delete(current, b.ReleaseAfter)
		warnings = append(warnings, fmt.Sprintf("schema stays migrated: release %s ran a migration (backup %s taken before it); "+
			"the old binary must work with the new schema (expand/contract), or roll back with --restore-db %s --yes", b.ReleaseAfter, b.Id, b.Id))
	}
	return warnings
}

// rolloutOf returns the rollout id of a command id (<rollout id>-<n>).
func rolloutOf(commandID string) string {
	if i := strings.LastIndex(commandID, "-"); i > 0 {
		return commandID[:i]
	}
	return commandID
}
