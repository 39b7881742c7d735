package hub

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/golive/golive/internal/controller/store"
)

// Claims in batches.
//
// A fleet reconnecting after a restart arrives at thousands of streams a
// second; one etcd transaction per claim caps that at etcd's commit rate
// (about 250/s on a loaded 2-core box). Claims therefore queue, and a few
// workers each take whatever is waiting (up to claimBatch, two puts each:
// store.MaxOps) into one transaction that compares every presence key on
// its own (create revision 0) and writes them all. When any compare fails
// the Else branch returns every key's presence, and a second transaction
// retries the batch with each claim's own compare (absent: create revision
// 0; held by the same agent instance: its mod revision, a takeover);
// claims of another instance are refused there. Whatever still conflicts
// falls back to claimOne, one transaction per claim. A claim alone in the
// queue goes straight to claimOne: no latency is added at low rates.
const (
	claimBatch   = store.MaxOps / 2
	claimWorkers = 4
	claimTimeout = 10 * time.Second
)

type claimReq struct {
	c       *agentConn
	lease   clientv3.LeaseID
	pv, rec string
	done    chan error
}

// claim makes this stream the one live stream for its host id, across all
// replicas. A reconnect of the same agent process (same instance id) takes
// over its stale stream; another process is refused.
func (h *Hub) claim(ctx context.Context, c *agentConn) error {
	lease, ok := h.waitLease(ctx, 5*time.Second)
	if !ok {
		return status.Error(codes.Unavailable, "controller replica has no etcd session; try another replica")
	}
	pv, _ := json.Marshal(presence{Replica: h.replica, ConnID: c.connID, Instance: c.instance, Since: c.since, Address: c.address})
	rec, _ := protojson.Marshal(c.record)
	r := &claimReq{c: c, lease: lease, pv: string(pv), rec: string(rec), done: make(chan error, 1)}
	h.claimOnce.Do(func() {
		for range claimWorkers {
			h.goAttach(h.claimWorker)
		}
	})
	select {
	case h.claimq <- r:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-h.ctx.Done():
		return status.Error(codes.Unavailable, "controller is shutting down; reconnect to another replica")
	}
	// Always wait for the answer, even if the stream ended meanwhile: a
	// claim that succeeded must be released by this handler.
	return <-r.done
}

func (h *Hub) claimWorker() {
	for {
		var batch []*claimReq
		select {
		case r := <-h.claimq:
			batch = append(batch, r)
		case <-h.ctx.Done():
			h.drainClaims()
			return
		}
	more:
		for len(batch) < claimBatch {
			select {
			case r := <-h.claimq:
				batch = append(batch, r)
			default:
				break more
			}
		}
		h.claimAll(batch)
	}
}

// drainClaims answers claims still queued when the hub closes.
func (h *Hub) drainClaims() {
	for {
		select {
		case r := <-h.claimq:
			r.done <- status.Error(codes.Unavailable, "controller is shutting down; reconnect to another replica")
		default:
			return
		}
	}
}

func (h *Hub) claimAll(batch []*claimReq) {
	ctx, cancel := context.WithTimeout(h.ctx, claimTimeout)
	defer cancel()
	// One put per key per transaction: a host twice in the queue, or a
	// claim under another lease, goes on its own.
	var many, single []*claimReq
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if seen[r.c.host] || r.lease != batch[0].lease {
			single = append(single, r)
			continue
		}
		seen[r.c.host] = true
		many = append(many, r)
	}
	if len(many) > 1 {
		single = append(single, h.claimMany(ctx, many)...)
	} else {
		single = append(single, many...)
	}
	for _, r := range single {
		r.done <- h.claimOne(ctx, r)
	}
}

func (h *Hub) claimPuts(r *claimReq) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpPut(h.keys.Presence(r.c.host), r.pv, clientv3.WithLease(r.lease)),
		clientv3.OpPut(h.keys.Agent(r.c.host), r.rec),
	}
}

// claimMany claims batch in one or two transactions, answers the claims it
// settled and returns the ones left for claimOne.
func (h *Hub) claimMany(ctx context.Context, batch []*claimReq) []*claimReq {
	cmps := make([]clientv3.Cmp, 0, len(batch))
	puts := make([]clientv3.Op, 0, 2*len(batch))
	gets := make([]clientv3.Op, 0, len(batch))
	for _, r := range batch {
		pkey := h.keys.Presence(r.c.host)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pkey), "=", 0))
		puts = append(puts, h.claimPuts(r)...)
		gets = append(gets, clientv3.OpGet(pkey))
	}
	resp, err := h.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		h.failClaims(batch, err)
		return nil
	}
	h.metrics.ClaimTxns.WithLabelValues("batch").Inc()
	if resp.Succeeded {
		answer(batch, nil)
		return nil
	}
	// Some presence keys exist: each claim with its own compare.
	cmps, puts = cmps[:0], puts[:0]
	var retry []*claimReq
	for i, r := range batch {
		pkey := h.keys.Presence(r.c.host)
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pkey), "=", 0))
		} else if err := h.sameInstance(r.c, kvs[0].Value); err != nil {
			r.done <- err
			continue
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(pkey), "=", kvs[0].ModRevision))
		}
		puts = append(puts, h.claimPuts(r)...)
		retry = append(retry, r)
	}
	if len(retry) < 2 {
		return retry
	}
	resp, err = h.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		h.failClaims(retry, err)
		return nil
	}
	h.metrics.ClaimTxns.WithLabelValues("batch_retry").Inc()
	if resp.Succeeded {
		answer(retry, nil)
		return nil
	}
	return retry // raced again: one by one
}

func answer(rs []*claimReq, err error) {
	for _, r := range rs {
		r.done <- err
	}
}

func (h *Hub) failClaims(rs []*claimReq, err error) {
	h.metrics.EtcdErrors.WithLabelValues("claim").Inc()
	answer(rs, status.Errorf(codes.Unavailable, "record agent in etcd: %v", err))
}

// sameInstance refuses c when presence value v names another agent process.
func (h *Hub) sameInstance(c *agentConn, v []byte) error {
	var old presence
	json.Unmarshal(v, &old)
	if old.Instance == "" || old.Instance != c.instance {
		h.metrics.RefusedConnects.WithLabelValues("duplicate_host_id").Inc()
		return status.Errorf(codes.AlreadyExists,
			"host id %q is already connected (agent instance %s from %s via replica %s since %s); two agents may not share a host id: give this one its own --host-id",
			c.host, old.Instance, old.Address, old.Replica, old.Since.UTC().Format(time.RFC3339))
	}
	return nil
}
