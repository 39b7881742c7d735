# golive agent configuration: /etc/golive/agent.hcl
#
# Check it with `golive-agent check --config /etc/golive/agent.hcl`.
# Durations are strings ("500ms", "30s", "10m", "720h"); sizes are strings
# ("512MiB", "2GiB"; KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
# Paths must be absolute unless said otherwise. Anything not shown here is
# an error, reported with its file:line.

# Names this host to the controller; must match the agent's certificate name.
# Default: the hostname. The --host-id flag overrides it.
host_id = "web-1"

# Free-form labels reported to the controller, which may select hosts by them.
labels = {
  role = "web"
  zone = "eu-west-1a"
}

# Releases, journals, backups and logs live here (default /var/lib/golive).
# Each service gets <state_dir>/services/<name>/.
state_dir = "/var/lib/golive"

# ed25519 public keys (PEM, PKIX). When any is listed, every artifact must
# carry a valid signature by one of them; sha256 is always checked.
trusted_keys = ["/etc/golive/keys/release.pub"]

# Where the controller is. Give all three TLS files (mTLS) or none (loopback
# dev mode only).
controller {
  address   = "golive.internal:7400"
  ca_file   = "/etc/golive/tls/ca.pem"
  cert_file = "/etc/golive/tls/agent.pem"
  key_file  = "/etc/golive/tls/agent-key.pem"
}

# Limits on what one artifact may put on disk.
artifacts {
  max_bytes          = "2GiB"  # download size (default 2GiB)
  max_unpacked_bytes = "8GiB"  # total unpacked size (default 8GiB)
  max_files          = 100000  # entries in the archive (default 100000)
  retries            = 3       # fetch retries on transient errors (default 3)
}

# A service swapped by restart, run by the agent itself, with a database.
service "app" {
  swap_mode     = "restart" # "restart" (default) or "blue-green"
  keep_releases = 5         # releases kept on disk, the live one included (>= 2)
  manager       = "exec"    # "exec" (default): the agent runs it; "systemd": a unit
  port          = 8080      # what {port} expands to

  exec {
    # argv; a relative program is relative to the release dir.
    command      = ["bin/sampleapp", "--port", "{port}"]
    env_file     = "/etc/app/env" # KEY=value lines; holds secrets, never logged
    env          = { LOG_LEVEL = "info", LISTEN = ":{port}" }
    stop_timeout = "10s"              # how long a stop waits before killing
    log_file     = "/var/log/app.log" # default: <service dir>/service.log
  }

  # A release is live once `successes` probes in a row pass, within `deadline`.
  health {
    url           = "http://127.0.0.1:{port}/healthz"
    expect_status = 200
    timeout       = "2s"  # one probe
    interval      = "1s"  # between probes
    successes     = 3
    deadline      = "30s" # not healthy by then: swap back
    window        = "60s" # sliding window of the continuous health report
  }

  # argv run around the swap; a failing pre_swap stops the step.
  hooks {
    pre_swap    = ["/usr/local/bin/lb", "drain", "web-1"]
    post_swap   = ["/usr/local/bin/lb", "enable", "web-1"]
    on_rollback = ["/usr/local/bin/notify", "app rolled back on web-1"]
    timeout     = "30s"
  }

  # PostgreSQL, backed up with pg_dump -Fc before every migration, and the
  # backup proven by restoring it into a scratch database and comparing
  # every table's row count; a backup that fails stops the deploy before the
  # migration. The DSN is read from env_file at dsn_env_key and never logged.
  # The role needs CREATEDB (for the scratch database).
  database {
    kind           = "postgres"
    dsn_env_key    = "DATABASE_URL"
    env_file       = "/etc/app/env"                # default: exec.env_file
    backup_dir     = "/var/lib/golive/backups/app" # default: <service dir>/backups
    keep_backups   = 10
    max_backup_age = "720h" # also prune backups older than this (the newest is always kept)
  }

  # Run from the release dir after a verified backup, before the swap, with
  # the env files in its environment (the DSN too). Never rerun after a
  # crash, never reversed: if the release then fails health or smoke, the
  # binary goes back, the schema stays migrated (the result says so and
  # names the backup for `rollback --restore-db`).
  migrate {
    command = ["bin/migrate", "up"]
    timeout = "10m"
  }

  # Pre-live checks, run before every deploy.
  preflight {
    domain               = "app.example.com" # resolves; TLS valid and matching
    tls_port             = 443
    cert_expiry_days     = 14 # refuse when the certificate expires sooner
    env_file             = "/etc/app/env"    # default: exec.env_file
    required_secrets     = ["DATABASE_URL", "STRIPE_KEY"] # presence only
    min_free_disk_factor = 3     # free disk >= 3 x artifact size
    max_backup_age       = "24h" # newest backup must be younger
  }

  # Post-live smoke checks, any number, against the service's own port (the
  # health URL's scheme and host), run in order after the health check of a
  # deploy; any failure swaps the previous release back.
  smoke "home" {
    method        = "GET"
    path          = "/"
    headers       = { Accept = "text/plain" }
    expect_status = 200
    body_contains = "ok"
    max_latency   = "500ms"
  }

  smoke "version" {
    path          = "/version"
    body_contains = "app"
  }

  # The service's own Prometheus metrics on its serving port: the controller
  # lists it in its HTTP service discovery (/v1/prometheus/sd on
  # --metrics-addr), labelled host, service, release (and slot), for PromQL
  # analyses (deploy --analysis) to query.
  metrics_path = "/metrics"

  # Real traffic for the rollout gate: the load balancer's own counts of the
  # requests it sent here (5xx and failed connections are errors), judged in
  # place of the agent's probe. A blue-green service reads its router
  # instead (blue_green.router below). Without a traffic source, the gate
  # judges the probe.
  traffic {
    source     = "nginx" # or "haproxy"
    # nginx: its access log in the golive JSON format
    # (deploy/examples/nginx/golive-log.conf); the attempts counted are those
    # to 127.0.0.1:<port>. Rotation (rename + reopen, or copytruncate) is
    # followed.
    access_log = "/var/log/nginx/golive.json.log"
    # haproxy instead: the server's counters from `show stat`.
    # source       = "haproxy"
    # admin_socket = "/run/haproxy/admin.sock"
    # backend      = "app"
    # server       = "app1"
  }

  # Scaling by demand (restart mode): up to max instances on this host.
  # Instance 0 is the service above (its port, process or unit); instance i
  # listens on port + i (or the i-th port of `ports`, which must start at
  # port), as exec process app-i or systemd unit app@i.service (a template
  # unit app@.service). Each is health-checked on its own port and in the
  # router only while healthy; on scale-down it leaves the router, is
  # drained, then stopped. A deploy replaces every instance one at a time.
  # Instance ports must not overlap another service's (api's 8081/8082
  # below would, with max = 4 here: move one of them first).
  # scale {
  #   min        = 1
  #   max        = 4
  #   target_rps = 50      # or target_cpu = 0.5 (cores), or query + target_value
  #   # tolerance = 0.1, interval = "15s", scale_up_cooldown = "60s",
  #   # scale_down_window = "300s", max_step = 0 (no limit): the controller's policy
  #   # ports = "8080-8083"
  #   # drain_timeout = "30s"
  #   router {             # what sends traffic to the instances (default none)
  #     kind          = "nginx"   # upstream file lists every healthy instance, reloaded
  #     upstream_file = "/etc/nginx/golive/app.conf"
  #     probe_url     = "http://127.0.0.1/healthz"
  #     # kind = "haproxy": admin_socket + backend; instance 0 is the backend's
  #     # server named traffic.server (or the service name), the others are
  #     # added and deleted over the runtime API as "<server>-<i>" (no reload)
  #   }
  # }
}

# A blue-green service under systemd behind nginx: slots run as the
# instances api@blue and api@green of a template unit api@.service, which
# reads its port from the instance's environment.
service "api" {
  swap_mode     = "blue-green"
  keep_releases = 3
  manager       = "systemd"
  unit          = "api@" # template prefix; restart mode names the unit ("api.service")

  exec {
    # With systemd only env_file is used (the unit says what runs).
    env_file = "/etc/api/env"
  }

  health {
    url = "http://127.0.0.1:{port}/healthz" # {port}: the slot's port
  }

  blue_green {
    blue_port     = 8081
    green_port    = 8082
    keep_warm     = "15m" # the old slot stays up this long for instant switch-back
    drain_timeout = "30s"

    router {
      kind          = "nginx" # "nginx", "haproxy" or "none" (switch from hooks)
      upstream_file = "/etc/nginx/golive/api.conf" # rewritten atomically
      reload        = ["nginx", "-s", "reload"]    # the default for nginx
      probe_url     = "http://127.0.0.1/version"   # checked through the router after a switch
      # Real traffic for the gate: each slot's requests in nginx's access log
      # in the golive JSON format (deploy/examples/nginx/golive-log.conf),
      # counted for the slot listening on the attempt's port. Without it the
      # gate judges the agent's probe.
      access_log    = "/var/log/nginx/golive.json.log"
      # haproxy instead (its counters for servers blue and green are read on
      # the admin socket, with no more configuration):
      # kind         = "haproxy"
      # admin_socket = "/run/haproxy/admin.sock"
      # backend      = "api" # servers "blue" and "green" in this backend
    }
  }

  preflight {
    required_secrets = ["API_TOKEN"] # looked up in exec.env_file
  }
}
