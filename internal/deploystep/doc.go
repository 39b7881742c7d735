// Package deploystep owns one deploy or rollback of one service on an agent's
// host, in restart mode: a fixed, ordered list of stages, each with a name, a
// do and an undo, journaled on disk before each stage so that a crash is
// resumed or undone by Recover when the agent starts again.
//
// A deploy:
//
//	fetch ──▶ verify ──▶ unpack ──▶ pre_swap ──▶ swap ──▶ restart ──▶ health ──▶ post_swap ──▶ cleanup ──▶ SUCCEEDED
//	  │         │          │           │           │         │           │
//	  │ (fetch, verify and unpack are skipped when the release is already committed)
//	  ▼         ▼          ▼           ▼           ▼         ▼           ▼
//	  └─────────┴──── failure: undo the failing and the completed stages, newest first ────┘
//	                 swap.undo    = point current back at the previous release, and
//	                                previous back at what it named (SwapBack)
//	                 restart.undo = restart the service on the previous release
//	                 then, if the live service was touched: on_rollback hook and a
//	                 health check of the previous release (rollback_health)
//	                   healthy again ─▶ ROLLED_BACK      not restored ─▶ FAILED
//	                 failure before pre_swap (nothing live touched)  ─▶ FAILED
//
// A rollback (to the previous release, or to a named committed release) is
// swap ──▶ restart ──▶ health, with the same undo.
//
// On disk, beside the release directory of package releasedir
// (<state-dir>/<service>/):
//
//	journal.json     the step in progress: command id, kind, release, previous
//	                 release and previous link, completed stages, the stage about to run (written
//	                 atomically before every stage; removed when the step ends)
//	downloads/       fetched artifacts, removed by cleanup and by undo
//	done/<id>.json   results of finished commands (the newest DoneRecords kept)
//
// Invariants:
//
//   - Commands are idempotent by id: a command whose result is recorded in done/
//     returns that result (Replayed set) without doing any work.
//   - The journal is written before every stage, and the result record is
//     written before the journal is removed, so after a crash either the
//     journal or the result (or both) exist for an accepted command.
//   - After Recover the host serves the old or the new release completely (the
//     current link, the running process and a passing health check agree) and
//     the journal is gone. Recover's policy: if current does not point at the
//     step's release, the swap did not happen: staging is cleaned, the service
//     is (re)started on current if it is not healthy, and the step is reported
//     not done. If current points at the new release, Recover finishes forward
//     (restart on the new release, health check); if that fails it swaps back
//     to the previous release as a normal failure would. A step that was
//     already rolling back is rolled back.
//   - Two contexts: the ctx given to Run aborts the operation (fetch, hooks,
//     health). Swap, restart and every undo run under context.WithoutCancel,
//     bounded by Config.CriticalTimeout, so stopping the agent never leaves a
//     swap half-done: it completes or is undone.
//   - Errors are wrapped with the stage's name.
//
// Fault points (FaultPoints) are compiled in only with the build tag
// faultpoints: with GOLIVE_FAULTPOINT=<name> the process SIGKILLs itself at
// that stage boundary, so tests can crash a step at a known place.
package deploystep
