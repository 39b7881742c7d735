// Package analysis owns PromQL analysis: judging a release by queries on
// the user's Prometheus, as a rollout gate between waves.
//
// An analysis file (HCL) holds metric blocks. Parse reads and validates
// it, refusing unknown placeholders in queries at once. At a gate the
// leader calls Start with the wave's Values (hosts, service, release,
// slot), which renders each query, then calls Step whenever NextAt is
// reached, storing the returned State (Encode) with the rollout record in
// the same transaction as the rollout's own state. Step is the only part
// that does I/O (through a Querier); Record, Judge and Cut are pure, so a
// new leader resumes a run from the stored State exactly.
//
//	Start --> running --Step/Record--> passed  (every metric took Count
//	             |                              passing measurements, with at
//	             |                              most failure_limit failures)
//	             +--> failed (a metric's failures > failure_limit, its
//	             |            consecutive errors > consecutive_error_limit,
//	             |            or its query refused by Prometheus)
//	             +--Cut--> failed (cut short: the gate needed a verdict
//	                               before Count measurements)
//
// # The file
//
//	metric "error-rate" {
//	  query    = "sum(rate(http_requests_total{code=~\"5..\",host=~\"{{hosts_regex}}\"}[1m])) / sum(rate(http_requests_total{host=~\"{{hosts_regex}}\"}[1m]))"
//	  interval = "10s"         # between two measurements, 1s to 1h
//	  initial_delay = "15s"    # before the first (Prometheus must see the new slot)
//	  count    = 3             # conclusive measurements a pass needs
//	  fail_if  = "> 0.001"     # or success_if; > < >= <= == != and a number
//	  failure_limit           = 0     # breaching measurements tolerated
//	  consecutive_error_limit = 4     # query errors in a row retried
//	  on_no_data = "fail"      # "pass" lets an empty vector pass (recorded)
//	  reduce     = "max"       # max|min|sum|avg over several series
//	}
//
// Placeholders ({{hosts_regex}}, {{hosts}}, {{service}}, {{release}},
// {{slot}}) go inside double-quoted strings; see Render. A query should
// guard its own evidence (an error ratio over no requests is NaN, which
// fails; add "and sum(rate(...)) > 1" to refuse too little traffic as no
// data).
//
// # Invariants
//
//   - Fail closed. Only VerdictPass counts towards a pass. An empty
//     vector, NaN, an infinity, a native histogram, several series without
//     a declared reduce, a matrix or string result are inconclusive and
//     count as failures; a query error, a timeout or an unreachable
//     Prometheus never passes (it is retried, then fails the run past
//     consecutive_error_limit); a run ended before Count conclusive
//     measurements fails. A run whose every measurement errored can never
//     pass, because errors do not count towards Count.
//   - The one exception is explicit: on_no_data = "pass" lets an empty
//     vector pass; each such measurement says so (Measurement.NoData),
//     and State.Notes lists it for the deploy's audit entry. It never
//     applies to NaN, which is what a ratio over no traffic returns.
//   - A run ends: at most consecutive_error_limit errors in a row come
//     before each conclusive measurement, and one more ends the run, so a
//     metric takes at most (Count+1)*(consecutive_error_limit+1)
//     measurements.
//   - Every measurement keeps the query as sent, the evaluation time, the
//     value as Prometheus writes it (NaN and infinities as "NaN", "+Inf":
//     the State is always valid JSON), the verdict and a message.
package analysis
