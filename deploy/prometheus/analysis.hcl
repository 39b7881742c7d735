# An analysis file: PromQL that judges a release between rollout waves
# (internal/analysis). Each metric is measured `count` times, `interval`
# apart, on the hosts the rollout touched; any measurement that cannot be
# judged (no data, NaN, an error) counts against the release.
#
# Placeholders, filled by golive for each gate, inside double-quoted strings:
#   {{hosts_regex}}  the hosts' ids as an anchored-safe regexp group
#   {{hosts}}        the hosts' ids, comma-separated
#   {{service}}      the service name
#   {{release}}      the release being rolled out
#   {{slot}}         the slot it runs in (blue-green services only)
#
# The host, service, release and slot labels come from golive's Prometheus
# service discovery (prometheus.yml in this directory).

# Real users' error ratio on the new slot, as the load balancer counted it.
# The "and ... > 1" asks for at least 1 request/s: with less traffic the
# result is empty, which fails (too little evidence never passes).
metric "traffic-error-ratio" {
  query    = "sum(rate(golive_agent_traffic_errors_total{host=~\"{{hosts_regex}}\",service=\"{{service}}\",slot=\"{{slot}}\"}[1m])) / sum(rate(golive_agent_traffic_requests_total{host=~\"{{hosts_regex}}\",service=\"{{service}}\",slot=\"{{slot}}\"}[1m])) and sum(rate(golive_agent_traffic_requests_total{host=~\"{{hosts_regex}}\",service=\"{{service}}\",slot=\"{{slot}}\"}[1m])) > 1"
  interval = "15s"
  # Prometheus sees the new slot a scrape or two after the switch; an
  # empty answer before that would count as a failure.
  initial_delay = "20s"
  count    = 4
  fail_if  = "> 0.01"
}

# Real users' p99 latency on the new slot.
metric "traffic-p99-latency" {
  query    = "histogram_quantile(0.99, sum by (le) (rate(golive_agent_traffic_latency_seconds_bucket{host=~\"{{hosts_regex}}\",service=\"{{service}}\",slot=\"{{slot}}\"}[1m])))"
  interval = "15s"
  count    = 4
  fail_if  = "> 0.5"
  failure_limit = 1
}

# The application's own view: the worst host's 5xx ratio for this release.
metric "sampleapp-5xx-ratio" {
  query    = "sum by (host) (rate(sampleapp_http_requests_total{code=~\"5..\",host=~\"{{hosts_regex}}\",release=\"{{release}}\"}[1m])) / sum by (host) (rate(sampleapp_http_requests_total{host=~\"{{hosts_regex}}\",release=\"{{release}}\"}[1m]))"
  interval = "15s"
  count    = 4
  fail_if  = "> 0.02"
  reduce   = "max"
}
