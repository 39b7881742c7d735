# A minimal agent config: this host runs the sample service (make releases)
# on port 8080, supervised by the agent itself, restart-mode swaps.
host_id   = "web-1"
state_dir = "/tmp/golive-web-1"
labels    = { role = "web" }

service "app" {
  port = 8080
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "10s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "1s"
    successes = 3
    deadline  = "30s"
  }
}
