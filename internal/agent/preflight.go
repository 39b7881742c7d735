package agent

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// runPreflight runs a service's pre-live checks for a PreflightAction and
// sends the ack and the result (outcome SUCCEEDED with the checks, FAILED
// when the checks could not run).
//
// TODO(issue 5): run the checks (internal/preflight) from the service's config.
func (a *Agent) runPreflight(cmd *golivev1.Command, enqueue func(*golivev1.ConnectRequest)) {
	pf := cmd.GetPreflight()
	enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: &golivev1.CommandAck{CommandId: cmd.Id, Accepted: true}}})
	enqueue(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: &golivev1.CommandResult{
		CommandId: cmd.Id, Service: pf.Service, Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_FAILED,
		Error: "preflight is not implemented on this agent yet", FinishedAt: timestamppb.New(time.Now())}}})
}
