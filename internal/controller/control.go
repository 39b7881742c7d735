package controller

import (
	"context"
	"errors"
	"fmt"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/controller/hub"
	"github.com/golive/golive/internal/controller/store"
	"os/user"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/version"
	golivev1 "github.com/golive/golive/proto/golive/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ActorMetadataKey carries the operator's name until mTLS identities do.
const ActorMetadataKey = "golive-actor"

// control implements ControlService on any replica.
type control struct {
	golivev1.UnimplementedControlServiceServer
	s *Server
}

func actorAndSource(ctx context.Context) (string, string) {
	actor := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(ActorMetadataKey); len(v) > 0 {
			actor = v[0]
		}
	}
	if actor == "" {
		actor = "unknown"
		if u, err := user.Current(); err == nil {
			actor = "unknown@" + u.Username
		}
	}
	src := ""
	if p, ok := peer.FromContext(ctx); ok {
		src = p.Addr.String()
	}
	return actor, src
}

func approvalProto(a approval.Approval) *golivev1.Approval {
	if a.Token == 0 || !a.Active(time.Now()) {
		return &golivev1.Approval{}
	}
	return &golivev1.Approval{
		Active: true, FencingToken: a.Token, GrantedBy: a.GrantedBy, Reason: a.Reason,
		GrantedAt: timestamppb.New(a.GrantedAt), ExpiresAt: timestamppb.New(a.ExpiresAt), Phrase: a.Phrase,
	}
}

func (c *control) Authorize(ctx context.Context, req *golivev1.AuthorizeRequest) (*golivev1.AuthorizeResponse, error) {
	actor, src := actorAndSource(ctx)
	var a approval.Approval
	var err error
	rev, how := int64(0), "granted"
	if req.Extend {
		// Same token, later expiry (approval/extend.go).
		a, rev, err = c.s.approvals.Extend(ctx, actor, src, req.Phrase, req.Ttl.AsDuration(), req.Reason)
		how = "extended"
		if errors.Is(err, approval.ErrNoReason) {
			err = fmt.Errorf("%w: %w", apierr.ErrInvalid, err)
		}
	} else {
		a, err = c.s.approvals.Grant(ctx, actor, src, req.Phrase, req.Ttl.AsDuration(), req.Reason)
		rev = a.Token
	}
	if err != nil {
		c.s.log.Warn("authorize refused", "actor", actor, "source", src, "extend", req.Extend, "error", err)
		return nil, apierr.ToStatus(err)
	}
	c.s.log.Info("automation "+how, "actor", actor, "fencing_token", a.Token, "expires_at", a.ExpiresAt)
	c.s.notifier.Notify(notify.Event{Kind: notify.KindApprovalGranted, Actor: actor, Reason: req.Reason, FencingToken: a.Token,
		Details: map[string]string{"expires_at": a.ExpiresAt.UTC().Format(time.RFC3339), "how": how}})
	c.s.hub.Broadcast(hub.ApprovalUpdate(a, rev, how))
	return &golivev1.AuthorizeResponse{Approval: approvalProto(a)}, nil
}

func (c *control) Revoke(ctx context.Context, req *golivev1.RevokeRequest) (*golivev1.RevokeResponse, error) {
	actor, src := actorAndSource(ctx)
	if !c.s.approvals.EtcdDown().IsZero() {
		resp, err := c.s.revokeDuringOutage(actor, src, req.Reason)
		return resp, apierr.ToStatus(err)
	}
	// Agents drop the token before etcd commits the revoke: the safe
	// direction, and the stop no longer waits for the commit. The etcd
	// write below makes it final (or the brake records it).
	c.s.hub.Broadcast(&golivev1.ApprovalUpdate{Revision: c.s.hub.CurrentApproval().Revision, Reason: "revoked"})
	// The brake must answer within 2 s: if etcd does not take the revoke
	// by then, it is recorded on this replica and written later.
	rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	tok, rev, err := c.s.approvals.RevokeRev(rctx, actor, src, req.Reason)
	cancel()
	if err != nil && ctx.Err() == nil && etcdTrouble(err) {
		resp, err := c.s.revokeDuringOutage(actor, src, req.Reason)
		return resp, apierr.ToStatus(err)
	}
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if tok != 0 {
		c.s.log.Info("automation revoked", "actor", actor, "fencing_token", tok)
		c.s.notifier.Notify(notify.Event{Kind: notify.KindApprovalRevoked, Actor: actor, Reason: req.Reason, FencingToken: tok})
		c.s.hub.Broadcast(&golivev1.ApprovalUpdate{Revision: rev, Reason: "revoked"})
	}
	return &golivev1.RevokeResponse{Revoked: tok != 0, FencingToken: tok}, nil
}

func (c *control) GetApproval(ctx context.Context, _ *golivev1.GetApprovalRequest) (*golivev1.GetApprovalResponse, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.GetApprovalResponse{Approval: approvalProto(a)}, nil
}

func (c *control) Status(ctx context.Context, _ *golivev1.StatusRequest) (*golivev1.StatusResponse, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	agents, err := c.s.hub.Agents(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	leader, err := c.s.store.Leader(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	resp := &golivev1.StatusResponse{Approval: approvalProto(a), Replica: c.s.cfg.ReplicaID, Leader: leader, ControllerVersion: version.Version}
	for _, ag := range agents {
		if ag.State == "connected" {
			resp.AgentsConnected++
		} else {
			resp.AgentsLost++
		}
	}
	if resp.Rollouts, err = c.s.rollouts(ctx, "", true, 0); err != nil {
		return nil, apierr.ToStatus(err)
	}
	if resp.Dns, err = c.s.dns.statusRecords(ctx); err != nil {
		return nil, apierr.ToStatus(err)
	}
	return resp, nil
}

func (c *control) ListAgents(ctx context.Context, _ *golivev1.ListAgentsRequest) (*golivev1.ListAgentsResponse, error) {
	agents, err := c.s.hub.Agents(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.ListAgentsResponse{Agents: agents}, nil
}

func (c *control) ListAudit(ctx context.Context, req *golivev1.ListAuditRequest) (*golivev1.ListAuditResponse, error) {
	f := audit.Filter{Action: req.Action, Actor: req.Actor, Limit: int(req.Limit)}
	if req.Since != nil {
		f.Since = req.Since.AsTime()
	}
	if req.Until != nil {
		f.Until = req.Until.AsTime()
	}
	entries, seq, hash, err := c.s.audit.Snapshot(ctx, f)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	resp := &golivev1.ListAuditResponse{HeadSeq: seq, HeadHash: hash}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, auditProto(e))
	}
	return resp, nil
}

func auditProto(e audit.Entry) *golivev1.AuditEntry {
	return &golivev1.AuditEntry{Seq: e.Seq, At: timestamppb.New(e.At), Actor: e.Actor, Action: e.Action, Outcome: e.Outcome,
		Reason: e.Reason, Detail: e.Detail, Source: e.Source, PrevHash: e.PrevHash, Hash: e.Hash}
}

// requireApproval returns the live approval or apierr.ErrNoApproval. It writes nothing.
func (c *control) requireApproval(ctx context.Context) (approval.Approval, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return approval.Approval{}, err
	}
	if !a.Active(time.Now()) {
		return approval.Approval{}, apierr.ErrNoApproval
	}
	return a, nil
}

func (c *control) Deploy(ctx context.Context, req *golivev1.DeployRequest) (*golivev1.DeployResponse, error) {
	actor, src := actorAndSource(ctx)
	if req.Service == "" || req.Release == "" {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --service and --release are required", apierr.ErrInvalid))
	}
	if !req.DryRun {
		// The approval gate comes first: without it nothing is planned,
		// nothing is written.
		if _, err := c.requireApproval(ctx); err != nil {
			c.s.metrics.DeploysRefused.WithLabelValues("no_approval").Inc()
			c.s.log.Warn("deploy refused: no approval", "actor", actor, "service", req.Service, "release", req.Release)
			return nil, apierr.ToStatus(err)
		}
		if req.ArtifactUrl == "" || len(req.Sha256) != 64 {
			return nil, apierr.ToStatus(fmt.Errorf("%w: --artifact URL and --sha256 (64 hex digits) are required", apierr.ErrInvalid))
		}
	}
	sched, metrics, err := c.s.plan(ctx, req)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.DryRun {
		return &golivev1.DeployResponse{Rollout: planView(sched, req)}, nil
	}
	a, err := c.requireApproval(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	r, err := c.s.startDeploy(ctx, actor, src, a.Token, req, sched, metrics)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	c.s.notifier.Notify(notify.Event{Kind: notify.KindRolloutStarted, Actor: actor, RolloutID: r.Id, Service: req.Service, Release: req.Release, FencingToken: a.Token})
	return &golivev1.DeployResponse{Rollout: r}, nil
}

// Rollback is the operator's safety path: allowed without an approval,
// always audited. With restore_db_backup_id (and confirm_restore) it also
// restores that database backup, on the one host that holds it, and puts
// back the release the backup was taken on. A plain rollback off a release
// that ran a migration warns that the schema stays migrated.
func (c *control) Rollback(ctx context.Context, req *golivev1.RollbackRequest) (*golivev1.RollbackResponse, error) {
	actor, src := actorAndSource(ctx)
	var warnings []string
	unnamed := len(req.Hosts) == 0
	if req.RestoreDbBackupId != "" {
		host, b, w, err := c.s.restoreTarget(ctx, req)
		if err != nil {
			return nil, apierr.ToStatus(err)
		}
		req.Hosts, warnings = []string{host}, w
		if req.ToRelease == "" {
			req.ToRelease = b.ReleaseBefore
		}
	}
	if err := validName("service", req.Service); err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.ToRelease != "" {
		if err := validName("release", req.ToRelease); err != nil {
			return nil, apierr.ToStatus(err)
		}
	}
	if id, err := c.s.store.RunningRollout(ctx, req.Service); err != nil {
		return nil, apierr.ToStatus(err)
	} else if id != "" {
		return nil, apierr.ToStatus(runningError(req.Service, id))
	}
	agents, err := c.s.hub.Agents(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if len(req.Hosts) == 0 {
		// The instant revert: every host that runs the service, at once.
		for _, a := range agents {
			for _, sv := range a.Services {
				if sv.Name == req.Service {
					req.Hosts = append(req.Hosts, a.HostId)
				}
			}
		}
		if len(req.Hosts) == 0 {
			return nil, apierr.ToStatus(fmt.Errorf("%w: no host runs service %q", apierr.ErrNotFound, req.Service))
		}
	}
	switch {
	case req.RestoreDbBackupId == "":
		warnings = c.s.migrationWarnings(ctx, req.Service, req.Hosts, agents)
	case unnamed:
		if w := otherHostsWarning(req.Service, req.Hosts[0], req.RestoreDbBackupId, req.ToRelease, agents); w != "" {
			warnings = append(warnings, w)
		}
	}
	if len(req.Hosts) > 0 {
		known := map[string]*golivev1.Agent{}
		for _, a := range agents {
			known[a.HostId] = a
		}
		for _, h := range req.Hosts {
			a := known[h]
			if a == nil {
				return nil, apierr.ToStatus(fmt.Errorf("%w: host %q is not known to the controller (see `golive-controller agents`)", apierr.ErrNotFound, h))
			}
			if !runsService(a, req.Service) {
				return nil, apierr.ToStatus(fmt.Errorf("%w: host %q does not run service %q (its agent config declares %s)", apierr.ErrInvalid, h, req.Service, serviceNames(a)))
			}
		}
	}
	r, err := c.s.startRollback(ctx, actor, src, req, unnamed && req.RestoreDbBackupId == "")
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.RestoreDbBackupId != "" {
		c.s.log.Warn("database restore requested", "actor", actor, "service", req.Service, "backup_id", req.RestoreDbBackupId,
			"host_id", req.Hosts[0], "rollout_id", r.Id, "to_release", req.ToRelease)
	}
	return &golivev1.RollbackResponse{Rollout: r, Warnings: warnings}, nil
}

func (c *control) GetRollout(ctx context.Context, req *golivev1.GetRolloutRequest) (*golivev1.GetRolloutResponse, error) {
	r, err := c.s.store.GetRollout(ctx, req.Id)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.GetRolloutResponse{Rollout: r.View()}, nil
}

func (c *control) ListRollouts(ctx context.Context, req *golivev1.ListRolloutsRequest) (*golivev1.ListRolloutsResponse, error) {
	rs, err := c.s.rollouts(ctx, req.Service, false, int(req.Limit))
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.ListRolloutsResponse{Rollouts: rs}, nil
}

func (c *control) WatchRollout(req *golivev1.WatchRolloutRequest, stream golivev1.ControlService_WatchRolloutServer) error {
	ctx := stream.Context()
	id := req.Id
	if id == "" {
		rs, err := c.s.rollouts(ctx, req.Service, true, 0)
		if err != nil {
			return apierr.ToStatus(err)
		}
		for _, r := range rs {
			if req.Service == "" || r.Service == req.Service {
				id = r.Id
				break
			}
		}
		if id == "" {
			return apierr.ToStatus(fmt.Errorf("%w: no running rollout%s; name one (see `golive-controller history`)", apierr.ErrNotFound, forService(req.Service)))
		}
	}
	return apierr.ToStatus(c.s.store.WatchRollout(ctx, id, func(rec store.Record) (bool, error) {
		r := rec.View()
		return rec.Terminal(), stream.Send(&golivev1.WatchRolloutResponse{Rollout: r, Gate: r.Gate})
	}))
}

func forService(s string) string {
	if s == "" {
		return ""
	}
	return " of service " + s
}

// rolloutRequest records an operator's pause, resume or abort for the
// leader's executor, audited in the same transaction.
func (c *control) rolloutRequest(ctx context.Context, id, kind, reason string) (*golivev1.Rollout, error) {
	actor, src := actorAndSource(ctx)
	rec, err := c.s.store.GetRollout(ctx, id)
	if err != nil {
		return nil, err
	}
	r := rec.View()
	if rec.Terminal() {
		return nil, fmt.Errorf("%w: rollout %s already ended (%s)", apierr.ErrConflict, id, r.State)
	}
	entry := audit.Entry{Actor: actor, Action: kind, Outcome: "requested", Reason: reason, Source: src,
		Detail: fmt.Sprintf("rollout=%s service=%s release=%s", id, r.Service, r.Release)}
	if _, _, err := c.s.audit.Append(ctx, entry, nil, []clientv3.Op{c.s.store.OpPutRequest(id, kind, actor)}); err != nil {
		return nil, err
	}
	return r, nil
}

func (c *control) PauseRollout(ctx context.Context, req *golivev1.PauseRolloutRequest) (*golivev1.PauseRolloutResponse, error) {
	r, err := c.rolloutRequest(ctx, req.Id, store.RequestPause, req.Reason)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.PauseRolloutResponse{Rollout: r}, nil
}

// ResumeRollout needs a live approval: the rollout continues under it.
func (c *control) ResumeRollout(ctx context.Context, req *golivev1.ResumeRolloutRequest) (*golivev1.ResumeRolloutResponse, error) {
	if _, err := c.requireApproval(ctx); err != nil {
		return nil, apierr.ToStatus(err)
	}
	r, err := c.rolloutRequest(ctx, req.Id, store.RequestResume, "")
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.ResumeRolloutResponse{Rollout: r}, nil
}

// AbortRollout is a safety action: allowed without approval, audited.
func (c *control) AbortRollout(ctx context.Context, req *golivev1.AbortRolloutRequest) (*golivev1.AbortRolloutResponse, error) {
	r, err := c.rolloutRequest(ctx, req.Id, store.RequestAbort, req.Reason)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &golivev1.AbortRolloutResponse{Rollout: r}, nil
}

func runsService(a *golivev1.Agent, service string) bool {
	for _, sv := range a.Services {
		if sv.Name == service {
			return true
		}
	}
	return false
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
