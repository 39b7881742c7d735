# golive controller: /etc/golive/controller.hcl
#
# Read by the golive-controller unit (golive-controller serve --config
# /etc/golive/controller.hcl). Keys are the flags of `golive-controller serve
# --help` with "_" for "-"; a flag given on the command line (e.g. in a
# drop-in: systemctl edit golive-controller) wins over this file. An unknown
# key is an error. This file is a conffile: upgrades never overwrite your
# edits (dpkg asks when the packaged version changed).
#
# data_dir is not set here: the unit passes --data-dir
# /var/lib/golive-controller (its StateDirectory), where the embedded etcd
# and the audit log live.

# gRPC for agents and operators. Without TLS the controller refuses anything
# but loopback: set the three tls_* files (golive-controller pki init /
# issue-controller; readable by the golive user, e.g. root:golive 0640) to
# listen on the network.
listen = "127.0.0.1:7400"

# Prometheus /metrics (and /artifacts/ when artifacts_dir is set).
metrics_addr = "127.0.0.1:7401"

# tls_ca   = "/etc/golive/pki/ca.pem"
# tls_cert = "/etc/golive/pki/controller.pem"
# tls_key  = "/etc/golive/pki/controller-key.pem"

# The longest approval an operator may grant with `authorize --ttl`.
max_approval_ttl = "12h"

# External etcd instead of the embedded one (a cluster for several
# controller replicas):
# etcd_endpoints = ["https://etcd-1:2379", "https://etcd-2:2379", "https://etcd-3:2379"]
# etcd_prefix    = "/golive/"

# Webhooks for approval and rollout events (json=URL or slack=URL):
# webhook = ["slack=https://hooks.slack.com/services/..."]

# The identity that authorized may not start or resume a deploy under it.
# two_person_rule = true

# log_level = "info"
# log_json  = true
