package controller

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// ForgetAgent deletes a lost agent's record, agents/<host>: a host taken
// out of service stops showing as lost forever. A connected agent (its
// presence key exists) is refused: it would write its record back at its
// next heartbeat. The delete and its audit entry are one transaction,
// compared on the presence key being absent, so an agent that reconnects
// in between is not forgotten.
func (c *control) ForgetAgent(ctx context.Context, req *golivev1.ForgetAgentRequest) (*golivev1.ForgetAgentResponse, error) {
	actor, src := actorAndSource(ctx)
	if req.HostId == "" {
		return nil, apierr.ToStatus(fmt.Errorf("%w: name the host to forget (see `golive-controller agents`)", apierr.ErrInvalid))
	}
	agentKey, presenceKey := c.s.keys.Agent(req.HostId), c.s.keys.Presence(req.HostId)
	resp, err := c.s.cli.Get(ctx, agentKey, clientv3.WithCountOnly())
	if err != nil {
		return nil, apierr.ToStatus(fmt.Errorf("%w: read agent %s: %v", apierr.ErrUnavailable, req.HostId, err))
	}
	if resp.Count == 0 {
		return nil, apierr.ToStatus(fmt.Errorf("%w: no agent %s (see `golive-controller agents`)", apierr.ErrNotFound, req.HostId))
	}
	entry := audit.Entry{Actor: actor, Action: "forget_agent", Outcome: "forgotten", Reason: req.Reason, Source: src,
		Detail: "host=" + req.HostId}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(presenceKey), "=", 0)}
	_, _, err = c.s.audit.Append(ctx, entry, cmps, []clientv3.Op{clientv3.OpDelete(agentKey)})
	if errors.Is(err, audit.ErrPrecondition) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: agent %s is connected: stop its golive-agent first (forget is for hosts taken out of service)", apierr.ErrConflict, req.HostId))
	}
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	c.s.log.Info("agent forgotten", "actor", actor, "host_id", req.HostId)
	return &golivev1.ForgetAgentResponse{HostId: req.HostId}, nil
}
