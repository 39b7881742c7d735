#!/usr/bin/env bash
# golive demo: a controller on an embedded etcd and three agents running the
# sample service, all on loopback in a temp dir, over mutual TLS with
# certificates made by `golive-controller pki`: alice may authorize and
# deploy, bob may deploy; with the two-person rule on, alice may not deploy
# under the approval she granted. Automation refused, then authorized; pre-live
# checks; v1 and v2 rolled out, broken v3 rolled back on its own; with nginx
# installed, a blue-green service behind it (canary weight, switch, instant
# switch-back to the warm slot) and a release that passes its health checks
# but fails on real traffic (5% of requests answer 500 in nginx's JSON access
# log) rolled back on its own; with
# PostgreSQL installed, a release with a migration (verified backup first)
# and a database restore; an operator rollback without approval; revoke; the
# audit chain verified. Everything started here is stopped on exit and on
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$PWD/bin
BASE=${DEMO_PORT_BASE:-17400}
DIR=$(mktemp -d -t golive-demo-XXXXXX)
chmod 711 "$DIR" # PostgreSQL runs as an unprivileged user below
PIDS=()
PGCTL=""
cleanup() {
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n $PGCTL ]]; then $PGCTL stop -m immediate >/dev/null 2>&1 || true; fi
  if [[ -n ${NGINX:-} ]]; then $NGINX -s stop >/dev/null 2>&1 || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

for p in $BASE $((BASE+1)) $((BASE+2)) $((BASE+3)) $((BASE+11)) $((BASE+12)) $((BASE+13)) $((BASE+21)) $((BASE+22)) $((BASE+23)) $((BASE+24)) $((BASE+25)) $((BASE+26)) $((BASE+27)) $((BASE+30)); do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use: set DEMO_PORT_BASE to another base port" >&2; exit 1
  fi
done

export GOLIVE_ADDR=127.0.0.1:$BASE
PKI=$DIR/pki
# alice (approver and deployer) and bob (deployer) are commands: golive-controller with
# their certificate, which is their identity for the controller and the audit.
mkdir -p "$DIR/bin"
for who in alice bob; do
  printf '#!/bin/sh\nexec %q --tls-ca %q --tls-cert %q --tls-key %q "$@"\n' "$BIN/golive-controller" \
    "$PKI/ca.pem" "$PKI/operator-$who.pem" "$PKI/operator-$who-key.pem" >"$DIR/bin/$who"
  chmod +x "$DIR/bin/$who"
done
export PATH="$DIR/bin:$PATH"
C=bob
# http_get PORT PATH: the body of a GET on loopback (bash's /dev/tcp, so the
# demo needs no curl).
http_get() {
  exec 3<>/dev/tcp/127.0.0.1/$1 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  timeout 2 cat <&3 | sed '1,/^\r\{0,1\}$/d'
  exec 3<&-
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$'; printf ' %q' "$@"; printf '\033[0m\n'; "$@"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t*10))); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done
  echo "timed out waiting for $what" >&2; exit 1
}

step "make a CA and certificates: the controller, three agents (name = host id), alice (approver and deployer), bob (deployer)"
run $BIN/golive-controller pki init --dir "$PKI"
$BIN/golive-controller pki issue-controller demo --ip 127.0.0.1 --dir "$PKI" >/dev/null
for i in 1 2 3; do $BIN/golive-controller pki issue-agent web-$i --dir "$PKI" >/dev/null; done
run $BIN/golive-controller pki issue-operator alice --role approver,deployer --dir "$PKI"
$BIN/golive-controller pki issue-operator bob --role deployer --dir "$PKI" >/dev/null
ls "$PKI"

step "start the controller (mutual TLS 1.3, two-person rule) on an embedded etcd in $DIR"
$BIN/golive-controller serve --data-dir "$DIR/controller" --listen "$GOLIVE_ADDR" --metrics-addr 127.0.0.1:$((BASE+1)) \
  --embedded-etcd-client 127.0.0.1:$((BASE+2)) --embedded-etcd-peer 127.0.0.1:$((BASE+3)) --replica-id demo \
  --heartbeat-interval 1s --artifacts-dir "$PWD/dist" \
  --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/controller-demo.pem" --tls-key "$PKI/controller-demo-key.pem" --two-person-rule \
  >"$DIR/controller.log" 2>&1 &
PIDS+=($!)
wait_for 30 "controller" $C status
echo "a client without a certificate gets nothing:"
run $BIN/golive-controller --timeout 2s status || echo "(exit $? — refused)"

# PostgreSQL for the ledger service, when installed.
PGBIN=""
if command -v initdb >/dev/null 2>&1; then PGBIN=$(dirname "$(command -v initdb)")
elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"); fi
PGPORT=$((BASE+30))
PSQL="psql -h 127.0.0.1 -p $PGPORT -U golive -X -q"
if [[ -n $PGBIN ]]; then
  step "start PostgreSQL ($PGBIN) for the ledger service on web-1"
  mkdir -p "$DIR/pg"
  PGRUN=()
  if [[ $(id -u) == 0 ]]; then
    PGUSER_OS=postgres; id postgres >/dev/null 2>&1 || PGUSER_OS=nobody
    chown "$PGUSER_OS" "$DIR/pg"; PGRUN=(runuser -u "$PGUSER_OS" --)
  fi
  "${PGRUN[@]}" "$PGBIN/initdb" -D "$DIR/pg/data" -U golive -A trust -E UTF8 --no-sync >"$DIR/pg/initdb.log" 2>&1
  PGCTL="${PGRUN[*]} $PGBIN/pg_ctl -D $DIR/pg/data"
  $PGCTL -o "-p $PGPORT -k $DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off" -l "$DIR/pg/server.log" -w start >/dev/null
  $PSQL -d postgres -c "CREATE DATABASE ledger"
  echo "DATABASE_URL=postgres://golive@127.0.0.1:$PGPORT/ledger?sslmode=disable" >"$DIR/ledger.env"
  chmod 600 "$DIR/ledger.env"
  echo "ledger's DSN is in $DIR/ledger.env (the agent reads it, never logs it or sends it)"
fi

# nginx in front of the blue-green service "web" on web-3, when installed.
NGINX_BIN=$(command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
NGINX=""
if [[ -n $NGINX_BIN ]]; then
  step "start nginx on 127.0.0.1:$((BASE+27)) in front of the blue-green service web (blue :$((BASE+25)), green :$((BASE+26)))"
  NG=$DIR/nginx; mkdir -p "$NG/tmp"
  NGUSER=""; [[ $(id -u) == 0 ]] && NGUSER="user root;"
  # The agent owns this file from now on (see deploy/examples/nginx).
  cat >"$NG/upstream.conf" <<NGX
# golive-state: {"blue":100,"green":0,"generation":"initial"}
# Written by the golive agent on every switch: do not edit.
upstream golive_web {
    server 127.0.0.1:$((BASE+25)) weight=100; # blue
    server 127.0.0.1:$((BASE+26)) backup; # green
    keepalive 32;
}
map \$host \$golive_web_generation {
    default "initial";
}
NGX
  cat >"$NG/nginx.conf" <<NGX
$NGUSER
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    include $NG/upstream.conf;
    server {
        listen 127.0.0.1:$((BASE+27));
        location / {
            proxy_pass http://golive_web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
            add_header X-Golive-Generation \$golive_web_generation always;
            add_header X-Golive-Upstream \$upstream_addr always;
        }
    }
}
NGX
  NGINX="$NGINX_BIN -p $NG/ -c $NG/nginx.conf -e $NG/error.log"
  $NGINX
fi

# A second nginx, in front of the blue-green service "shop" on web-3, when
# installed: it writes the golive JSON access log, from which the agent counts
# each slot's real requests for the gate.
NGINX2=""
NG2PID=""
if [[ -n $NGINX_BIN ]]; then
  for p in $((BASE+28)) $((BASE+31)) $((BASE+32)); do
    if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
      echo "port $p is in use: set DEMO_PORT_BASE to another base port" >&2; exit 1
    fi
  done
  step "start a second nginx on 127.0.0.1:$((BASE+28)) in front of the blue-green service shop (blue :$((BASE+31)), green :$((BASE+32))), with the golive JSON access log"
  NG2=$DIR/nginx2; mkdir -p "$NG2/tmp"
  NGUSER=""; [[ $(id -u) == 0 ]] && NGUSER="user root;"
  cat >"$NG2/upstream.conf" <<NGX
# golive-state: {"blue":100,"green":0,"generation":"initial"}
# Written by the golive agent on every switch: do not edit.
upstream golive_shop {
    server 127.0.0.1:$((BASE+31)) weight=100; # blue
    server 127.0.0.1:$((BASE+32)) backup; # green
    keepalive 32;
}
map \$host \$golive_shop_generation {
    default "initial";
}
NGX
  cat >"$NG2/nginx.conf" <<NGX
$NGUSER
worker_processes 1;
pid $NG2/nginx.pid;
error_log $NG2/error.log notice;
events { worker_connections 1024; }
http {
    # The documented format, from deploy/examples/nginx/golive-log.conf:
$(sed -n '/^log_format golive/,/;$/p' deploy/examples/nginx/golive-log.conf)
    access_log $NG2/golive.json.log golive;
    client_body_temp_path $NG2/tmp/body;
    proxy_temp_path $NG2/tmp/proxy;
    fastcgi_temp_path $NG2/tmp/fastcgi;
    uwsgi_temp_path $NG2/tmp/uwsgi;
    scgi_temp_path $NG2/tmp/scgi;
    include $NG2/upstream.conf;
    server {
        listen 127.0.0.1:$((BASE+28));
        location / {
            proxy_pass http://golive_shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }
    }
}
NGX
  NGINX2="$NGINX_BIN -p $NG2/ -c $NG2/nginx.conf -e $NG2/error.log"
  : >"$NG2/golive.json.log"
  $NGINX2 -g "daemon off;" &
  NG2PID=$!
  PIDS+=($NG2PID)
  wait_for 10 "the second nginx" bash -c "exec 3<>/dev/tcp/127.0.0.1/$((BASE+28))"
fi

step "start three agents (web-1, web-2, web-3), each running the sample service on its own port"
for i in 1 2 3; do
  cat >"$DIR/agent-$i.hcl" <<HCL
host_id   = "web-$i"
state_dir = "$DIR/agent-$i"
labels    = { role = "web", zone = "z$i" }
controller {
  address   = "$GOLIVE_ADDR"
  ca_file   = "$PKI/ca.pem"
  cert_file = "$PKI/agent-web-$i.pem"
  key_file  = "$PKI/agent-web-$i-key.pem"
}
service "app" {
  port = $((BASE+20+i))
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "500ms"
    successes = 3
    deadline  = "5s"
  }
  smoke "version" {
    path          = "/version"
    body_contains = "v"
    max_latency   = "1s"
  }
}
HCL
  if [[ $i == 1 && -n $PGBIN ]]; then
    cat >>"$DIR/agent-$i.hcl" <<HCL
service "ledger" {
  port = $((BASE+24))
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    env_file     = "$DIR/ledger.env"
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "500ms"
    successes = 3
    deadline  = "5s"
  }
  database {
    kind         = "postgres"
    dsn_env_key  = "DATABASE_URL"
    keep_backups = 5
  }
  migrate {
    command = ["bin/migrate"]
    timeout = "1m"
  }
  preflight {
    required_secrets = ["DATABASE_URL"]
  }
}
HCL
  fi
  if [[ $i == 3 && -n $NGINX ]]; then
    cat >>"$DIR/agent-$i.hcl" <<HCL
service "web" {
  swap_mode = "blue-green"
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "300ms"
    successes = 2
    deadline  = "5s"
  }
  blue_green {
    blue_port     = $((BASE+25))
    green_port    = $((BASE+26))
    keep_warm     = "15m"
    drain_timeout = "5s"
    router {
      kind          = "nginx"
      upstream_file = "$DIR/nginx/upstream.conf"
      reload        = ["$NGINX_BIN", "-p", "$DIR/nginx/", "-c", "$DIR/nginx/nginx.conf", "-e", "$DIR/nginx/error.log", "-s", "reload"]
      probe_url     = "http://127.0.0.1:$((BASE+27))/version"
    }
  }
}
HCL
  fi
  if [[ $i == 3 && -n $NGINX2 ]]; then
    # No probe_url: the prober would go through nginx before any release
    # runs, and those 502s would be counted against the first release.
    cat >>"$DIR/agent-$i.hcl" <<HCL
service "shop" {
  swap_mode = "blue-green"
  exec {
    command      = ["bin/sampleapp", "--port", "{port}"]
    stop_timeout = "5s"
  }
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "300ms"
    successes = 2
    deadline  = "5s"
  }
  blue_green {
    blue_port     = $((BASE+31))
    green_port    = $((BASE+32))
    keep_warm     = "15m"
    drain_timeout = "2s"
    router {
      kind          = "nginx"
      upstream_file = "$DIR/nginx2/upstream.conf"
      reload        = ["$NGINX_BIN", "-p", "$DIR/nginx2/", "-c", "$DIR/nginx2/nginx.conf", "-e", "$DIR/nginx2/error.log", "-s", "reload"]
      access_log    = "$DIR/nginx2/golive.json.log"
    }
  }
}
HCL
  fi
  PATH="$PGBIN:$PATH" $BIN/golive-agent run --config "$DIR/agent-$i.hcl" \
    --metrics-addr 127.0.0.1:$((BASE+10+i)) --grpc-addr "" >"$DIR/agent-$i.log" 2>&1 &
  PIDS+=($!)
done
run $BIN/golive-agent check --config "$DIR/agent-1.hcl"
wait_for 30 "3 agents" bash -c "$C status | grep -q 'agents: 3 connected'"
run $C status
run $C agents

step "automation is off: a deploy is refused and writes nothing"
run bob deploy --service app --release v2 --artifact file:///nonexistent.tar.gz --sha256 0000000000000000000000000000000000000000000000000000000000000000 --hosts web-1 || echo "(exit $? — refused, as it must be)"

step "roles: bob (deployer) may not authorize; a wrong phrase is refused"
run bob authorize "Start automation now" --ttl 10m || echo "(exit $? — refused)"
run alice authorize "yes do it" || echo "(exit $? — refused)"

step "alice authorizes automation for 10 minutes"
run alice authorize "Start automation now" --ttl 10m --reason "demo"
TOKEN=$($C approval -o json | sed -n 's/.*"fencing_token": \([0-9]*\),.*/\1/p')
wait_for 5 "token on every agent" bash -c "$C agents -o json | grep -c '\"fencing_token\": $TOKEN,' | grep -q 3"
run $C agents
echo "each agent's own view (its /status):"
for i in 1 2 3; do printf '  web-%s: ' $i; http_get $((BASE+10+i)) /status | sed 's/.*"fencing_token":\([0-9]*\).*/fencing_token=\1/'; done

ART=http://127.0.0.1:$((BASE+1))/artifacts
sha() { awk -v f="$1.tar.gz" '$2==f {print $1}' dist/SHA256SUMS; }
serving() { for i in 1 2 3; do printf '  web-%s answers: %s\n' $i "$(http_get $((BASE+20+i)) /version 2>/dev/null || echo DOWN)"; done; }

rollout_id() { sed -n 's/^ *"id": "\(.*\)",$/\1/p' | head -1; }

step "two-person rule: alice has the deployer role, but she authorized, so she may not also deploy"
run alice deploy --service app --release v1 --artifact $ART/sampleapp-v1.tar.gz --sha256 "$(sha sampleapp-v1)" || echo "(exit $? — refused by the two-person rule: another deployer, bob, must deploy)"

step "pre-live checks on every host (no approval needed; every rollout runs them first)"
run $C preflight --service app --release v1 --artifact $ART/sampleapp-v1.tar.gz

step "bob deploys v1 everywhere at once (preflight, fetch, sha256, safe unpack, swap, restart, health, smoke)"
run bob deploy --service app --release v1 --artifact $ART/sampleapp-v1.tar.gz --sha256 "$(sha sampleapp-v1)" --min-healthy 1s --wait
serving

step "plan v2 as a canary then one host per wave (dry run: nothing written, no approval needed)"
run bob deploy --service app --release v2 --artifact $ART/sampleapp-v2.tar.gz --sha256 "$(sha sampleapp-v2)" --canary 1 --batch 1 --dry-run

step "roll out v2: canary web-1, then a wave per host, each gated on 2s of measured health; followed live with watch"
ID=$(bob deploy --service app --release v2 --artifact $ART/sampleapp-v2.tar.gz --sha256 "$(sha sampleapp-v2)" --canary 1 --batch 1 --min-healthy 2s -o json | rollout_id)
run $C watch "$ID"
serving

step "roll out broken v3: the canary fails its health check, the gate fails, every touched host goes back to v2 on its own"
ID=$(bob deploy --service app --release v3 --artifact $ART/sampleapp-v3.tar.gz --sha256 "$(sha sampleapp-v3)" --canary 1 --batch 1 --min-healthy 2s -o json | rollout_id)
run $C watch "$ID" || echo "(exit $? — v3 rolled back, as it must be)"
serving
run $C history --service app

if [[ -n $NGINX ]]; then
  through() { http_get $((BASE+27)) /version 2>/dev/null || echo DOWN; }
  slots() { printf '  nginx answers: %s   blue :%s answers: %s   green :%s answers: %s\n' "$(through)" \
    $((BASE+25)) "$(http_get $((BASE+25)) /version 2>/dev/null || echo stopped)" $((BASE+26)) "$(http_get $((BASE+26)) /version 2>/dev/null || echo stopped)"; }
  step "blue-green behind nginx on web-3: v1 starts in a slot, health-checked on its own port, then nginx is switched to it"
  run bob deploy --service web --release v1 --artifact $ART/sampleapp-v1.tar.gz --sha256 "$(sha sampleapp-v1)" --min-healthy 1s --wait
  slots
  step "v2 to the idle slot: 20% of web-3's traffic for the 2s bake, then all of it; v1 stays warm for keep_warm (15m)"
  run bob deploy --service web --release v2 --artifact $ART/sampleapp-v2.tar.gz --sha256 "$(sha sampleapp-v2)" --weight 20% --min-healthy 2s --wait
  slots
  step "rollback is a switch back to the warm slot: no restart"
  t0=$(date +%s%N)
  run bob rollback --service web --wait
  t1=$(date +%s%N)
  ok=0; until (( ok >= 20 )); do if [[ $(through) == v1* ]]; then ok=$((ok+1)); else ok=0; fi; done
  echo "  rollback confirmed by the agent (nginx reloaded, old workers gone) $(( (t1 - t0) / 1000000 )) ms after the command started;"
  echo "  then 20 new connections in a row through nginx all reached v1"
  slots
fi

if [[ -n $NGINX2 ]]; then
  through2() { http_get $((BASE+28)) /version 2>/dev/null || echo DOWN; }
  LOAD=()
  # shop_load SECONDS: real traffic, GET / through the second nginx from 6
  # loops (new connections), until SECONDS pass or shop_stop.
  shop_load() {
    local end=$((SECONDS+$1))
    for _ in 1 2 3 4 5 6; do
      ( while (( SECONDS < end )); do http_get $((BASE+28)) / >/dev/null 2>&1 || true; done ) &
      LOAD+=($!); PIDS+=($!)
    done
  }
  shop_stop() { kill "${LOAD[@]}" 2>/dev/null || true; wait "${LOAD[@]}" 2>/dev/null || true; LOAD=(); }
  # nginx_switched: the agent rewrote the upstream and the reloaded nginx's
  # only worker is a new one.
  nginx_switched() { ! grep -q '"generation":"initial"' "$NG2/upstream.conf" && [[ $(ps -o pid= --ppid "$NG2PID" | tr -d ' ') != "$1" && $(ps -o pid= --ppid "$NG2PID" | wc -l) == 1 ]]; }

  step "real traffic judges releases: shop-v1 on web-3; once nginx serves it, a small load (6 bash loops, no curl, through nginx :$((BASE+28))) runs during its 8s bake"
  W0=$(ps -o pid= --ppid "$NG2PID" | tr -d ' ')
  ID=$(bob deploy --service shop --release shop-v1 --artifact $ART/sampleapp-v1.tar.gz --sha256 "$(sha sampleapp-v1)" --min-healthy 8s -o json | rollout_id)
  wait_for 60 "nginx switched to shop-v1" nginx_switched "$W0"
  shop_load 120
  run $C watch "$ID"
  echo "  nginx answers: $(through2); its JSON access log holds $(wc -l <"$NG2/golive.json.log") requests so far"

  step "shop-v4: its health checks pass (/healthz 200), but 5% of / answer 500; the gate judges nginx's counts for the new slot, not the probe"
  ID=$(bob deploy --service shop --release shop-v4 --artifact $ART/sampleapp-v4.tar.gz --sha256 "$(sha sampleapp-v4)" --min-healthy 20s -o json | rollout_id)
  run $C watch "$ID" || echo "(exit $? — shop-v4 failed the real-traffic gate and rolled back on its own, well before its 20s bake ended)"
  shop_stop
  for p in $((BASE+31)) $((BASE+32)); do
    printf '  slot :%s  /version: %s  /healthz: %s\n' $p "$(http_get $p /version 2>/dev/null || echo stopped)" "$(http_get $p /healthz 2>/dev/null || echo -)"
  done
  echo "  nginx answers: $(through2); 500s nginx logged for shop: $(grep -c '"status":"500"' "$NG2/golive.json.log" || true)"
fi

if [[ -n $PGBIN ]]; then
  step "ledger v1 on web-1: its migration creates and fills the accounts table, after a verified backup"
  run $C preflight --service ledger --release ledger-v1 --artifact $ART/ledger-v1.tar.gz || echo "(exit $? — no backup younger than 24h exists yet)"
  echo "the first deploy skips that one check, on the record (audited); its migration will take the first backup:"
  run bob deploy --service ledger --release ledger-v1 --artifact $ART/ledger-v1.tar.gz --sha256 "$(sha ledger-v1)" --min-healthy 1s --skip-check backup --wait
  run $PSQL -d ledger -c "SELECT count(*) AS accounts, sum(balance_cents) AS cents FROM accounts"

  step "ledger v2: pg_dump -Fc, restored into a scratch database and row counts compared, and only then the migration"
  run $C preflight --service ledger --release ledger-v2 --artifact $ART/ledger-v2.tar.gz
  run bob deploy --service ledger --release ledger-v2 --artifact $ART/ledger-v2.tar.gz --sha256 "$(sha ledger-v2)" --min-healthy 1s --wait
  run $PSQL -d ledger -c "SELECT count(*) AS accounts, sum(balance_cents) AS cents, min(currency) AS currency FROM accounts"
  run $C backups --service ledger
  BID=$($C backups --service ledger -o json | sed -n 's/^ *"id": "\(.*ledger-v2\)",$/\1/p' | head -1)

  step "a plain rollback would keep v2's schema; this one also restores the backup taken before v2's migration"
  run bob rollback --service ledger --restore-db "$BID" || echo "(exit $? — a restore needs --yes)"
  run bob rollback --service ledger --restore-db "$BID" --yes --wait
  run $PSQL -d ledger -c "SELECT count(*) AS accounts, sum(balance_cents) AS cents FROM accounts"
  run $PSQL -d ledger -c "SELECT string_agg(column_name, ', ') AS columns FROM information_schema.columns WHERE table_name = 'accounts'"
  run $C backups --service ledger
fi

step "stop automation: every agent drops the token at once (bob may pull the brake too)"
run bob stop --reason "demo over"
wait_for 5 "token gone" bash -c "! $C agents -o json | grep -q '\"fencing_token\": $TOKEN,'"
run $C agents
run $C approval

step "without approval, the operator's rollback still works (the safety path, audited): back to v1"
run bob rollback --service app --wait
serving

step "the audit log: every action under the certificate identity that made it, and its hash chain verified"
run $C audit
run $C audit verify

step "done: stopping everything"
