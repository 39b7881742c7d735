// Package dnsfailover decides the health-checked failover of one DNS
// record between two pools: when to move it to the secondary pool, when to
// bring it back, and when only to recommend. It is pure: no I/O, no clock.
// Its inputs are checks (the caller's verdict on each pool's health at a
// time, computed from the agents' health and traffic figures), the policy
// (from dnsconfig) and whether a live automation approval exists; its
// output is a Decision and the next State, which the leader stores in etcd.
//
//	           primary bad for Threshold consecutive checks
//	           (and secondary healthy)
//	+---------+ ---------------------------------------> +-----------+
//	| primary |        [approved: Switch; else Recommend] | secondary |
//	| active  | <--------------------------------------- |  active   |
//	+---------+   failback = auto, primary good on every  +-----------+
//	              check for HoldDown (and at least
//	              Threshold checks) [approved: Switch; else Recommend];
//	              failback = manual: Recommend only
//
// Step never changes Active: a Switch is a request. The executor applies
// it (a DNS update, fenced on the approval token and confirmed by query)
// and only then calls Applied, so a failed update is decided again at the
// next check and never leaves the state claiming a record that is not
// published. An operator's `dns failover NAME --to POOL` (a safety action,
// no approval needed) is also recorded with Applied; moving a record off
// its primary by hand pins it there (automation then recommends, never
// switches) until an operator moves it back.
//
// Invariants:
//
//   - One bad check never switches: Threshold >= 2 consecutive bad checks.
//   - Hysteresis: leaving the primary takes Threshold consecutive bad
//     checks; returning takes HoldDown of consecutive good ones, so a
//     flapping primary never flips the record back and forth.
//   - No data is no evidence: a check with an unknown verdict breaks a good
//     streak and counts as bad for the primary; a gap of more than
//     MaxGap (3 intervals) between checks resets both streaks; the
//     secondary must be known healthy to receive traffic.
//   - Without a live approval nothing switches: the decision is Recommend,
//     with the exact `golive-controller dns failover NAME --to POOL`.
//   - Checks at or before the last one are ignored (replays after a leader
//     change are harmless); the State survives a JSON round trip.
package dnsfailover
