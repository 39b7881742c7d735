package controller

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/golive/golive/internal/approval"
)

// toStatus maps errors to gRPC status codes: the one place per server.
// Messages are sentences that say what to do next.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var pe *approval.PhraseError
	switch {
	case errors.As(err, &pe):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, approval.ErrBadTTL):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, approval.ErrAlreadyActive):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, approval.ErrNotActive), errors.Is(err, errNoApproval):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

var (
	errNoApproval = errors.New(`automation is disabled: run golive-controller authorize "start automation now" --ttl 1h --reason TEXT (accepted phrases: "start automation now", "start automation", "begin automated deployment", "begin live deployment automation", "activate deployment automation", "activate production deployment", "proceed with automated live deployment", "go live with automation")`)
	errInvalid    = errors.New("invalid request")
	errNotFound   = errors.New("not found")
	errConflict   = errors.New("conflict")
)
