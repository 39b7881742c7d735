// Package dnsconfig owns the controller's DNS configuration file (given by
// `golive-controller serve --dns-config FILE`): the zones golive may update
// over RFC 2136, the pools of hosts whose addresses it publishes, and the
// health-checked failover of a name from one pool to another.
//
//	zone "example.test" {
//	  server        = "192.0.2.53:53"          # the zone's primary, host:port
//	  key_name      = "golive"                 # TSIG key
//	  key_algorithm = "hmac-sha256"
//	  key_file      = "/etc/golive/dns/golive.key"  # base64, or tsig-keygen output
//	  timeout       = "5s"
//	}
//	pool "blue"  { hosts = ["web1", "web2"]     addresses = ["192.0.2.10", "192.0.2.11"] }
//	pool "green" { selector = { role = "web-dr" } addresses = ["198.51.100.10"] }
//	failover "www.example.test" {
//	  zone = "example.test"  type = "A"  ttl = "30s"
//	  primary = blue  secondary = green       # a pool's name, bare or quoted
//	  check { interval = "1s" threshold = 3 }
//	  failback  = "manual"                    # or "auto"
//	  hold_down = "5m"
//	  max_ttl   = "60s"
//	}
//
// A config is built in three steps: Parse (decode the file, reject what
// cannot be read), Validate (judge the whole: names, references between
// blocks, ranges), LoadSecrets (read each zone's key file). Load does all
// three.
//
// Invariants:
//
//   - Every error names the field and, when it came from the file, the
//     file:line: `dns.hcl:14: failover "www.example.test.": check.threshold:
//     must be at least 2 (one bad check never switches a record)`.
//     Errors are returned as Errors, a list of *FieldError, sorted by line.
//   - The TSIG secret is never in an error, a log line, or a formatted value:
//     it is held by Secret, whose String, GoString, Format, MarshalJSON and
//     MarshalText all print "[redacted]", and whose bytes sit behind a
//     closure so that even a printer that bypasses those methods (an
//     unexported field) prints an address, not the key. Errors about a key
//     file name the file, never its content.
//   - Names (zones, failover records) are canonical: lower case, fully
//     qualified, with the trailing dot ("www.example.test.").
//   - A failover never switches on one bad check: check.threshold >= 2.
//     Its ttl is at most its max_ttl, so a switch takes effect in bounded time.
package dnsconfig
