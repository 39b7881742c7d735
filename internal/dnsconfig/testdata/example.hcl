# The controller's DNS config (golive-controller serve --dns-config FILE).
zone "example.test" {
  server        = "127.0.0.1:5353"
  key_name      = "golive"
  key_algorithm = "hmac-sha256"
  key_file      = "golive.key" # relative to this file; base64 or tsig-keygen output
  timeout       = "3s"
}

pool "blue" {
  hosts     = ["web1", "web2"]
  addresses = ["192.0.2.10", "192.0.2.11", "2001:db8::10"]
}

pool "green" {
  selector  = { role = "web", site = "dr" }
  addresses = ["198.51.100.10", "2001:db8:1::10"]
}

failover "www.example.test" {
  zone      = "example.test"
  type      = "A"
  ttl       = 30
  primary   = blue
  secondary = "green"
  check {
    interval  = "1s"
    threshold = 3
  }
  failback  = "auto"
  hold_down = "5m"
  max_ttl   = "60s"
}

failover "www.example.test" {
  zone      = "example.test"
  type      = "AAAA"
  primary   = blue
  secondary = green
}
