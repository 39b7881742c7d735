# golive-controller serve --dns-config /etc/golive/dns.hcl
#
# The DNS zones golive may update (RFC 2136, TSIG-signed), the pools of
# hosts whose addresses it publishes, and the health-checked failover of a
# name between two pools. See internal/dnsconfig for every field.
#
# Without a live approval (golive-controller authorize) the leader only
# recommends a failover: it alerts (webhook, golive_controller_dns_failover_alert)
# with the exact command, e.g.
#   golive-controller dns failover www.example.com. --to green
# which an operator may run at any time (a safety action: no approval needed).

zone "example.com" {
  server        = "192.0.2.53:53"           # the zone's primary: the server that takes updates
  key_name      = "golive"                  # TSIG key, as the server knows it
  key_algorithm = "hmac-sha256"
  key_file      = "/etc/golive/dns/golive.key"  # tsig-keygen output or the base64 secret; chmod 600
  timeout       = "5s"
}

# The primary pool: the hosts (by agent host id) whose health judges it,
# and the addresses the record carries while it is active.
pool "blue" {
  hosts     = ["web-1", "web-2", "web-3"]
  addresses = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
}

# The secondary pool, its hosts chosen by agent labels.
pool "green" {
  selector  = { role = "web-dr" }
  addresses = ["198.51.100.10"]
}

failover "www.example.com" {
  zone      = "example.com"
  type      = "A"
  ttl       = "30s"        # short: a switch takes effect within it
  primary   = blue
  secondary = green
  check {
    interval  = "10s"      # how often the pools are judged from the agents' reports
    threshold = 3          # consecutive bad checks before a switch (at least 2)
  }
  failback  = "manual"     # or "auto": back to blue after hold_down of good checks
  hold_down = "5m"
  max_ttl   = "60s"        # the largest TTL dns set may give this name
}
