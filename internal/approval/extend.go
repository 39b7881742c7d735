package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/audit"
)

// ErrNoReason: an extension must say why.
var ErrNoReason = errors.New("a reason is required")

// Extend prolongs the live approval to ttl from now, under the same rules
// as Grant (an accepted phrase, 1s <= ttl <= the maximum) and with a reason.
// The approval keeps its key and so its create revision, the fencing token:
// rollouts running under it go on. A new lease of the new ttl replaces the
// old one; the key is rewritten under it, with the audit entry, in one
// transaction compared on the key's create revision, so an approval revoked
// or replaced meanwhile is not extended. It returns the extended approval
// and the revision of the write.
func (m *Manager) Extend(ctx context.Context, actor, source, phrase string, ttl time.Duration, reason string) (Approval, int64, error) {
	canon, ok := MatchPhrase(phrase)
	if !ok {
		return Approval{}, 0, &PhraseError{Given: phrase}
	}
	if strings.TrimSpace(reason) == "" {
		return Approval{}, 0, fmt.Errorf("%w: say why the approval is extended, e.g. --reason \"canary needs longer\"", ErrNoReason)
	}
	if ttl < time.Second {
		return Approval{}, 0, fmt.Errorf("%w: ttl %s is under 1s, e.g. --ttl 30m", ErrBadTTL, ttl)
	}
	if ttl > m.maxTTL {
		return Approval{}, 0, fmt.Errorf("%w: ttl %s exceeds the controller's maximum %s (--max-approval-ttl)", ErrBadTTL, ttl, m.maxTTL)
	}
	cur, _, err := m.Current(ctx)
	if err != nil {
		return Approval{}, 0, err
	}
	if !cur.Active(m.now()) {
		return Approval{}, 0, fmt.Errorf("%w: there is no live approval to extend; grant one with `golive-controller authorize PHRASE --ttl D --reason TEXT`", ErrNotActive)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	lease, err := m.cli.Grant(ctx, secs+1)
	if err != nil {
		return Approval{}, 0, fmt.Errorf("grant etcd lease: %w", err)
	}
	now := m.now().UTC().Truncate(time.Millisecond)
	rec := cur.Record
	rec.ExpiresAt = now.Add(ttl)
	rec.LeaseID = int64(lease.ID)
	b, _ := json.Marshal(rec)
	entry := audit.Entry{Actor: actor, Action: "authorize_extend", Outcome: "extended", Reason: reason, Source: source,
		Detail: fmt.Sprintf("token=%d ttl=%s expires_at=%s was=%s phrase=%q granted_by=%s", cur.Token, ttl,
			rec.ExpiresAt.Format(time.RFC3339), cur.ExpiresAt.UTC().Format(time.RFC3339), canon, cur.GrantedBy)}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", cur.Token),
		clientv3.Compare(clientv3.CreateRevision(m.keys.ApprovalEnded(cur.Token)), "=", 0),
	}
	ops := []clientv3.Op{clientv3.OpPut(m.keys.Approval(), string(b), clientv3.WithLease(lease.ID))}
	_, resp, err := m.audit.Append(ctx, entry, cmps, ops)
	if err != nil {
		m.dropLease(ctx, lease.ID)
		if errors.Is(err, audit.ErrPrecondition) {
			return Approval{}, 0, fmt.Errorf("%w: the approval (token %d) was revoked or replaced meanwhile; run `golive-controller approval`", ErrNotActive, cur.Token)
		}
		return Approval{}, 0, err
	}
	// The key no longer uses the old lease: drop it.
	m.dropLease(ctx, clientv3.LeaseID(cur.LeaseID))
	return Approval{Record: rec, Token: cur.Token}, resp.Header.Revision, nil
}
