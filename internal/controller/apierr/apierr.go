// Package apierr is the controller's one mapping of errors to gRPC status
// codes, shared by the control API and the agent streams. Messages are
// sentences that say what to do next. An error nobody classified is
// codes.Unknown: Unavailable would tell clients to retry something that may
// fail the same way again.
package apierr

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/golive/golive/internal/approval"
)

// The classes of error callers wrap (with %w) to pick a status code.
var (
	ErrNoApproval = errors.New(`automation is disabled: run golive-controller authorize "start automation now" --ttl 1h --reason TEXT (accepted phrases: "start automation now", "start automation", "begin automated deployment", "begin live deployment automation", "activate deployment automation", "activate production deployment", "proceed with automated live deployment", "go live with automation")`)
	ErrInvalid    = errors.New("invalid request")
	ErrNotFound   = errors.New("not found")
	ErrConflict   = errors.New("conflict")
	// ErrUnavailable: a dependency (etcd, the replica's session) is not
	// there now; retrying later may work.
	ErrUnavailable = errors.New("unavailable")
)

// ToStatus maps err to a gRPC status error; nil stays nil and a status
// error passes through.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}

// Code is the status code of err.
func Code(err error) codes.Code {
	var pe *approval.PhraseError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &pe), errors.Is(err, approval.ErrBadTTL), errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, approval.ErrAlreadyActive), errors.Is(err, approval.ErrNotActive),
		errors.Is(err, ErrNoApproval), errors.Is(err, ErrConflict):
		return codes.FailedPrecondition
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}
