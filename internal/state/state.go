// Package state owns the controller's etcd key layout. Every key golive
// writes lives under one prefix (default "/golive/"):
//
//	approval                  the live approval, bound to an etcd lease; its
//	                          create revision is the fencing token
//	approval_ended/<token>    how an approval ended (revoked|expired), written
//	                          once, so that an end is audited exactly once
//	leader/                   the leader election (clientv3/concurrency)
//	agents/<host>             the last known state of an agent (no lease)
//	presence/<host>           which replica holds the agent's stream, bound to
//	                          that replica's session lease: absent = lost
//	commands/<host>/<id>      a command for a host, pending until its result
//	results/<host>/<id>       a command's final result
//	rollouts/<id>             a rollout record (its executor state inside)
//	rollout_requests/<id>/<k> an operator's pause|resume|abort, consumed by
//	                          the leader in the txn that acts on it
//	service_rollout/<svc>     the one running rollout of a service
//	backups/<svc>/<host>/<id> a database backup an agent made and verified
//	                          (before a migration, or a restore's safety
//	                          backup): its record, never a DSN. The host is
//	                          part of the key because ids (<time>-<release>)
//	                          are only unique per host
//	audit/head, audit/<seq>   the hash-chained audit log
//	dns/<name>/<type>         a DNS record golive manages (serve --dns-config):
//	                          the values it last confirmed (the prerequisite of
//	                          its next change), the change in flight, the
//	                          failover state, the last decision
//	dns_history/<name>/<type>/<seq>
//	                          each change of it, recommendation and alert
//
// Only the controller talks to etcd; agents never import this package.
package state

import (
	"fmt"
	"strings"
)

// Keys builds keys under a prefix.
type Keys struct{ Prefix string }

// NewKeys normalizes prefix to end with "/".
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = "/golive/"
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Keys{Prefix: prefix}
}

func (k Keys) Approval() string { return k.Prefix + "approval" }
func (k Keys) ApprovalEnded(token int64) string {
	return fmt.Sprintf("%sapproval_ended/%020d", k.Prefix, token)
}
func (k Keys) Leader() string                        { return k.Prefix + "leader/" }
func (k Keys) Agents() string                        { return k.Prefix + "agents/" }
func (k Keys) Agent(host string) string              { return k.Agents() + host }
func (k Keys) Presences() string                     { return k.Prefix + "presence/" }
func (k Keys) Presence(host string) string           { return k.Presences() + host }
func (k Keys) Commands() string                      { return k.Prefix + "commands/" }
func (k Keys) HostCommands(host string) string       { return k.Commands() + host + "/" }
func (k Keys) Command(host, id string) string        { return k.HostCommands(host) + id }
func (k Keys) Results() string                       { return k.Prefix + "results/" }
func (k Keys) HostResults(host string) string        { return k.Results() + host + "/" }
func (k Keys) Result(host, id string) string         { return k.HostResults(host) + id }
func (k Keys) Rollouts() string                      { return k.Prefix + "rollouts/" }
func (k Keys) Rollout(id string) string              { return k.Rollouts() + id }
func (k Keys) RolloutRequestsAll() string            { return k.Prefix + "rollout_requests/" }
func (k Keys) RolloutRequests(id string) string      { return k.RolloutRequestsAll() + id + "/" }
func (k Keys) RolloutRequest(id, kind string) string { return k.RolloutRequests(id) + kind }
func (k Keys) ServiceLock(service string) string     { return k.Prefix + "service_rollout/" + service }
func (k Keys) Backups() string                       { return k.Prefix + "backups/" }
func (k Keys) ServiceBackups(service string) string  { return k.Backups() + service + "/" }
func (k Keys) AuditHead() string                     { return k.Prefix + "audit/head" }
func (k Keys) AuditEntries() string                  { return k.Prefix + "audit/e/" }
func (k Keys) AuditEntry(seq uint64) string          { return fmt.Sprintf("%saudit/e/%020d", k.Prefix, seq) }

// Backup is the key of backup id made on host for service.
func (k Keys) Backup(service, host, id string) string {
	return k.ServiceBackups(service) + host + "/" + id
}

// HostFromKey returns the last path element after prefix p.
func HostFromKey(p, key string) string { return strings.TrimPrefix(key, p) }

// DNSRecords is the prefix of every DNS record golive manages.
func (k Keys) DNSRecords() string { return k.Prefix + "dns/" }

// DNSRecord is the key of the record name (canonical) of type typ.
func (k Keys) DNSRecord(name, typ string) string { return k.DNSRecords() + name + "/" + typ }

// DNSHistoryAll is the prefix of every DNS record's history.
func (k Keys) DNSHistoryAll() string { return k.Prefix + "dns_history/" }

// DNSHistory is the prefix of one record's history.
func (k Keys) DNSHistory(name, typ string) string { return k.DNSHistoryAll() + name + "/" + typ + "/" }

// DNSHistoryEntry is the key of entry seq of a record's history.
func (k Keys) DNSHistoryEntry(name, typ string, seq uint64) string {
	return fmt.Sprintf("%s%020d", k.DNSHistory(name, typ), seq)
}
