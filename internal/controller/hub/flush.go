package hub

import (
	"context"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/golive/golive/internal/controller/store"
)

// The etcd write budget of agent records.
//
// A record (agents/<host>, ~1-2 KB) is rewritten only when something its
// readers act on changed, or when its figures are due:
//
//	event                                           written
//	connect (claim), disconnect (release)           in the same txn as presence/<host>
//	release, state, slot, healthy changed           at the next flush (at once)
//	stage (progress), result, first health data     at the next flush (at once)
//	figures only (health/traffic windows, the       every FiguresEvery (5 min) per agent;
//	token held, the heartbeat's time)               while hot, with every heartbeat that moved them
//
// A host is hot for HotFor (10 min) after a command was sent to it or it
// reported on one: the hosts of a running rollout, whose gates need fresh
// figures. Every other agent's figures move on their own (each probe shifts
// the window) and are kept in memory; the replica holding the stream serves
// them (Agents merges its local streams), and etcd gets them every
// FiguresEvery, spread with jitter so that a fleet that reconnected at once
// does not rewrite itself at once. Writes go in transactions of at most
// store.MaxOps puts.
//
// The trade-off: a replica's view of an idle agent held by another replica
// (health figures, the token it holds, last_heartbeat) is up to
// FiguresEvery old; whether it is connected is not (presence/<host> is
// exact), and the replica holding the stream shows all of it live. The token
// is only shown, never relied on: commands are fenced in etcd and checked by
// the agent, so an approval change to 10,000 agents is not 10,000 writes. The leader's gates read
// hosts that are hot, or served by the leader's own replica, fresh. At
// 10,000 idle agents the steady cost is about 10,000/300 s = 33 puts/s in
// one or two transactions per flush tick, instead of one put per agent per
// heartbeat.
const (
	DefaultFiguresEvery = 5 * time.Minute
	DefaultHotFor       = 10 * time.Minute
	// flushTick is how often the flusher looks for figures that came due;
	// changes readers act on are flushed at once.
	flushTick = 5 * time.Second
)

// randDuration is uniform in [0, d).
func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// nextFiguresAfter is when figures written at now are due again: in
// FiguresEvery, ±10%.
func (h *Hub) nextFiguresAfter(now time.Time) time.Time {
	return now.Add(h.figuresEvery*9/10 + randDuration(h.figuresEvery/5))
}

// heat marks c's host hot: its figures go to etcd with every heartbeat
// until HotFor from now.
func (h *Hub) heat(c *agentConn) {
	c.mu.Lock()
	c.hotUntil = time.Now().Add(h.hotFor)
	c.mu.Unlock()
}

// enqueue notes that c's record has changes etcd lacks; urgent asks the
// flusher to run now rather than at its next tick.
func (h *Hub) enqueue(c *agentConn, urgent bool) {
	h.pendMu.Lock()
	h.pending[c] = struct{}{}
	h.pendMu.Unlock()
	if urgent {
		h.requestFlush()
	}
}

func (h *Hub) requestFlush() {
	select {
	case h.flushReq <- struct{}{}:
	default:
	}
}

// RunFlusher writes agent records to etcd in batches: at once when a
// field readers act on changed, figures when they are due (see the table
// above); it looks for due figures every few seconds.
func (h *Hub) RunFlusher(ctx context.Context) {
	t := time.NewTicker(h.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.flushReq:
		}
		h.flush(ctx)
	}
}

func (h *Hub) flush(ctx context.Context) {
	h.pendMu.Lock()
	if len(h.pending) == 0 {
		h.pendMu.Unlock()
		return
	}
	take := h.pending
	h.pending = make(map[*agentConn]struct{}, len(take))
	h.pendMu.Unlock()

	now := time.Now()
	var ops []clientv3.Op
	var wrote, later []*agentConn
	for c := range take {
		select {
		case <-c.done:
			continue // release writes its last record
		default:
		}
		c.mu.Lock()
		due := c.dirty || c.figures && !now.Before(c.nextFigures) || c.moved && now.Before(c.hotUntil)
		switch {
		case due:
			b, _ := protojson.Marshal(c.record)
			ops = append(ops, clientv3.OpPut(h.keys.Agent(c.host), string(b)))
			wrote = append(wrote, c)
			c.dirty, c.figures, c.moved = false, false, false
			c.nextFigures = h.nextFiguresAfter(now)
		case c.figures:
			later = append(later, c)
		}
		c.mu.Unlock()
	}
	for len(ops) > 0 {
		n := min(len(ops), store.MaxOps)
		if _, err := h.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			h.metrics.EtcdErrors.WithLabelValues("flush").Inc()
			h.log.Warn("flush agent records", "error", err)
			// Not written: dirty again, tried at the next flush.
			for _, c := range wrote {
				c.mu.Lock()
				c.dirty = true
				c.mu.Unlock()
			}
			later = append(later, wrote...)
			break
		}
		h.metrics.AgentRecordWrites.Add(float64(n))
		ops, wrote = ops[n:], wrote[n:]
	}
	if len(later) > 0 {
		h.pendMu.Lock()
		for _, c := range later {
			h.pending[c] = struct{}{}
		}
		h.pendMu.Unlock()
	}
}
