package hub

import (
	"context"
	"encoding/json"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Reclaim puts the presence key of every stream this replica holds back
// under the current session's lease, after the session that held them was
// lost (its lease expired: a starved controller sent its keep-alives too
// late). The streams themselves are healthy: closing them, as the replica
// once did, made every agent drop its approval token and halt its step in
// flight, and a loaded controller then paid for a whole fleet reconnecting.
//
// Claims go claimBatch to a transaction. A key that is absent (expired
// with the old lease) or still names this very stream is taken; a key that
// names another stream (the agent moved to another replica meanwhile)
// closes ours. It returns how many streams kept their claim and how many
// were closed.
func (h *Hub) Reclaim(ctx context.Context) (kept, closed int) {
	lease, ok := h.lease()
	if !ok {
		return 0, 0
	}
	h.mu.RLock()
	conns := make([]*agentConn, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.RUnlock()
	for len(conns) > 0 && ctx.Err() == nil {
		n := min(len(conns), claimBatch)
		k, c := h.reclaimBatch(ctx, lease, conns[:n])
		kept, closed = kept+k, closed+c
		conns = conns[n:]
	}
	return kept, closed
}

func (h *Hub) reclaimBatch(ctx context.Context, lease clientv3.LeaseID, batch []*agentConn) (kept, closed int) {
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	reqs := make([]*claimReq, len(batch))
	for i, c := range batch {
		pv, _ := json.Marshal(presence{Replica: h.replica, ConnID: c.connID, Instance: c.instance, Since: c.since, Address: c.address})
		c.mu.Lock()
		rec, _ := protojson.Marshal(c.record)
		c.mu.Unlock()
		reqs[i] = &claimReq{c: c, lease: lease, pv: string(pv), rec: string(rec)}
	}
	fail := func(rs []*claimReq, err error) int {
		for _, r := range rs {
			r.c.close(err)
		}
		return len(rs)
	}
	cmps := make([]clientv3.Cmp, 0, len(reqs))
	puts := make([]clientv3.Op, 0, 2*len(reqs))
	gets := make([]clientv3.Op, 0, len(reqs))
	for _, r := range reqs {
		pkey := h.keys.Presence(r.c.host)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pkey), "=", 0))
		puts = append(puts, h.claimPuts(r)...)
		gets = append(gets, clientv3.OpGet(pkey))
	}
	unavailable := status.Error(codes.Unavailable, "controller could not claim this host again after renewing its etcd session; reconnect")
	resp, err := h.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		h.metrics.EtcdErrors.WithLabelValues("reclaim").Inc()
		return 0, fail(reqs, unavailable)
	}
	h.metrics.ClaimTxns.WithLabelValues("reclaim").Inc()
	if resp.Succeeded {
		return len(reqs), 0
	}
	cmps, puts = cmps[:0], puts[:0]
	var retry []*claimReq
	for i, r := range reqs {
		pkey := h.keys.Presence(r.c.host)
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		switch {
		case len(kvs) == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pkey), "=", 0))
		case presenceConn(kvs[0].Value) == r.c.connID:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(pkey), "=", kvs[0].ModRevision))
		default:
			r.c.close(status.Error(codes.Aborted, "this host's stream moved to another connection"))
			closed++
			continue
		}
		puts = append(puts, h.claimPuts(r)...)
		retry = append(retry, r)
	}
	if len(retry) == 0 {
		return 0, closed
	}
	resp, err = h.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil || !resp.Succeeded {
		// Raced again, or etcd failed: those agents reconnect and claim
		// as any new stream does.
		return 0, closed + fail(retry, unavailable)
	}
	return len(retry), closed
}

func presenceConn(v []byte) string {
	var p presence
	json.Unmarshal(v, &p)
	return p.ConnID
}
