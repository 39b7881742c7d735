# golive agent: /etc/golive/agent.hcl
#
# Read by the golive-agent unit (golive-agent run --config
# /etc/golive/agent.hcl). Check it with `golive-agent check --config
# /etc/golive/agent.hcl`. Every setting, with its meaning, is in
# /usr/share/doc/golive-agent/examples/agent.hcl. This file is a conffile:
# upgrades never overwrite your edits.

# Names this host to the controller; must match the agent's certificate
# name. Default: the hostname.
# host_id = "web-1"

# The unit's StateDirectory: the only directory under /var/lib the
# sandboxed agent may write. Releases live in <state_dir>/services/<name>/.
state_dir = "/var/lib/golive-agent"

controller {
  # Give all three TLS files (mutual TLS) to reach a controller on another
  # host; without them only a controller on this host's loopback.
  address = "127.0.0.1:7400"
  # ca_file   = "/etc/golive/pki/ca.pem"
  # cert_file = "/etc/golive/pki/agent.pem"
  # key_file  = "/etc/golive/pki/agent-key.pem"
}

# A service run by systemd, blue-green behind nginx, as the two instances
# of golive-app@.service (shipped in /lib/systemd/system):
#
# service "app" {
#   swap_mode = "blue-green"
#   manager   = "systemd"
#   unit      = "golive-app@"
#   health { url = "http://127.0.0.1:{port}/healthz" }
#   blue_green {
#     blue_port  = 8081
#     green_port = 8082
#     router {
#       kind          = "nginx"
#       upstream_file = "/etc/nginx/golive/app.conf"
#       reload        = ["systemctl", "reload", "nginx"]
#     }
#   }
# }
