// Package traffic measures what real users' requests did, per slot, as the
// load balancer in front of a service saw them: the figures a release is
// judged on (see design.md, "Judging a release"), next to the agent's own
// health probe.
//
// Two sources, one sink:
//
//	HAProxy runtime API ── "show info;show stat" every second ──┐
//	  cumulative stot, hrsp_5xx, econ, eresp, rtime per server  │ deltas
//	                                                            ▼
//	nginx JSON access log ── Follower (tail -F) ── Parse ──▶ Window (one per slot)
//	  one line per request, one attempt per upstream address    │
//	                                                            ▼
//	                                         Snapshot: requests, errors,
//	                                         avg and p99 latency, covered span
//
// A Window is a ring of one-second buckets (DefaultWindow: the last 30 s);
// each bucket holds counts, a latency sum and a log-scale latency
// histogram, so a snapshot costs the same whatever the request rate.
//
// Invariants:
//
//   - A request is counted at most once: the Follower reads each byte of a
//     log file once (a rotated file is read to its end from the open file
//     descriptor while nginx may still write to it; the new file is read
//     from its start); the HAProxy reader adds only the increase of a
//     counter between two reads of the same HAProxy process and server.
//   - A counter that went down (HAProxy restarted, "clear counters all", a
//     server deleted and added again) is a reset: the interval counts the
//     new value, never a negative delta.
//   - Errors never exceed requests in any bucket.
//   - Figures say what they cover: Stats.Covered is the span since the
//     slot was first observed (or reset), capped at the window, so a
//     caller can refuse to judge on too little evidence.
package traffic
