// Package store is the controller's typed access to its etcd state: every
// key through state.Keys, every rollout through one Record, and every
// transaction that grows with the number of hosts cut to fit etcd's
// per-transaction operation limit.
//
// A rollout is stored once, under rollouts/<id>, as a Record: the
// executor's rollout.State plus what the operator asked. The API's view
// (golivev1.Rollout) is derived from it in one place, Record.View; nothing
// else renders a rollout.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/rollout"
	"github.com/golive/golive/internal/state"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// MaxOps is the most operations golive puts in one etcd transaction,
// comparisons included: below etcd's default --max-txn-ops (128), with room
// for the few fixed operations a caller adds.
const MaxOps = 100

// RecordVersion is the version of a Record's JSON form.
const RecordVersion = 2

// Marshal is the protojson form of every proto value golive stores.
var Marshal = protojson.MarshalOptions{UseProtoNames: true}

// Store reads and writes the controller's state.
type Store struct {
	cli  *clientv3.Client
	keys state.Keys
}

// New returns a Store over cli with keys.
func New(cli *clientv3.Client, keys state.Keys) *Store { return &Store{cli: cli, keys: keys} }

// Client is the etcd client (for transactions that span the store and the
// approval or the audit log).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Keys is the key layout.
func (s *Store) Keys() state.Keys { return s.keys }

// Record is one rollout as stored.
type Record struct {
	State rollout.State
	// Request is a deploy's parameters (nil for a rollback).
	Request   *golivev1.DeployRequest
	CreatedBy string
	// Gate is the current wave's bake figures, refreshed while baking.
	Gate *golivev1.GateStatus
	// Preflight is the pre-live checks' table, once they ran.
	Preflight []*golivev1.HostChecks
	// Metrics is the PromQL analysis every wave's gate runs (parsed from
	// the deploy's files and the service's default when it started).
	Metrics []analysis.Metric
	// Analysis is the current wave's run (AnalysisWave, started with the
	// bake at AnalysisBake); nil before the first bake.
	Analysis     *analysis.State
	AnalysisWave int
	AnalysisBake time.Time
	// ModRevision is the revision the record was read at (not stored).
	ModRevision int64
}

type recordJSON struct {
	Version   int               `json:"version"`
	State     json.RawMessage   `json:"state"`
	Request   json.RawMessage   `json:"request,omitempty"`
	CreatedBy string            `json:"created_by"`
	Gate      json.RawMessage   `json:"gate,omitempty"`
	Preflight []json.RawMessage `json:"preflight,omitempty"`
	Metrics   []analysis.Metric `json:"metrics,omitempty"`
	Analysis  *analysis.State   `json:"analysis,omitempty"`
	// AnalysisWave and AnalysisBake say which bake Analysis belongs to.
	AnalysisWave int       `json:"analysis_wave,omitempty"`
	AnalysisBake time.Time `json:"analysis_bake,omitzero"`
}

// Encode is the stored form of r.
func (r Record) Encode() (string, error) {
	st, err := r.State.Encode()
	if err != nil {
		return "", err
	}
	j := recordJSON{Version: RecordVersion, State: st, CreatedBy: r.CreatedBy, Metrics: r.Metrics,
		Analysis: r.Analysis, AnalysisWave: r.AnalysisWave, AnalysisBake: r.AnalysisBake}
	if j.Request, err = marshalOpt(r.Request); err != nil {
		return "", err
	}
	if j.Gate, err = marshalOpt(r.Gate); err != nil {
		return "", err
	}
	if j.Preflight, err = encodePreflight(r.State.ID, r.Preflight); err != nil {
		return "", err
	}
	b, err := json.Marshal(j)
	return string(b), err
}

func marshalOpt[M proto.Message](m M) (json.RawMessage, error) {
	if proto.Message(m) == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	return Marshal.Marshal(m)
}

// ErrCorrupt marks a stored value golive cannot read.
var ErrCorrupt = errors.New("corrupt record")

// DecodeRecord reads a stored Record.
func DecodeRecord(b []byte) (Record, error) {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if j.Version != RecordVersion {
		return Record{}, fmt.Errorf("%w: rollout record version %d, this controller reads version %d", ErrCorrupt, j.Version, RecordVersion)
	}
	st, err := rollout.Decode(j.State)
	if err != nil {
		return Record{}, err
	}
	r := Record{State: st, CreatedBy: j.CreatedBy, Metrics: j.Metrics, Analysis: j.Analysis, AnalysisWave: j.AnalysisWave, AnalysisBake: j.AnalysisBake}
	if len(j.Request) > 0 {
		r.Request = &golivev1.DeployRequest{}
		if err := protojson.Unmarshal(j.Request, r.Request); err != nil {
			return Record{}, fmt.Errorf("%w: request: %v", ErrCorrupt, err)
		}
	}
	if len(j.Gate) > 0 {
		r.Gate = &golivev1.GateStatus{}
		if err := protojson.Unmarshal(j.Gate, r.Gate); err != nil {
			return Record{}, fmt.Errorf("%w: gate: %v", ErrCorrupt, err)
		}
	}
	if r.Preflight, err = decodePreflight(st.ID, j.Preflight); err != nil {
		return Record{}, err
	}
	return r, nil
}

// View is the API's rollout: derived from the record here and nowhere else.
func (r Record) View() *golivev1.Rollout {
	v := r.State.Proto()
	v.Request, v.CreatedBy, v.Gate, v.Preflight = r.Request, r.CreatedBy, r.Gate, r.Preflight
	v.SkippedChecks = r.Request.GetSkipChecks()
	if a := r.Analysis; a != nil {
		run := &golivev1.AnalysisRun{Wave: uint32(r.AnalysisWave), Phase: string(a.Phase), Summary: a.Summary(), Notes: a.Notes()}
		for _, m := range a.Metrics {
			for _, x := range m.Measurements {
				run.Measurements = append(run.Measurements, &golivev1.Measurement{Metric: x.Metric, Query: x.Query,
					At: timestamppb.New(x.At), Value: x.Value, Verdict: string(x.Verdict), Message: x.Message})
			}
		}
		v.Analysis = run
	}
	return v
}

// Terminal reports whether the rollout ended.
func (r Record) Terminal() bool { return r.State.Phase.Terminal() }

// GetRollout reads rollout id.
func (s *Store) GetRollout(ctx context.Context, id string) (Record, error) {
	resp, err := s.cli.Get(ctx, s.keys.Rollout(id))
	if err != nil {
		return Record{}, unavailable("read rollout", err)
	}
	if len(resp.Kvs) == 0 {
		return Record{}, fmt.Errorf("%w: rollout %q (see `golive-controller history`)", apierr.ErrNotFound, id)
	}
	r, err := DecodeRecord(resp.Kvs[0].Value)
	if err != nil {
		return Record{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	r.ModRevision = resp.Kvs[0].ModRevision
	return r, nil
}

// ListRollouts reads every rollout, newest first. A record it cannot read
// is passed to bad (may be nil) and left out.
func (s *Store) ListRollouts(ctx context.Context, bad func(key string, err error)) ([]Record, error) {
	resp, err := s.cli.Get(ctx, s.keys.Rollouts(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, unavailable("read rollouts", err)
	}
	out := make([]Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r, err := DecodeRecord(kv.Value)
		if err != nil {
			if bad != nil {
				bad(string(kv.Key), err)
			}
			continue
		}
		r.ModRevision = kv.ModRevision
		out = append(out, r)
	}
	return out, nil
}

// WatchRollout calls fn with rollout id now and on every change, until fn
// returns true, an error, or ctx ends (read at R, watch from R+1).
func (s *Store) WatchRollout(ctx context.Context, id string, fn func(Record) (bool, error)) error {
	r, err := s.GetRollout(ctx, id)
	if err != nil {
		return err
	}
	if done, err := fn(r); done || err != nil {
		return err
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Rollout(id), clientv3.WithRev(r.ModRevision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return unavailable("watch rollout", err)
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			r, err := DecodeRecord(ev.Kv.Value)
			if err != nil {
				return fmt.Errorf("rollout %s: %w", id, err)
			}
			r.ModRevision = ev.Kv.ModRevision
			if done, err := fn(r); done || err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// OpPutRollout stores r.
func (s *Store) OpPutRollout(r Record) (clientv3.Op, error) {
	v, err := r.Encode()
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(s.keys.Rollout(r.State.ID), v), nil
}

// CmpRolloutAt holds while rollout id is still at modRev.
func (s *Store) CmpRolloutAt(id string, modRev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.keys.Rollout(id)), "=", modRev)
}

// CmpServiceFree holds while service has no running rollout.
func (s *Store) CmpServiceFree(service string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.keys.ServiceLock(service)), "=", 0)
}

// OpLockService takes service's one-rollout lock for rollout id.
func (s *Store) OpLockService(service, id string) clientv3.Op {
	return clientv3.OpPut(s.keys.ServiceLock(service), id)
}

// OpUnlockService releases service's lock if rollout id holds it.
func (s *Store) OpUnlockService(service, id string) clientv3.Op {
	lock := s.keys.ServiceLock(service)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(lock), "=", id)}, []clientv3.Op{clientv3.OpDelete(lock)}, nil)
}

// RunningRollout returns the id of service's running rollout ("" if none).
func (s *Store) RunningRollout(ctx context.Context, service string) (string, error) {
	resp, err := s.cli.Get(ctx, s.keys.ServiceLock(service))
	if err != nil {
		return "", unavailable("read the service's rollout lock", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Request kinds an operator sends to a running rollout.
const (
	RequestPause  = "pause"
	RequestResume = "resume"
	RequestAbort  = "abort"
)

// OpPutRequest records an operator's request to rollout id.
func (s *Store) OpPutRequest(id, kind, actor string) clientv3.Op {
	return clientv3.OpPut(s.keys.RolloutRequest(id, kind), actor)
}

// Requests reads rollout id's pending requests and the ops that consume them.
func (s *Store) Requests(ctx context.Context, id string) (map[string]bool, []clientv3.Op, error) {
	resp, err := s.cli.Get(ctx, s.keys.RolloutRequests(id), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, unavailable("read rollout requests", err)
	}
	kinds := map[string]bool{}
	rev := map[string]int64{}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		kind := strings.TrimPrefix(string(kv.Key), s.keys.RolloutRequests(id))
		kinds[kind], rev[kind] = true, kv.ModRevision
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	// A pause and a resume taken since the last pass: the later one is the
	// operator's last word, the earlier is consumed with it (both at once
	// resumed the wave's commands and paused it again in one step).
	if kinds[RequestPause] && kinds[RequestResume] {
		if rev[RequestPause] < rev[RequestResume] {
			delete(kinds, RequestPause)
		} else {
			delete(kinds, RequestResume)
		}
	}
	return kinds, ops, nil
}

// OpPutCommand stores a command for host; opts may add a lease.
func (s *Store) OpPutCommand(host string, cmd *golivev1.Command, opts ...clientv3.OpOption) clientv3.Op {
	b, _ := Marshal.Marshal(cmd)
	return clientv3.OpPut(s.keys.Command(host, cmd.Id), string(b), opts...)
}

// OpDeleteCommand removes host's command id.
func (s *Store) OpDeleteCommand(host, id string) clientv3.Op {
	return clientv3.OpDelete(s.keys.Command(host, id))
}

// OpPutResult stores a command's result.
func (s *Store) OpPutResult(host string, res *golivev1.CommandResult) clientv3.Op {
	b, _ := Marshal.Marshal(res)
	return clientv3.OpPut(s.keys.Result(host, res.CommandId), string(b))
}

// ResultKey is the key of host's result of command id.
func (s *Store) ResultKey(host, id string) string { return s.keys.Result(host, id) }

// CommandKey is the key of host's command id.
func (s *Store) CommandKey(host, id string) string { return s.keys.Command(host, id) }

// Result reads host's result of command id (nil, nil when none yet).
func (s *Store) Result(ctx context.Context, host, id string) (*golivev1.CommandResult, error) {
	if id == "" {
		return nil, nil
	}
	resp, err := s.cli.Get(ctx, s.keys.Result(host, id))
	if err != nil {
		return nil, unavailable("read result", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return DecodeResult(resp.Kvs[0].Value)
}

// DecodeResult reads a stored result.
func DecodeResult(b []byte) (*golivev1.CommandResult, error) {
	r := &golivev1.CommandResult{}
	if err := protojson.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: result: %v", ErrCorrupt, err)
	}
	return r, nil
}

// PendingCommands returns the keys of every command not yet answered.
func (s *Store) PendingCommands(ctx context.Context) (map[string]bool, error) {
	resp, err := s.cli.Get(ctx, s.keys.Commands(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, unavailable("read commands", err)
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = true
	}
	return out, nil
}

// HostCommands reads host's pending commands.
func (s *Store) HostCommands(ctx context.Context, host string) ([]*golivev1.Command, error) {
	resp, err := s.cli.Get(ctx, s.keys.HostCommands(host), clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("read commands", err)
	}
	var out []*golivev1.Command
	for _, kv := range resp.Kvs {
		c := &golivev1.Command{}
		if err := protojson.Unmarshal(kv.Value, c); err != nil {
			return nil, fmt.Errorf("%w: command %s: %v", ErrCorrupt, kv.Key, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// QueuedRollbacks returns, by host, the rollback commands of service still
// waiting for their host (a host that was unreachable when its rollout
// ended: the command runs when it is back).
func (s *Store) QueuedRollbacks(ctx context.Context, service string) (map[string][]string, error) {
	resp, err := s.cli.Get(ctx, s.keys.Commands(), clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("read commands", err)
	}
	out := map[string][]string{}
	for _, kv := range resp.Kvs {
		host, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.keys.Commands()), "/")
		c := &golivev1.Command{}
		if !ok || protojson.Unmarshal(kv.Value, c) != nil {
			continue
		}
		if rb := c.GetRollback(); rb != nil && rb.Service == service {
			out[host] = append(out[host], c.Id)
		}
	}
	return out, nil
}

// WatchNewCommands calls fn for every pending command (read at R) and then
// for every command created after R, until ctx ends or the watch breaks
// (then it returns, and the caller lists again).
func (s *Store) WatchNewCommands(ctx context.Context, fn func(host string, cmd *golivev1.Command, err error)) error {
	resp, err := s.cli.Get(ctx, s.keys.Commands(), clientv3.WithPrefix())
	if err != nil {
		return unavailable("read commands", err)
	}
	emit := func(key, value []byte) {
		host, _, ok := strings.Cut(strings.TrimPrefix(string(key), s.keys.Commands()), "/")
		if !ok {
			return
		}
		c := &golivev1.Command{}
		if err := protojson.Unmarshal(value, c); err != nil {
			fn(host, nil, fmt.Errorf("%w: command %s: %v", ErrCorrupt, key, err))
			return
		}
		fn(host, c, nil)
	}
	for _, kv := range resp.Kvs {
		emit(kv.Key, kv.Value)
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Commands(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return unavailable("watch commands", err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut && ev.Kv.CreateRevision == ev.Kv.ModRevision {
				emit(ev.Kv.Key, ev.Kv.Value)
			}
		}
	}
	return ctx.Err()
}

// Commit runs ops under cmps in transactions of at most MaxOps operations
// each (comparisons included), in order. It returns whether every chunk's
// comparisons held; it stops at the first that did not. Callers make every
// chunk safe on its own: the ops must be idempotent, and the comparisons
// must say whether writing them is still right.
func (s *Store) Commit(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (bool, *clientv3.TxnResponse, error) {
	per := MaxOps - len(cmps)
	if per < 1 {
		return false, nil, fmt.Errorf("%d comparisons leave no room for operations in a transaction", len(cmps))
	}
	var last *clientv3.TxnResponse
	for len(ops) > 0 || last == nil {
		n := min(per, len(ops))
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops[:n]...).Commit()
		if err != nil {
			return false, nil, unavailable("etcd transaction", err)
		}
		last = tr
		if !tr.Succeeded {
			return false, tr, nil
		}
		ops = ops[n:]
	}
	return true, last, nil
}

// OpPutBackup stores a backup record.
func (s *Store) OpPutBackup(rec *golivev1.BackupRecord) clientv3.Op {
	b, _ := Marshal.Marshal(rec)
	return clientv3.OpPut(s.keys.Backup(rec.Service, rec.HostId, rec.Id), string(b))
}

// Backups reads the backup records of service ("" all) on host ("" any);
// a record it cannot read is passed to bad (may be nil) and left out.
func (s *Store) Backups(ctx context.Context, service, host string, bad func(key string, err error)) ([]*golivev1.BackupRecord, error) {
	prefix := s.keys.Backups()
	if service != "" {
		prefix = s.keys.ServiceBackups(service)
		if host != "" {
			prefix += host + "/"
		}
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("read backups", err)
	}
	var out []*golivev1.BackupRecord
	for _, kv := range resp.Kvs {
		r := &golivev1.BackupRecord{}
		if err := protojson.Unmarshal(kv.Value, r); err != nil {
			if bad != nil {
				bad(string(kv.Key), err)
			}
			continue
		}
		if host != "" && r.HostId != host {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// ApprovalEnded says how the approval with token ended ("revoked",
// "expired"; "" while it has not, or when unknown).
func (s *Store) ApprovalEnded(ctx context.Context, token int64) (string, error) {
	resp, err := s.cli.Get(ctx, s.keys.ApprovalEnded(token))
	if err != nil {
		return "", unavailable("read approval end", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Leader is the replica named by the election key that leads: the first
// created key under leader/. (A key whose session just died stays first
// until its lease expires: asking each lease's TTL instead reported a new
// leader while the old one still held its lease.)
func (s *Store) Leader(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, s.keys.Leader(), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", unavailable("read leader", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

func unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: etcd: %v: %w", what, err, apierr.ErrUnavailable)
}
