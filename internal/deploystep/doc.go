// Package deploystep owns one deploy or rollback of one service on an agent's
// host, in restart mode or in blue-green mode: a fixed, ordered list of
// stages, each with a name, a do and an undo, journaled on disk before each
// stage so that a crash is resumed or undone by Recover when the agent
// starts again.
//
// A deploy:
//
//	fetch ─▶ verify ─▶ unpack ─▶ pre_swap ─▶ backup ─▶ migrate ─▶ swap ─▶ restart ─▶ health ─▶ smoke ─▶ post_swap ─▶ cleanup ─▶ SUCCEEDED
//	  │        │         │          │          │          │         │        │          │         │
//	  │ (fetch, verify and unpack are skipped when the release is already committed from the
//	  │  same artifact; backup and migrate when the service has no migrate command; smoke
//	  │  without smoke checks)
//	  ▼        ▼         ▼          ▼          ▼          ▼         ▼        ▼          ▼         ▼
//	  └────────┴─── failure: undo the failing and the completed stages, newest first ───┘
//	                 swap.undo    = point current back at the previous release, and
//	                                previous back at what it named (SwapBack)
//	                 restart.undo = restart the service on the previous release
//	                 then, if the live service was touched: on_rollback hook and a
//	                 health check of the previous release (rollback_health)
//	                   healthy again ─▶ ROLLED_BACK      not restored ─▶ FAILED
//	                 failure before pre_swap (nothing live touched)  ─▶ FAILED, Unchanged
//
// A failure before the live service is touched (fetch: 404, size cap;
// verify: sha256, signature; unpack; backup after a pre_swap without a
// hook: a backup only reads the database) undoes only its scratch work: the live
// process is not stopped or restarted, current and previous do not move.
// The result is FAILED with Unchanged set and an error ending "nothing
// changed on the host": there is nothing to roll back. So is a command
// refused before any stage (invalid, unknown release, a re-deploy with
// another artifact).
//
// A release id names one artifact on a host. Each committed release keeps
// a manifest (releasedir.Manifest: artifact sha256, signer key id, URL),
// written into the staging tree before Commit, so it appears with the tree.
// A deploy of a committed release id:
//
//   - same sha256, signer still trusted (or no trusted keys): fetch, verify
//     and unpack are skipped, each report's Note says so;
//   - same sha256, recorded signer no longer trusted: fetch and verify run
//     again (the signature must verify with a trusted key), the tree is
//     kept and the manifest names the new signer;
//   - another sha256: refused before any stage, Unchanged, "deploy the new
//     artifact under a new release id";
//   - no manifest (the tree was unpacked by an older agent): fetch, verify
//     and unpack into staging run, and the tree on the host is kept (and
//     gets its manifest) only if it is the same tree (names, modes,
//     contents, link targets); otherwise refused at unpack, Unchanged. A
//     tree cannot be trusted by its id alone (that is the bug this closes),
//     and a sha256 cannot be recomputed from a tree, so the artifact is
//     fetched once more to prove it.
//
// A failed first deploy has nothing to go back to: the service is stopped
// and current is removed (releasedir.ClearCurrent), so no current names a
// release that never worked and the next deploy records no previous: a
// release that never ran healthy is never a rollback target.
//
// A rollback (to the previous release, or to a named committed release) is
// swap ──▶ restart ──▶ health, with the same undo (no smoke checks: a
// rollback is the way back, it does not fail on them). A rollback to the
// release current already names, whose service runs and passes its health
// check, is a no-op: SUCCEEDED and Unchanged, swap and restart reported
// skipped, the process not restarted (so a rollback sent twice, or to a
// host whose deploy changed nothing, never restarts it).
//
// The database (a service with a database block and a migrate command):
//
//   - backup takes a pg_dump and proves it restorable by restoring it into a
//     scratch database (dbbackup.BackupAndVerify), records it (Result.Backup,
//     <backup dir>/<id>.json), then prunes by keep_backups and
//     max_backup_age (a prune failure is a warning). A backup or verify
//     failure fails the step before the migration: current is untouched.
//   - migrate runs the release's migrate.command from the new release's
//     directory with the service's env files (the DSN reaches it only by
//     its environment; its output and errors are redacted of the DSN and
//     password), bounded by migrate.timeout and not cut short by a
//     cancelled operation. The journal says "started" before it runs.
//   - Neither has an undo. A failure after migrate (health, smoke) swaps the
//     binary back but the schema stays migrated: Result.Warnings says so and
//     names the backup (golive-controller rollback --restore-db <id>).
//   - A rollback with Command.RestoreBackupID runs
//     restore_db ──▶ swap ──▶ restart ──▶ health: restore_db stops the
//     service, takes a verified and recorded safety backup (Result.Backup),
//     then restores (pg_restore --clean --if-exists, one transaction). The
//     release defaults to the backup's ReleaseBefore. An unknown backup id
//     fails before anything is changed. If a later stage fails, the binary
//     goes back and the service restarts on it, but the database is not
//     restored again: FAILED, with a warning naming the safety backup.
//
// Crashes and the database (Recover never changes the database):
//
//   - during backup: the unverified dump and .tmp files are removed (a
//     scratch database golive_verify_* may be left on the server); the
//     step is undone like any failure before the swap.
//   - after backup, before migrate started: undone; the verified backup stays.
//   - during migrate (journal says "started"): the migration is NOT rerun;
//     the binary stays on the previous release; the step is FAILED, the
//     error says the migration may have run partly and names the backup.
//   - after migrate: as a crash after pre_swap (finish forward if swapped,
//     else back to the previous release, with the schema-stays-migrated
//     warning).
//   - during restore_db: before the restore began, the database is
//     unchanged and the service is started again (FAILED); once it began,
//     the database is as before or restored (one transaction): FAILED, the
//     error says to check it and names the safety backup.
//   - after restore_db: finish forward (swap to the target release if
//     current does not name it yet, restart, health): the restored database
//     belongs with it. If that fails, back to the release before the command
//     with a warning that the database stays restored (FAILED).
//
// Blue-green mode (Service.SwapMode "blue-green"; Config.Slots and
// Config.Router): the service runs as two slots, each on its own port, and a
// router (package router: nginx, HAProxy or none) sends the traffic to one of
// them. current always names the release of the slot that serves, so
// heartbeats, rollouts and preflight see the same thing as in restart mode;
// slots.json records which release each slot runs, which slot serves, and
// the keep-warm stop time of the slot traffic left. A deploy:
//
//	fetch ─▶ verify ─▶ unpack ─▶ pre_swap ─▶ backup ─▶ migrate ─▶ start_slot ─▶ slot_health ─▶ canary ─▶ switch ─▶ smoke ─▶ post_swap ─▶ cleanup
//
// Its stages:
//
//   - start_slot (re)starts the idle slot (the one not serving) on the
//     release, on its own port; slot_health checks it there. A failure up to
//     here stops the idle slot and changes nothing else: FAILED, current
//     untouched, the serving slot never lost a request.
//   - canary (Command.Weight 1-99) sends that share to the new slot, confirmed
//     by the router, and probes the new slot's health every health interval
//     for Command.WeightBake (default DefaultWeightBake); its undo sends all
//     the traffic back.
//   - switch sends all the traffic to the new slot (Router.Switch returns
//     once the router serves it), records it in slots.json, schedules the
//     old slot's stop at now + keep_warm, then points current at the
//     release. Its undo switches back (the old slot still runs: instant; if
//     it does not, it is started and checked first) and points current back.
//     A failure after the switch (smoke) is ROLLED_BACK.
//   - When keep_warm is over, the old slot is drained (Router.Drain, up to
//     drain_timeout) then stopped. The stop time is in slots.json: a Runner
//     arms a timer for it; StartServing (agent start) stops slots whose time
//     passed while no agent ran. Close stops the timers.
//
// A rollback is start_slot ──▶ slot_health ──▶ switch. Within keep_warm the
// previous release still runs in the idle slot: start_slot is skipped (no
// restart, same process), slot_health is one probe, and the switch makes it
// an instant switch back; the slot left is kept warm in turn, so rolling
// back again switches forward just as fast. After keep_warm the slot is
// started first. A rollback with a database restore uses the restart-mode
// stages on the serving slot.
//
// Recovery (blue-green): the router decides. If it sends all the traffic to
// the new slot and the step was going forward, the step finishes forward
// (new slot running and healthy, slots.json and current updated, smoke);
// otherwise (not switched yet, a canary split, rolling back) the old slot
// gets all the traffic again (started first if needed), current goes back,
// and the new slot is stopped unless it was warm before the step. After
// Recover exactly one slot takes all the traffic, and current names its
// release. Before Recover the agent calls Adopt, so slots left running by
// an agent killed -9 are supervised again without a restart. Fault points:
// BlueGreenFaultPoints (FaultPoints lists the restart-mode ones the agent's
// e2e crash test iterates), including "inside_switch" (the router switched,
// slots.json and current not yet).
//
// Driving a switch (tests, benchmarks): build a Runner with the two slot
// managers and a router (router.New), Run a KindDeploy command (Weight for a
// canary), then Run KindRollback commands (Release ""): each one is a
// confirmed switch to the other, warm slot. ActiveSlot and SlotState report
// where the traffic goes; Close at the end.
//
// On disk, beside the release directory of package releasedir
// (<state-dir>/<service>/):
//
//	slots.json       blue-green only: each slot's release and keep-warm stop
//	                 time, and the serving slot
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
