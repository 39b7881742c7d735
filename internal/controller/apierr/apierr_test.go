package apierr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCode(t *testing.T) {
	tests := []struct {
		give error
		want codes.Code
	}{
		{give: nil, want: codes.OK},
		{give: errors.New("disk on fire"), want: codes.Unknown},
		{give: fmt.Errorf("x: %w", ErrInvalid), want: codes.InvalidArgument},
		{give: fmt.Errorf("x: %w", ErrNotFound), want: codes.NotFound},
		{give: fmt.Errorf("x: %w", ErrConflict), want: codes.FailedPrecondition},
		{give: ErrNoApproval, want: codes.FailedPrecondition},
		{give: fmt.Errorf("etcd: %w", ErrUnavailable), want: codes.Unavailable},
		{give: fmt.Errorf("read: %w", context.DeadlineExceeded), want: codes.DeadlineExceeded},
		{give: status.Error(codes.AlreadyExists, "dup"), want: codes.AlreadyExists},
	}
	for _, tt := range tests {
		if got := status.Code(ToStatus(tt.give)); got != tt.want {
			t.Errorf("ToStatus(%v) code = %s, want %s", tt.give, got, tt.want)
		}
	}
}
