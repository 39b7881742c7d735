// Package approval owns the automation approval: the only thing that lets
// golive act on production by itself.
//
// An approval is the etcd key <prefix>approval, bound to a lease of the
// granted TTL. Its create revision is the fencing token: every automated
// write compares it (Fence), so nothing is written under an approval that has
// ended. Agents are told the token and reject commands carrying another.
//
//	         Grant(phrase, ttl)
//	(none) ---------------------> active(token) --Revoke--> ended: revoked
//	   ^                             |  lease expiry or expires_at passed
//	   |                             +------------------> ended: expired
//	   +------------ a new Grant makes a new token ---------+
//
// Invariants: at most one approval exists; a token is never reused (etcd
// revisions only grow); an end is audited exactly once (approval_ended/<token>
// is created once, in the same transaction as its audit entry); an approval is
// active only while its key exists AND its expires_at is in the future, so a
// lease renewed by an etcd leader change never stretches it.
package approval
