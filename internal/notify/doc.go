// Package notify owns the controller's webhook notifications: it tells
// people (a chat channel, an incident tool, an audit sink) that an approval
// was granted or ended and how a rollout is going.
//
// A Notifier is built from a Config (a list of Receivers) and owns one
// delivery goroutine and one bounded queue per receiver:
//
//	Notify(ev) --copy--> [queue r1: drop oldest when full] --> worker r1 --POST--> receiver 1
//	           \-------> [queue r2: drop oldest when full] --> worker r2 --POST--> receiver 2
//
// Invariants:
//
//   - Notify never blocks its caller and never fails: a receiver that is
//     slow, down or hanging only fills its own queue, whose oldest event is
//     then dropped and counted (golive_controller_webhook_dropped_total).
//     A failing receiver can therefore never hold up a rollout.
//   - Events reach one receiver in the order they were notified (one worker
//     per receiver; a retry holds back the events behind it).
//   - A delivery is retried, with exponential backoff and jitter, on network
//     errors, timeouts, 429 and 5xx, up to Config.MaxAttempts attempts; a
//     Retry-After header is honoured up to Config.BackoffMax. Any other
//     status outside 2xx (4xx, 3xx: redirects are not followed) is final.
//     Deliveries are at least once: a receiver may see an event twice and
//     can de-duplicate on its "id".
//   - Close stops accepting events, lets the workers drain their queues for
//     up to Config.DrainTimeout, then cancels what is left (counted as
//     dropped) and waits for every goroutine it started.
//   - No secret leaves through an event: Event has no field for one, and the
//     notifier never logs a receiver's URL (webhook URLs are often
//     credentials, e.g. Slack's) or its headers; receivers are named in
//     logs and metrics by Receiver.Name, by default the URL's host.
//
// # Wire format
//
// Format "json" POSTs one event per request, Content-Type application/json,
// with this schema (version 1; fields may be added, never renamed):
//
//	id             string  random, unique per event: the same on every retry
//	version        number  1
//	kind           string  approval_granted | approval_revoked | approval_expired |
//	                       rollout_started | wave_passed | gate_failed |
//	                       rolled_back | rollout_succeeded | rollout_halted
//	time           string  RFC 3339, UTC, when the event happened
//	summary        string  one readable line (the Slack text)
//	actor          string  who caused it ("controller" for automation); omitted if empty
//	rollout_id     string  omitted if empty
//	service        string  omitted if empty
//	release        string  omitted if empty
//	reason         string  omitted if empty
//	fencing_token  number  the approval's fencing token; omitted if 0
//	details        object  string to string, event specific; omitted if empty
//
// Example:
//
//	{
//	  "id": "5f0c6a8e2b1d4c3a9e7f1a2b3c4d5e6f",
//	  "version": 1,
//	  "kind": "gate_failed",
//	  "time": "2025-03-14T09:26:53.589Z",
//	  "summary": "golive: gate failed for checkout v2.4.1 (rollout r-42) by controller: error rate 0.8% > 0.1% [wave=2]",
//	  "actor": "controller",
//	  "rollout_id": "r-42",
//	  "service": "checkout",
//	  "release": "v2.4.1",
//	  "reason": "error rate 0.8% > 0.1%",
//	  "fencing_token": 1187,
//	  "details": {"wave": "2"}
//	}
//
// Format "slack" POSTs Slack's incoming-webhook body, {"text": summary},
// with &, < and > escaped as Slack asks.
package notify
