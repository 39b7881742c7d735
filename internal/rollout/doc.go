// Package rollout owns the pure logic of a fleet rollout: which hosts, in
// which waves (Plan), and what to do next given what was observed (Next).
// It talks to nothing: no etcd, no gRPC, no clock. The leader's executor
// reads a State from etcd (rollouts/<id>), builds an Observation from the
// agents' results and health and the approval, calls Next, and writes the
// returned State together with the commands its Actions ask for in one
// transaction fenced on the approval and on its leadership. If that
// transaction fails, it drops both and calls Next again on a fresh read:
// Next is deterministic, so a new leader resumes exactly where the old one
// stopped.
//
// # Phases
//
//	pending --> preflight --> canary --> wave 1 .. wave N-1 --> wave N --> validating --> succeeded
//	   |            |        (each wave: deploying, then baking; the    (the last wave's
//	   |            |         gate passes -> next wave)                  bake window)
//	   |            |              |         |                               |
//	   |            +--> failed    +---------+---- gate fails / deadline ----+
//	   |                 (preflight            |                             |
//	   |                  failed or            v                             |
//	   |                  too slow)       rolling_back --> rolled_back       |
//	   |                                       |      \--> aborted (abort)   |
//	   |                                       +--> failed (a host's rollback|
//	   |                                            failed or was too slow)  |
//	   |                                                                     |
//	   +-- approval revoked/expired, pause, pause after canary -------> halted
//	                      (from pending, preflight, any wave)          |  resume (needs a live
//	                                                                   |  approval) -> back to
//	                                                                   |  the phase it left
//	   abort, from any phase but rolling_back ---> rolling_back (touched hosts) or aborted (none)
//
// A deploy with DNS targets (Schedule.DNS, deploy --dns NAME=POOL) has one
// more step after its last gate passed: validating/dns, where the executor
// points the records at the pools (ChangeDNS, fenced on State.Token) and
// the rollout ends succeeded once the zone's primary answers them, or
// failed (the hosts keep the release) if a change fails or the progress
// deadline passes. See dns.go for the restores of an abort and of an
// operator's rollback.
//
// succeeded, rolled_back, failed and aborted are terminal: Next returns a
// terminal State unchanged with no action.
//
// An operator's rollback (Plan.Kind KindRollback, made by PlanRollback)
// runs the same machine: pending --> rolling_back (every host at once, as
// the operator's command: no approval needed) --> succeeded, or failed when
// a host's rollback failed or did not finish in time.
//
// # Invariants
//
//   - A wave commands all its hosts at once; a host is commanded only in
//     its own wave, and again only if its command was cancelled (refused
//     or dropped, nothing changed) under an approval that has since ended.
//     A host with a pending, succeeded or failed command is never
//     commanded again for the same rollout, except to roll back.
//   - No StartWave unless the approval is live and its fencing token is
//     State.Token. A revoke, an expiry or a new approval halts the rollout;
//     only the operator's resume, under a live approval, adopts the new
//     token and continues: the same wave, commanding only what is left, then
//     the whole bake window again.
//   - Gates fail closed and watch every host the rollout touched so far,
//     not only the last wave's: a lost host, a failed step (failed or
//     rolled_back), a command refused under the live approval, or no health
//     sample taken after the bake window (within Gate.DataTimeout) fails
//     the gate. During the window, any sample with an error rate not below
//     MaxErrorRate or an average latency not below MaxAvgLatency fails it at
//     once. Each host is judged alone, so one bad host is never averaged
//     away by good ones.
//   - The progress deadline bounds preflight, each wave (from its start or
//     resume until its gate passes) and the fleet rollback. A wave past it
//     counts as a failed gate.
//   - A failed gate rolls back every host the rollout touched, all at once,
//     to the release each ran before (Host.Releases) — except hosts whose
//     deploy failed before changing anything (Unchanged): nothing to undo;
//     when no touched host changed, the rollout ends failed. It ends
//     rolled_back with the reason, or failed if any host's rollback failed
//     or did not finish in time (the reason names each such host, what it
//     last served and the command to finish: a person must act).
//   - A host with a router is judged on the load balancer's counts of real
//     requests (Observation.Hosts[].Traffic), one without on the probe
//     (Health); a bake whose hosts with a router saw fewer than
//     Gate.MinRequests real requests halts as HaltInconclusive (never a
//     pass); with Gate.Analysis the PromQL analysis must pass too. Each
//     wave records what it was judged on (State.JudgedOn).
//   - Abort stops starting steps and rolls back every touched host, as the
//     operator's own rollback (allowed without approval); it ends aborted.
//     Abort while already rolling back changes nothing.
//   - While halted, Next starts nothing and judges nothing: results are
//     recorded, and a resume re-checks everything. A rollback in progress is
//     not halted by a revoke: its commands were written under the approval.
//   - Pause, Resume and Abort are edge-triggered requests: the executor
//     removes them in the transaction that stores Next's State.
//
// State is JSON with a version (StateVersion); Decode refuses others.
package rollout
