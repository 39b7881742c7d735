package controller

import (
	"context"
	"fmt"
	"os/user"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/audit"
	golivev1 "github.com/golive/golive/proto/golive/v1"
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
	a, err := c.s.approvals.Grant(ctx, actor, src, req.Phrase, req.Ttl.AsDuration(), req.Reason)
	if err != nil {
		c.s.log.Warn("authorize refused", "actor", actor, "source", src, "error", err)
		return nil, toStatus(err)
	}
	c.s.log.Info("automation authorized", "actor", actor, "fencing_token", a.Token, "expires_at", a.ExpiresAt)
	c.s.hub.Broadcast(approvalUpdate(a, a.Token, "granted"))
	return &golivev1.AuthorizeResponse{Approval: approvalProto(a)}, nil
}

func (c *control) Revoke(ctx context.Context, req *golivev1.RevokeRequest) (*golivev1.RevokeResponse, error) {
	actor, src := actorAndSource(ctx)
	tok, rev, err := c.s.approvals.RevokeRev(ctx, actor, src, req.Reason)
	if err != nil {
		return nil, toStatus(err)
	}
	if tok != 0 {
		c.s.log.Info("automation revoked", "actor", actor, "fencing_token", tok)
		c.s.hub.Broadcast(&golivev1.ApprovalUpdate{Revision: rev, Reason: "revoked"})
	}
	return &golivev1.RevokeResponse{Revoked: tok != 0, FencingToken: tok}, nil
}

func (c *control) GetApproval(ctx context.Context, _ *golivev1.GetApprovalRequest) (*golivev1.GetApprovalResponse, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &golivev1.GetApprovalResponse{Approval: approvalProto(a)}, nil
}

func (c *control) Status(ctx context.Context, _ *golivev1.StatusRequest) (*golivev1.StatusResponse, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	agents, err := c.s.hub.agents(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &golivev1.StatusResponse{Approval: approvalProto(a), Replica: c.s.cfg.ReplicaID, Leader: c.s.leaderName(ctx)}
	for _, ag := range agents {
		if ag.State == "connected" {
			resp.AgentsConnected++
		} else {
			resp.AgentsLost++
		}
	}
	return resp, nil
}

func (c *control) ListAgents(ctx context.Context, _ *golivev1.ListAgentsRequest) (*golivev1.ListAgentsResponse, error) {
	agents, err := c.s.hub.agents(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &golivev1.ListAgentsResponse{Agents: agents}, nil
}

func (c *control) ListAudit(ctx context.Context, req *golivev1.ListAuditRequest) (*golivev1.ListAuditResponse, error) {
	entries, err := c.s.audit.List(ctx, req.Action, int(req.Limit))
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &golivev1.ListAuditResponse{}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, auditProto(e))
	}
	return resp, nil
}

func auditProto(e audit.Entry) *golivev1.AuditEntry {
	return &golivev1.AuditEntry{Seq: e.Seq, At: timestamppb.New(e.At), Actor: e.Actor, Action: e.Action, Outcome: e.Outcome,
		Reason: e.Reason, Detail: e.Detail, Source: e.Source, PrevHash: e.PrevHash, Hash: e.Hash}
}

// requireApproval returns the live approval or errNoApproval. It writes nothing.
func (c *control) requireApproval(ctx context.Context) (approval.Approval, error) {
	a, _, err := c.s.approvals.Current(ctx)
	if err != nil {
		return approval.Approval{}, err
	}
	if !a.Active(time.Now()) {
		return approval.Approval{}, errNoApproval
	}
	return a, nil
}

func (c *control) Deploy(ctx context.Context, req *golivev1.DeployRequest) (*golivev1.DeployResponse, error) {
	actor, _ := actorAndSource(ctx)
	if req.Service == "" || req.Release == "" {
		return nil, toStatus(fmt.Errorf("%w: --service and --release are required", errInvalid))
	}
	if !req.DryRun {
		if _, err := c.requireApproval(ctx); err != nil {
			c.s.metrics.deploysRefused.WithLabelValues("no_approval").Inc()
			c.s.log.Warn("deploy refused: no approval", "actor", actor, "service", req.Service, "release", req.Release)
			return nil, toStatus(err)
		}
	}
	// The approval gate above is the contract of this version; executing
	// deploys (release engine, rollouts) is not part of it yet.
	return nil, status.Error(codes.Unimplemented, "automation is authorized, but this controller version cannot execute deploys yet (the release engine is not built); nothing was written")
}
