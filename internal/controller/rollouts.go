package controller

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/audit"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Commands flow: the Deploy/Rollback RPC writes a rollout record and one
// command per host in a single etcd transaction — fenced on the approval's
// create revision for a deploy, so nothing is written once it has ended.
// Every replica watches commands/ and pushes those for hosts whose stream it
// holds (and, on an agent's Hello, every pending one for that host). The
// agent acks, reports progress and a result; the replica stores the result,
// deletes the command and updates the rollout's host entry.
//
//	Deploy RPC --txn(fence)--> rollouts/<id> + commands/<host>/<cmd>
//	replica watch(commands/) --> stream --> agent --> result
//	result --txn--> results/<host>/<cmd>, -commands/<host>/<cmd>, rollouts/<id>

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

func validName(kind, s string) error {
	if !nameRE.MatchString(s) || strings.Contains(s, "..") || strings.HasSuffix(s, ".tmp") {
		return fmt.Errorf("%w: %s %q: use letters, digits, '.', '_', '+' or '-' (no '/', no '..')", errInvalid, kind, s)
	}
	return nil
}

var marshal = protojson.MarshalOptions{UseProtoNames: true}

// startCommands validates req and writes the rollout and its commands.
// token 0 means an operator's rollback (unfenced, audited).
func (s *Server) startCommands(ctx context.Context, actor, source string, kind string, service, release string, hosts []string,
	token int64, build func(host string) *golivev1.Command) (*golivev1.Rollout, error) {
	if err := validName("service", service); err != nil {
		return nil, err
	}
	if release != "" {
		if err := validName("release", release); err != nil {
			return nil, err
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: name the hosts with --hosts h1,h2", errInvalid)
	}
	known, err := s.hub.agents(ctx)
	if err != nil {
		return nil, err
	}
	byHost := map[string]*golivev1.Agent{}
	for _, a := range known {
		byHost[a.HostId] = a
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		a := byHost[h]
		if a == nil {
			return nil, fmt.Errorf("%w: host %q is not known to the controller (see `golive-controller agents`)", errNotFound, h)
		}
		if seen[h] {
			return nil, fmt.Errorf("%w: host %q is named twice", errInvalid, h)
		}
		seen[h] = true
		hasSvc := false
		for _, sv := range a.Services {
			hasSvc = hasSvc || sv.Name == service
		}
		if !hasSvc {
			return nil, fmt.Errorf("%w: host %q does not run service %q (its agent config declares %s)", errInvalid, h, service, serviceNames(a))
		}
	}
	sort.Strings(hosts)
	now := time.Now()
	id := now.UTC().Format("20060102T150405") + "-" + newID()[:6]
	r := &golivev1.Rollout{Id: id, Service: service, Release: release, State: "running", CreatedBy: actor,
		CreatedAt: timestamppb.New(now), UpdatedAt: timestamppb.New(now), FencingToken: token, Kind: kind,
		Waves: []*golivev1.Wave{{Index: 0, Name: "all", Hosts: hosts, State: "running"}}}
	var ops []clientv3.Op
	restore := ""
	for i, h := range hosts {
		cmd := build(h)
		if id := cmd.GetRollback().GetRestoreDbBackupId(); id != "" {
			restore = " restore_db_backup=" + id
		}
		cmd.Id = fmt.Sprintf("%s-%d", id, i)
		cmd.RolloutId = id
		cmd.FencingToken = token
		cmd.IssuedAt = timestamppb.New(now)
		b, _ := marshal.Marshal(cmd)
		ops = append(ops, clientv3.OpPut(s.keys.Command(h, cmd.Id), string(b)))
		r.Hosts = append(r.Hosts, &golivev1.HostProgress{HostId: h, CommandId: cmd.Id, State: "pending", Release: release})
	}
	rb, _ := marshal.Marshal(r)
	ops = append(ops, clientv3.OpPut(s.keys.Rollout(id), string(rb)))
	var cmps []clientv3.Cmp
	if token != 0 {
		cmps = append(cmps, s.approvals.Fence(token))
	}
	entry := audit.Entry{Actor: actor, Action: kind, Outcome: "started", Source: source,
		Detail: fmt.Sprintf("rollout=%s service=%s release=%s hosts=%s token=%d%s", id, service, orNone(release), strings.Join(hosts, ","), token, restore)}
	if _, _, err := s.audit.Append(ctx, entry, cmps, ops); err != nil {
		if errors.Is(err, audit.ErrPrecondition) {
			return nil, errNoApproval
		}
		return nil, err
	}
	s.log.Info("rollout started", "rollout_id", id, "kind", kind, "service", service, "release", release, "hosts", hosts)
	return r, nil
}

func orNone(s string) string {
	if s == "" {
		return "(previous)"
	}
	return s
}

func serviceNames(a *golivev1.Agent) string {
	var n []string
	for _, s := range a.Services {
		n = append(n, s.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// dispatchCommands pushes pending commands to the agents this replica holds.
func (s *Server) dispatchCommands(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := s.cli.Get(ctx, s.keys.Commands(), clientv3.WithPrefix())
		if err != nil {
			s.metrics.etcdErrors.WithLabelValues("commands").Inc()
			sleepCtx(ctx, time.Second)
			continue
		}
		for _, kv := range resp.Kvs {
			s.sendCommandKV(kv.Key, kv.Value)
		}
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Commands(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut && ev.Kv.CreateRevision == ev.Kv.ModRevision {
					s.sendCommandKV(ev.Kv.Key, ev.Kv.Value)
				}
			}
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func (s *Server) sendCommandKV(key, value []byte) {
	rest := strings.TrimPrefix(string(key), s.keys.Commands())
	host, _, ok := strings.Cut(rest, "/")
	if !ok || !s.hub.Holds(host) {
		return
	}
	cmd := &golivev1.Command{}
	if err := protojson.Unmarshal(value, cmd); err != nil {
		s.log.Error("corrupt command in etcd", "key", string(key), "error", err)
		return
	}
	s.hub.SendCommand(host, cmd)
}

// pendingFor sends every pending command of host (on its Hello).
func (s *Server) pendingFor(host string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.HostCommands(host), clientv3.WithPrefix())
	if err != nil {
		s.metrics.etcdErrors.WithLabelValues("commands").Inc()
		return
	}
	for _, kv := range resp.Kvs {
		s.sendCommandKV(kv.Key, kv.Value)
	}
}

// rolloutOf returns the rollout id of a command id (<rollout id>-<n>).
func rolloutOf(commandID string) string {
	if i := strings.LastIndex(commandID, "-"); i > 0 {
		return commandID[:i]
	}
	return commandID
}

// updateRollout applies change to the rollout record in a compare-and-swap
// loop, together with ops, in one transaction. Results retry until ctx ends
// (many hosts finish at once); progress, being advisory, gives up sooner.
func (s *Server) updateRollout(ctx context.Context, id, op string, change func(*golivev1.Rollout), ops ...clientv3.Op) {
	attempts := 5
	if op == "result" {
		attempts = 1 << 30
	}
	for attempt := 0; attempt < attempts && ctx.Err() == nil; attempt++ {
		get, err := s.cli.Get(ctx, s.keys.Rollout(id))
		if err != nil {
			s.metrics.etcdErrors.WithLabelValues(op).Inc()
			return
		}
		all := append([]clientv3.Op(nil), ops...)
		var cmps []clientv3.Cmp
		if len(get.Kvs) == 1 {
			r := &golivev1.Rollout{}
			if err := protojson.Unmarshal(get.Kvs[0].Value, r); err == nil {
				change(r)
				rb, _ := marshal.Marshal(r)
				all = append(all, clientv3.OpPut(s.keys.Rollout(id), string(rb)))
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.keys.Rollout(id)), "=", get.Kvs[0].ModRevision))
			}
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(all...).Commit()
		if err != nil {
			s.metrics.etcdErrors.WithLabelValues(op).Inc()
			return
		}
		if tr.Succeeded {
			return
		}
	}
}

// recordResult stores a command's result and updates its rollout.
func (s *Server) recordResult(host string, res *golivev1.CommandResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A verified backup's record is kept in the result's transaction.
	backupOps, res := s.backupOps(host, res)
	b, _ := marshal.Marshal(res)
	ops := []clientv3.Op{clientv3.OpPut(s.keys.Result(host, res.CommandId), string(b)), clientv3.OpDelete(s.keys.Command(host, res.CommandId))}
	ops = append(ops, backupOps...)
	if get, err := s.cli.Get(ctx, s.keys.Rollout(rolloutOf(res.CommandId))); err == nil && len(get.Kvs) == 1 {
		if rec, err := s.decodeRecord(get.Kvs[0].Value); err == nil && rec.StateJson != "" {
			// The leader's executor owns a fleet rollout's record and reads
			// the result from results/: no contention on the record.
			if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				s.metrics.etcdErrors.WithLabelValues("result").Inc()
			}
			return
		}
	}
	s.updateRollout(ctx, rolloutOf(res.CommandId), "result", func(r *golivev1.Rollout) { applyResult(r, host, res) }, ops...)
}

// recordProgress shows a host's current stage in its rollout.
func (s *Server) recordProgress(host string, p *golivev1.CommandProgress) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.updateRollout(ctx, rolloutOf(p.CommandId), "progress", func(r *golivev1.Rollout) {
		if r.StateJson != "" {
			return
		}
		for _, h := range r.Hosts {
			if h.HostId == host && h.CommandId == p.CommandId && (h.State == "pending" || h.State == "running") {
				h.State, h.Stage = "running", p.Stage
			}
		}
		r.UpdatedAt = timestamppb.Now()
	})
}

func applyResult(r *golivev1.Rollout, host string, res *golivev1.CommandResult) {
	done, failed, rolledBack := 0, 0, 0
	for _, h := range r.Hosts {
		if h.HostId == host && h.CommandId == res.CommandId {
			h.State = outcomeWord(res.Outcome)
			h.Error = res.Error
			h.Stage = "done"
		}
		switch h.State {
		case "succeeded":
			done++
		case "pending", "running":
		case "rolled_back":
			done++
			failed++
			rolledBack++
		default:
			done++
			failed++
		}
	}
	r.UpdatedAt = timestamppb.Now()
	if done == len(r.Hosts) {
		r.State = "succeeded"
		switch {
		case failed > 0 && rolledBack == failed:
			// Every failed host put its previous release back by itself.
			r.State = "rolled_back"
			r.Reason = fmt.Sprintf("%d of %d hosts failed and rolled back to their previous release", failed, len(r.Hosts))
		case failed > 0:
			r.State = "failed"
			r.Reason = fmt.Sprintf("%d of %d hosts failed", failed, len(r.Hosts))
		}
		for _, w := range r.Waves {
			w.State = r.State
		}
	}
}

func outcomeWord(o golivev1.CommandOutcome) string {
	switch o {
	case golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED:
		return "succeeded"
	case golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK:
		return "rolled_back"
	case golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED:
		return "rejected"
	case golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED:
		return "cancelled"
	}
	return "failed"
}

// recordAck stores a refused command as its final, rejected result.
func (s *Server) recordAck(host string, ack *golivev1.CommandAck) {
	if ack.Accepted {
		return
	}
	s.recordResult(host, &golivev1.CommandResult{CommandId: ack.CommandId, Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_REJECTED,
		Error: ack.Reason, FinishedAt: timestamppb.Now()})
}

// activeRollouts lists rollouts still running.
func (s *Server) activeRollouts(ctx context.Context) ([]*golivev1.Rollout, error) {
	resp, err := s.cli.Get(ctx, s.keys.Rollouts(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read rollouts: %w", err)
	}
	var out []*golivev1.Rollout
	for _, kv := range resp.Kvs {
		r := &golivev1.Rollout{}
		if err := protojson.Unmarshal(kv.Value, r); err != nil {
			continue
		}
		if !terminal(r.State) {
			r.StateJson = ""
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *Server) getRollout(ctx context.Context, id string) (*golivev1.Rollout, error) {
	resp, err := s.cli.Get(ctx, s.keys.Rollout(id))
	if err != nil {
		return nil, fmt.Errorf("read rollout: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: rollout %q", errNotFound, id)
	}
	r := &golivev1.Rollout{}
	if err := protojson.Unmarshal(resp.Kvs[0].Value, r); err != nil {
		return nil, fmt.Errorf("rollout %s is corrupt: %w", id, err)
	}
	return r, nil
}

// listRollouts returns rollouts, newest first, optionally of one service.
func (s *Server) listRollouts(ctx context.Context, service string, limit int) ([]*golivev1.Rollout, error) {
	resp, err := s.cli.Get(ctx, s.keys.Rollouts(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, fmt.Errorf("read rollouts: %w", err)
	}
	var out []*golivev1.Rollout
	for _, kv := range resp.Kvs {
		r := &golivev1.Rollout{}
		if err := protojson.Unmarshal(kv.Value, r); err != nil {
			continue
		}
		if service != "" && r.Service != service {
			continue
		}
		r.StateJson = ""
		out = append(out, r)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// terminal reports whether a rollout state is final.
func terminal(state string) bool {
	switch state {
	case "succeeded", "failed", "rolled_back", "aborted":
		return true
	}
	return false
}

// watchRollout sends the rollout now and on every change until it ends.
func (s *Server) watchRollout(ctx context.Context, id string, send func(*golivev1.Rollout) error) error {
	get, err := s.cli.Get(ctx, s.keys.Rollout(id))
	if err != nil {
		return fmt.Errorf("read rollout: %w", err)
	}
	if len(get.Kvs) == 0 {
		return fmt.Errorf("%w: rollout %q", errNotFound, id)
	}
	emit := func(v []byte) (bool, error) {
		r := &golivev1.Rollout{}
		if err := protojson.Unmarshal(v, r); err != nil {
			return false, fmt.Errorf("rollout %s is corrupt: %w", id, err)
		}
		r.StateJson = ""
		return terminal(r.State), send(r)
	}
	if done, err := emit(get.Kvs[0].Value); done || err != nil {
		return err
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Rollout(id), clientv3.WithRev(get.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if done, err := emit(ev.Kv.Value); done || err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}
