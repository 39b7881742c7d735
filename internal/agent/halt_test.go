package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestHaltSaysWhy: a step is halted when the agent stops holding its
// token; the reason it reports says whether the approval ended or the agent
// lost its controller (the approval may be live: the agent dropped it).
func TestHaltSaysWhy(t *testing.T) {
	tests := []struct {
		give *golivev1.ApprovalUpdate
		want string
	}{
		{give: &golivev1.ApprovalUpdate{Reason: reasonDisconnected}, want: "the agent lost its controller"},
		{give: &golivev1.ApprovalUpdate{Reason: "revoked"}, want: "the approval ended"},
		{give: &golivev1.ApprovalUpdate{Reason: "granted", Active: true, FencingToken: 9}, want: "the approval ended"},
	}
	for _, tt := range tests {
		t.Run(tt.give.Reason, func(t *testing.T) {
			a := &Agent{log: hclog.NewNullLogger(), metrics: newMetrics(prometheus.NewRegistry()), inflight: map[string]*inflightCmd{}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			op := &inflightCmd{service: "app", token: 7, cancel: cancel}
			a.inflight["c1"] = op
			a.inflight["op"] = &inflightCmd{service: "db", operator: true, cancel: func() { t.Error("an operator's rollback was halted") }}
			a.setApproval(tt.give)
			if ctx.Err() == nil || !op.halted || !strings.HasPrefix(op.haltedBy, tt.want) {
				t.Fatalf("after %v: cancelled %v, halted %t by %q; want halted by %q", tt.give, ctx.Err(), op.halted, op.haltedBy, tt.want)
			}
			// The same token again (a reconnect's Welcome) changes nothing.
			op.haltedBy = "first"
			a.setApproval(&golivev1.ApprovalUpdate{Reason: "sync", Active: true, FencingToken: 7})
			if op.haltedBy != "first" {
				t.Fatalf("a second update rewrote the halt reason: %q", op.haltedBy)
			}
		})
	}
}
