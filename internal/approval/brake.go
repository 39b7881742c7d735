package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/golive/golive/internal/atomicfile"
	"github.com/golive/golive/internal/audit"
)

// The brake works while etcd cannot be written. A revoke that reaches a
// replica while etcd has no quorum is kept on the replica's local disk
// (Brake): from then on the replica refuses that approval's token — the
// approval reads as inactive in Current and Watch however long its key
// survives in etcd — and Flush writes the revoke to etcd, with its audit
// entry, once etcd answers again. After etcd comes back from an outage a
// replica also holds automation off for SettleAfterOutage, so that a
// revoke taken by another replica during the outage lands in etcd before
// any replica acts on the old approval again.
//
//	revoke, no quorum --> Brake.refuse(token) (fsynced) --> Current/Watch: inactive
//	quorum back --> settle --> Flush: revoke txn + audit --> Brake.done(token)

// SettleAfterOutage is how long after etcd answers again an approval stays
// inactive on a replica (see above).
const SettleAfterOutage = 3 * time.Second

// ErrDeferred says a revoke was recorded locally and will be written to
// etcd when it recovers; automation is already off.
var ErrDeferred = errors.New("etcd has no quorum: automation is already halted on every agent; your revoke is recorded and will be written when etcd recovers")

// PendingRevoke is a revoke not yet written to etcd.
type PendingRevoke struct {
	// Token is the approval revoked (0: whatever approval was granted
	// before At).
	Token  int64     `json:"token"`
	Actor  string    `json:"actor"`
	Source string    `json:"source,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Brake is a replica's on-disk list of refused approvals.
type Brake struct {
	path string
	mu   sync.Mutex
	st   brakeFile
}

type brakeFile struct {
	// Refused tokens stay refused for good (a token is never reused).
	Refused []int64 `json:"refused"`
	// Pending are revokes to write to etcd.
	Pending []PendingRevoke `json:"pending"`
}

// OpenBrake reads (or starts) the brake file at path.
func OpenBrake(path string) (*Brake, error) {
	b := &Brake{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("brake file: %w", err)
	}
	if err := json.Unmarshal(data, &b.st); err != nil {
		return nil, fmt.Errorf("brake file %s is corrupt: %w", path, err)
	}
	return b, nil
}

func (b *Brake) save() error {
	data, err := json.Marshal(b.st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(b.path, data, 0o600)
}

// refuse records p (fsynced before it returns).
func (b *Brake) refuse(p PendingRevoke) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Token != 0 {
		b.st.Refused = append(b.st.Refused, p.Token)
	}
	b.st.Pending = append(b.st.Pending, p)
	return b.save()
}

// refuses reports whether a is refused: its token was revoked here, or a
// revoke of "whatever was live" came after it was granted.
func (b *Brake) refuses(a Approval) bool {
	if b == nil || a.Token == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.st.Refused {
		if t == a.Token {
			return true
		}
	}
	for _, p := range b.st.Pending {
		if p.Token == 0 && a.GrantedAt.Before(p.At) {
			return true
		}
	}
	return false
}

func (b *Brake) pending() []PendingRevoke {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]PendingRevoke(nil), b.st.Pending...)
}

// done drops a pending revoke once written; a "whatever was live" one
// turns into a refusal of the token it ended.
func (b *Brake) done(p PendingRevoke, ended int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, q := range b.st.Pending {
		if q == p {
			b.st.Pending = append(b.st.Pending[:i], b.st.Pending[i+1:]...)
			break
		}
	}
	if p.Token == 0 && ended != 0 {
		b.st.Refused = append(b.st.Refused, ended)
	}
	return b.save()
}

// SetBrake makes m refuse what b refuses, and record deferred revokes in it.
func (m *Manager) SetBrake(b *Brake) { m.brake = b }

// RevokeLocal records a revoke that etcd cannot take now (see Brake): the
// approval with token (0: whatever was live) is refused on this replica at
// once, and Flush writes it to etcd later. It returns ErrDeferred.
func (m *Manager) RevokeLocal(token int64, actor, source, reason string) error {
	if m.brake == nil {
		return errors.New("etcd is unreachable and this controller has no local brake file: the revoke was not recorded")
	}
	if err := m.brake.refuse(PendingRevoke{Token: token, Actor: actor, Source: source, Reason: reason, At: m.now()}); err != nil {
		return fmt.Errorf("record the revoke on local disk: %w", err)
	}
	m.kickWatch()
	return ErrDeferred
}

// HasPending reports whether a revoke waits to be written to etcd.
func (m *Manager) HasPending() bool { return m.brake != nil && len(m.brake.pending()) > 0 }

// Flush writes every pending revoke to etcd, each with its audit entry
// (outcome "revoked", reason noting it was taken during an outage). A
// pending revoke of a token that already ended, or was replaced, is
// dropped. It returns the first error (etcd still down).
func (m *Manager) Flush(ctx context.Context) (revoked []int64, err error) {
	if m.brake == nil {
		return nil, nil
	}
	for _, p := range m.brake.pending() {
		cur, _, err := m.Current(ctx)
		if err != nil {
			return revoked, err
		}
		ended := int64(0)
		match := cur.Token != 0 && (p.Token == cur.Token || p.Token == 0 && cur.GrantedAt.Before(p.At))
		if match {
			entry := audit.Entry{Actor: p.Actor, Action: "revoke", Outcome: "revoked", Source: p.Source,
				Reason: p.Reason, Detail: fmt.Sprintf("token=%d granted_by=%s deferred_from=%s (etcd had no quorum)", cur.Token, cur.GrantedBy, p.At.UTC().Format(time.RFC3339))}
			cmps := []clientv3.Cmp{
				clientv3.Compare(clientv3.CreateRevision(m.keys.Approval()), "=", cur.Token),
				clientv3.Compare(clientv3.CreateRevision(m.keys.ApprovalEnded(cur.Token)), "=", 0),
			}
			ops := []clientv3.Op{clientv3.OpDelete(m.keys.Approval()), clientv3.OpPut(m.keys.ApprovalEnded(cur.Token), "revoked")}
			if _, _, err := m.audit.Append(ctx, entry, cmps, ops); err != nil && !errors.Is(err, audit.ErrPrecondition) {
				return revoked, err
			} else if err == nil {
				ended = cur.Token
				revoked = append(revoked, cur.Token)
				m.dropLease(ctx, clientv3.LeaseID(cur.LeaseID))
			}
		}
		if err := m.brake.done(p, ended); err != nil {
			return revoked, err
		}
	}
	return revoked, nil
}
