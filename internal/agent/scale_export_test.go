package agent

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golive/golive/internal/router"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// NewCommandAgent is an agent around services with no stream, holding
// approval token, for driving commands in the external tests.
func NewCommandAgent(ctx context.Context, services []Service, token int64, log hclog.Logger) *Agent {
	a := &Agent{cfg: Config{HostID: "h1", Services: services}, log: log, metrics: newMetrics(prometheus.NewRegistry()),
		inflight: map[string]*inflightCmd{}, unacked: map[string]*golivev1.CommandResult{}, opCtx: ctx}
	a.token.Store(token)
	return a
}

// Admit is admit, Start is start, for the external tests.
func (a *Agent) Admit(cmd *golivev1.Command) *golivev1.CommandAck { return a.admit(cmd) }
func (a *Agent) Start(cmd *golivev1.Command)                      { a.start(cmd) }

// Result is the command's result once it finished (nil before).
func (a *Agent) Result(id string) *golivev1.CommandResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unacked[id]
}

// SetToken sets the approval token the agent holds.
func (a *Agent) SetToken(n int64) { a.token.Store(n) }

// Services is the services' reported state.
func (a *Agent) Services() []*golivev1.ServiceState { return a.services() }

// Busy marks (or, with busy false, clears) a deploy in flight for service.
func (a *Agent) Busy(service, id string, busy bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if busy {
		a.inflight[id] = &inflightCmd{service: service, token: a.token.Load(), cancel: func() {}}
	} else {
		delete(a.inflight, id)
	}
}

// WaitOps waits for the commands the agent runs.
func (a *Agent) WaitOps() { a.ops.Wait() }

// InstancePool is the router pool of a scaled service (nil otherwise).
func (s Service) InstancePool() router.Pool {
	if s.instances == nil {
		return nil
	}
	return s.instances.pool
}

// Revoke is the approval ending, as the controller announces it.
func (a *Agent) Revoke() { a.setApproval(&golivev1.ApprovalUpdate{Reason: "revoked"}) }
