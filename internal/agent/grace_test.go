package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestDisconnectGrace: a stream that ends cleanly leaves the token and the
// step in flight alone for the grace; a Welcome within it keeps them; a
// grace that runs out halts the step. A keepalive timeout, or an agent
// that sent no heartbeat for two intervals (frozen), halts at once.
func TestDisconnectGrace(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		frozen    bool
		reconnect bool
		wantHalt  bool
	}{
		{name: "clean end, reconnected within the grace", err: errors.New("rpc error: code = Unavailable desc = EOF"), reconnect: true},
		{name: "clean end, grace runs out", err: errors.New("rpc error: code = Unavailable desc = EOF"), wantHalt: true},
		{name: "keepalive timeout", err: errors.New("rpc error: code = Unavailable desc = keepalive ping failed to receive ACK within timeout"), reconnect: true, wantHalt: true},
		{name: "agent was frozen", err: errors.New("rpc error: code = Unavailable desc = EOF"), frozen: true, reconnect: true, wantHalt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const grace = 300 * time.Millisecond
			a := &Agent{log: hclog.NewNullLogger(), metrics: newMetrics(prometheus.NewRegistry()), inflight: map[string]*inflightCmd{},
				cfg: Config{DisconnectGrace: grace}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a.welcomed(time.Second)
			a.setApproval(&golivev1.ApprovalUpdate{Reason: "granted", Active: true, FencingToken: 7, ExpiresAt: nil})
			op := &inflightCmd{service: "app", token: 7, cancel: cancel}
			a.mu.Lock()
			a.inflight["c1"] = op
			a.mu.Unlock()
			if tt.frozen {
				a.grace.mu.Lock()
				a.grace.lastBeat = time.Now().Add(-3 * time.Second)
				a.grace.mu.Unlock()
			}
			a.streamEnded(true, tt.err)
			a.streamEnded(false, errors.New("connection refused")) // a failed attempt within the grace
			if tt.reconnect {
				a.welcomed(time.Second)
				a.setApproval(&golivev1.ApprovalUpdate{Reason: "sync", Active: true, FencingToken: 7})
			}
			// Wait out the grace (and more): the final state stays.
			deadline := time.Now().Add(3 * grace)
			for time.Now().Before(deadline) {
				if ctx.Err() != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			a.mu.Lock()
			halted := op.halted
			a.mu.Unlock()
			if halted != tt.wantHalt {
				t.Fatalf("halted = %t, want %t (token %d)", halted, tt.wantHalt, a.token.Load())
			}
			if !tt.wantHalt && a.token.Load() != 7 {
				t.Fatalf("token %d after the reconnect, want 7", a.token.Load())
			}
		})
	}
}
