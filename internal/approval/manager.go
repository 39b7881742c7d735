package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/state"
)

// Record is the value stored under the approval key.
type Record struct {
	GrantedBy string    `json:"granted_by"`
	Reason    string    `json:"reason"`
	Phrase    string    `json:"phrase"`
	GrantedAt time.Time `json:"granted_at"`
	ExpiresAt time.Time `json:"expires_at"`
	LeaseID   int64     `json:"lease_id"`
	Source    string    `json:"source,omitempty"`
}

// Approval is the approval as seen at a revision.
type Approval struct {
	Record
	// Token is the fencing token (the key's create revision); 0 when none.
	Token int64
	// Refused: this replica refuses the approval although its key is in
	// etcd: a revoke taken while etcd had no quorum waits to be written, or
	// etcd just came back (see Brake).
	Refused bool
}

// Active reports whether the approval allows automation at now.
func (a Approval) Active(now time.Time) bool {
	return a.Token != 0 && !a.Refused && now.Before(a.ExpiresAt)
}

// Errors the gRPC layer maps to status codes.
var (
	ErrAlreadyActive = errors.New("automation is already authorized")
	ErrNotActive     = errors.New("automation is not authorized")
	ErrBadTTL        = errors.New("bad ttl")
)

// Manager grants, revokes and reads the approval.
type Manager struct {
	cli    *clientv3.Client
	keys   state.Keys
	audit  *audit.Log
	maxTTL time.Duration
	now    func() time.Time

	brake *Brake
	kick  chan struct{}
	mu    sync.Mutex
	// down is when etcd stopped answering the watch (zero: it answers);
	// settle is until when approvals stay refused after an outage.
	down, settle time.Time
}

// NewManager returns a Manager. maxTTL bounds every grant.
func NewManager(cli *clientv3.Client, keys state.Keys, log *audit.Log, maxTTL time.Duration) *Manager {
	return &Manager{cli: cli, keys: keys, audit: log, maxTTL: maxTTL, now: time.Now, kick: make(chan struct{}, 1)}
}

// MaxTTL is the longest approval this manager grants.
func (m *Manager) MaxTTL() time.Duration { return m.maxTTL }

// Grant turns automation on for ttl when phrase is accepted. A refused
// phrase or ttl writes nothing.
func (m *Manager) Grant(ctx context.Context, actor, source, phrase string, ttl time.Duration, reason string) (Approval, error) {
	canon, ok := MatchPhrase(phrase)
	if !ok {
		return Approval{}, &PhraseError{Given: phrase}
	}
	if ttl <= 0 {
		return Approval{}, fmt.Errorf("%w: ttl must be positive, e.g. --ttl 1h", ErrBadTTL)
	}
	if ttl > m.maxTTL {
		return Approval{}, fmt.Errorf("%w: ttl %s exceeds the controller's maximum %s (--max-approval-ttl)", ErrBadTTL, ttl, m.maxTTL)
	}
	if ttl < time.Second {
		return Approval{}, fmt.Errorf("%w: ttl %s is under 1s", ErrBadTTL, ttl)
	}
	cur, _, err := m.Current(ctx)
	if err != nil {
		return Approval{}, err
	}
	if cur.Token != 0 && cur.Active(m.now()) {
		return Approval{}, fmt.Errorf("%w (token %d, by %s, until %s): run `golive-controller revoke` first to replace it",
			ErrAlreadyActive, cur.Token, cur.GrantedBy, cur.ExpiresAt.UTC().Format(time.RFC3339))
	}
	// The lease outlives expires_at by a little: expires_at is the truth,
	// the lease is the backstop that removes the key if no replica is alive.
	secs := int64((ttl + time.Second - 1) / time.Second)
	lease, err := m.cli.Grant(ctx, secs+1)
	if err != nil {
		return Approval{}, fmt.Errorf("grant etcd lease: %w", err)
	}
	now := m.now().UTC().Truncate(time.Millisecond)
	rec := Record{GrantedBy: actor, Reason: reason, Phrase: canon, GrantedAt: now, ExpiresAt: now.Add(ttl), LeaseID: int64(lease.ID), Source: source}
	b, _ := json.Marshal(rec)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", 0)}
	if cur.Token != 0 {
		// An approval past expires_at whose lease has not fired yet: end it
		// in the same transaction (audited as expired by the watcher path).
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", cur.Token)}
	}
	entry := audit.Entry{Actor: actor, Action: "authorize", Outcome: "granted", Reason: reason, Source: source,
		Detail: fmt.Sprintf("ttl=%s expires_at=%s phrase=%q", ttl, rec.ExpiresAt.Format(time.RFC3339), canon)}
	ops := []clientv3.Op{clientv3.OpPut(m.keys.Approval(), string(b), clientv3.WithLease(lease.ID))}
	if cur.Token != 0 {
		ops = append([]clientv3.Op{clientv3.OpDelete(m.keys.Approval())}, ops...)
	}
	_, resp, err := m.audit.Append(ctx, entry, cmps, ops)
	if err != nil {
		m.dropLease(ctx, lease.ID)
		if errors.Is(err, audit.ErrPrecondition) {
			return Approval{}, fmt.Errorf("%w: another operator authorized at the same moment; run `golive-controller approval`", ErrAlreadyActive)
		}
		return Approval{}, err
	}
	if cur.Token != 0 {
		m.markEnded(ctx, cur, "expired", "system", "")
		m.dropLease(ctx, clientv3.LeaseID(cur.LeaseID))
	}
	return Approval{Record: rec, Token: resp.Header.Revision}, nil
}

// Revoke ends the live approval at once. It returns the token it ended, or
// 0 when there was none (not an error: pulling the brake twice is fine).
func (m *Manager) Revoke(ctx context.Context, actor, source, reason string) (int64, error) {
	tok, _, err := m.RevokeRev(ctx, actor, source, reason)
	return tok, err
}

// RevokeRev is Revoke that also returns the etcd revision of the revoke.
func (m *Manager) RevokeRev(ctx context.Context, actor, source, reason string) (int64, int64, error) {
	for {
		cur, rev, err := m.Current(ctx)
		if err != nil {
			return 0, 0, err
		}
		if cur.Token == 0 {
			return 0, rev, nil
		}
		entry := audit.Entry{Actor: actor, Action: "revoke", Outcome: "revoked", Reason: reason, Source: source,
			Detail: fmt.Sprintf("token=%d granted_by=%s", cur.Token, cur.GrantedBy)}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", cur.Token),
			clientv3.Compare(clientv3.CreateRevision(m.keys.ApprovalEnded(cur.Token)), "=", 0),
		}
		ops := []clientv3.Op{
			clientv3.OpDelete(m.keys.Approval()),
			clientv3.OpPut(m.keys.ApprovalEnded(cur.Token), "revoked"),
		}
		_, resp, err := m.audit.Append(ctx, entry, cmps, ops)
		if errors.Is(err, audit.ErrPrecondition) {
			continue // it changed under us; look again
		}
		if err != nil {
			return 0, 0, err
		}
		// The key is gone; dropping the lease is housekeeping, done in the
		// background so the caller can push the revoke to agents at once.
		m.dropLease(ctx, clientv3.LeaseID(cur.LeaseID))
		return cur.Token, resp.Header.Revision, nil
	}
}

// Current reads the approval. The revision is that of the read.
func (m *Manager) Current(ctx context.Context) (Approval, int64, error) {
	resp, err := m.cli.Get(ctx, m.keys.Approval())
	if err != nil {
		return Approval{}, 0, fmt.Errorf("read approval from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Approval{}, resp.Header.Revision, nil
	}
	a, err := decode(resp.Kvs[0].Value, resp.Kvs[0].CreateRevision)
	a.Refused = m.refuses(a)
	return a, resp.Header.Revision, err
}

// refuses reports whether this replica refuses a (see Brake).
func (m *Manager) refuses(a Approval) bool {
	if a.Token == 0 {
		return false
	}
	m.mu.Lock()
	settling := m.now().Before(m.settle)
	m.mu.Unlock()
	return settling || m.brake.refuses(a)
}

// EtcdDown reports since when the approval watch has had no etcd leader
// (zero: etcd answers).
func (m *Manager) EtcdDown() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.down
}

func (m *Manager) kickWatch() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func decode(v []byte, createRev int64) (Approval, error) {
	var rec Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return Approval{}, fmt.Errorf("approval record is corrupt: %w", err)
	}
	return Approval{Record: rec, Token: createRev}, nil
}

// EndExpired ends an approval whose expires_at has passed (or whose key the
// lease already removed) and audits it as expired, once. Any replica may call
// it; the transaction makes it happen once.
func (m *Manager) EndExpired(ctx context.Context, a Approval) error {
	if a.Token == 0 {
		return nil
	}
	ended, err := m.markEnded(ctx, a, "expired", "system", "ttl ran out")
	if err != nil {
		return err
	}
	if ended && a.LeaseID != 0 {
		m.dropLease(ctx, clientv3.LeaseID(a.LeaseID))
	}
	return nil
}

// markEnded writes approval_ended/<token> and its audit entry unless already
// written, deleting the approval key if it still holds that token.
func (m *Manager) markEnded(ctx context.Context, a Approval, how, actor, reason string) (bool, error) {
	// Delete the key only if it is still this approval (nested txn keeps it
	// one atomic write).
	del := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", a.Token)},
		[]clientv3.Op{clientv3.OpDelete(m.keys.Approval())}, nil)
	entry := audit.Entry{Actor: actor, Action: "approval_" + how, Outcome: how, Reason: reason,
		Detail: fmt.Sprintf("token=%d granted_by=%s expires_at=%s", a.Token, a.GrantedBy, a.ExpiresAt.UTC().Format(time.RFC3339))}
	_, _, err := m.audit.Append(ctx,
		entry,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(m.keys.ApprovalEnded(a.Token)), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(m.keys.ApprovalEnded(a.Token), how), del})
	if errors.Is(err, audit.ErrPrecondition) {
		return false, nil
	}
	return err == nil, err
}

// Fence returns the compare that every automated write must carry: the live
// approval is still the one with this token.
func (m *Manager) Fence(token int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", token)
}

// Event is a change of the approval seen by Watch.
type Event struct {
	Approval Approval
	Revision int64
	// Reason is "sync", "granted", "revoked", "expired" or "lost" (etcd
	// unreachable or without leader: treat as no approval).
	Reason string
}

// Watch calls fn with the approval now and on every change until ctx ends.
// It reads at revision R and watches from R+1 so no change is missed; the
// watch requires an etcd leader, so losing quorum yields a "lost" event
// (no approval) until it is back. It also emits "expired" when expires_at
// passes, whether or not the lease has fired yet.
func (m *Manager) Watch(ctx context.Context, fn func(Event)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := m.watchOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		if m.down.IsZero() {
			m.down = m.now()
		}
		m.mu.Unlock()
		fn(Event{Reason: "lost"})
		_ = err
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

func (m *Manager) watchOnce(ctx context.Context, fn func(Event)) error {
	m.mu.Lock()
	wasDown := !m.down.IsZero()
	m.mu.Unlock()
	cur, rev, err := m.Current(ctx)
	if err != nil {
		return err
	}
	var settled <-chan time.Time
	if wasDown {
		// Back from an outage: hold automation off for a moment, so that a
		// revoke taken meanwhile (here or on another replica) is written
		// first.
		m.mu.Lock()
		m.down, m.settle = time.Time{}, m.now().Add(SettleAfterOutage)
		m.mu.Unlock()
		cur.Refused = m.refuses(cur)
		t := time.NewTimer(SettleAfterOutage)
		defer t.Stop()
		settled = t.C
	}
	fn(Event{Approval: cur, Revision: rev, Reason: "sync"})
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.cli.Watch(wctx, m.keys.Approval(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	var expiry *time.Timer
	var expiryC <-chan time.Time
	arm := func(a Approval) {
		if expiry != nil {
			expiry.Stop()
			expiryC = nil
		}
		if a.Token != 0 {
			expiry = time.NewTimer(time.Until(a.ExpiresAt))
			expiryC = expiry.C
		}
	}
	arm(cur)
	defer func() {
		if expiry != nil {
			expiry.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-settled:
			settled = nil
			cur.Refused = m.refuses(cur)
			fn(Event{Approval: cur, Revision: rev, Reason: "sync"})
		case <-m.kick:
			// A local revoke: say the approval is off now.
			cur.Refused = m.refuses(cur)
			fn(Event{Approval: cur, Revision: rev, Reason: "revoked"})
		case <-expiryC:
			expiryC = nil
			ended := cur
			cur = Approval{}
			fn(Event{Revision: rev, Reason: "expired"})
			if err := m.EndExpired(ctx, ended); err != nil {
				return err
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("approval watch closed")
			}
			if err := resp.Err(); err != nil {
				return err
			}
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision
				switch ev.Type {
				case clientv3.EventTypePut:
					a, err := decode(ev.Kv.Value, ev.Kv.CreateRevision)
					if err != nil {
						return err
					}
					a.Refused = m.refuses(a)
					cur = a
					arm(a)
					fn(Event{Approval: a, Revision: rev, Reason: "granted"})
				case clientv3.EventTypeDelete:
					var prev Approval
					if ev.PrevKv != nil {
						prev, _ = decode(ev.PrevKv.Value, ev.PrevKv.CreateRevision)
					}
					cur = Approval{}
					arm(cur)
					reason := "revoked"
					if prev.Token != 0 && !m.now().Before(prev.ExpiresAt.Add(-time.Second)) {
						reason = "expired"
					}
					fn(Event{Revision: rev, Reason: reason})
					if reason == "expired" || ev.PrevKv == nil {
						// The lease removed it: audit the end once.
						if err := m.EndExpired(ctx, prev); err != nil {
							return err
						}
					}
				}
			}
		}
	}
}

// dropLease revokes a lease the approval no longer needs (housekeeping:
// the lease would expire anyway). It is bounded, survives the caller's
// cancellation for that bound, and starts no goroutine of its own.
func (m *Manager) dropLease(ctx context.Context, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	m.cli.Revoke(ctx, id)
}
