package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/deploystep"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// StageScale is the stage a ScaleAction reports while it runs.
const StageScale = "scale"

// admitScale is why a ScaleAction for s is refused ("": admitted). The
// token was checked by admit (an operator's scale needs none).
func (a *Agent) admitScale(sa *golivev1.ScaleAction, s *Service) string {
	if s.instances == nil || s.Config == nil || s.Config.Scale == nil {
		return fmt.Sprintf("service %q has no scale block on this host: it runs one instance", s.Name)
	}
	sc := s.Config.Scale
	if n := int(sa.Instances); n < sc.Min || n > sc.Max {
		return fmt.Sprintf("%d instances is outside service %q's scale block [min %d, max %d]", sa.Instances, s.Name, sc.Min, sc.Max)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, c := range a.inflight {
		if c.service != s.Name {
			continue
		}
		if !c.scale && !sa.Operator {
			return fmt.Sprintf("service %q has a deploy or rollback in flight (command %s): scaling is frozen until it ends", s.Name, id)
		}
		if c.scale {
			return fmt.Sprintf("service %q is already scaling (command %s)", s.Name, id)
		}
	}
	return ""
}

// startScale runs an admitted ScaleAction and reports its result.
func (a *Agent) startScale(cmd *golivev1.Command) {
	sa := cmd.GetScale()
	s := a.service(sa.Service)
	ctx, cancel := context.WithCancel(a.opCtx)
	ic := &inflightCmd{service: sa.Service, token: cmd.FencingToken, operator: sa.Operator, scale: true, cancel: cancel, stage: StageScale}
	a.mu.Lock()
	a.inflight[cmd.Id] = ic
	a.mu.Unlock()
	a.ops.Add(1)
	go func() {
		defer a.ops.Done()
		defer cancel()
		log := a.log.With("command_id", cmd.Id, "service", sa.Service, "instances", sa.Instances)
		log.Info("scale started", "operator", sa.Operator, "reason", sa.Reason)
		a.sendState()
		began := time.Now()
		stages, err := s.instances.Scale(ctx, int(sa.Instances), sa.Reason)
		res := deploystep.Result{CommandID: cmd.Id, Outcome: deploystep.OutcomeSucceeded, Stages: stages, Finished: time.Now()}
		if s.Dir != nil {
			res.Release, _ = s.Dir.Current()
		}
		if err != nil {
			res.Outcome, res.Error, res.FailedStage = deploystep.OutcomeFailed, err.Error(), StageScale
		}
		rp := resultProto(sa.Service, res)
		if err == nil && len(rp.Stages) == 0 {
			rp.Stages = append(rp.Stages, &golivev1.StageReport{Stage: StageScale, Ok: true, Seconds: time.Since(began).Seconds(),
				Output: fmt.Sprintf("%d instances already serve: nothing to do", sa.Instances)})
		}
		log.Info("scale finished", "outcome", rp.Outcome.String(), "error", err)
		a.metrics.steps.WithLabelValues(sa.Service, "scale_"+strings.ToLower(string(res.Outcome))).Inc()
		a.mu.Lock()
		if ic.halted && err != nil {
			rp.Outcome = golivev1.CommandOutcome_COMMAND_OUTCOME_CANCELLED
			rp.Error = "halted: " + ic.haltedBy + " (" + rp.Error + ")"
		}
		delete(a.inflight, cmd.Id)
		a.unacked[cmd.Id] = rp
		send := a.send
		a.mu.Unlock()
		if send != nil {
			send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
				Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
			send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: rp}})
		}
	}()
}

// sendState sends the services' state now (when a stream is up).
func (a *Agent) sendState() {
	a.mu.Lock()
	send := a.send
	a.mu.Unlock()
	if send != nil {
		send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
			Services: a.services(), FencingToken: a.token.Load(), SentAt: timestamppb.Now()}}})
	}
}
