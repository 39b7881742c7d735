#!/usr/bin/env bash
# golive demo: a controller on an embedded etcd and three agents running the
# sample service, all on loopback in a temp dir: automation refused, then
# authorized (every agent holds the token), v1 and v2 deployed, broken v3
# rolled back on its own, an operator rollback without approval, revoke.
# Everything started here is stopped on exit and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$PWD/bin
BASE=${DEMO_PORT_BASE:-17400}
DIR=$(mktemp -d -t golive-demo-XXXXXX)
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

for p in $BASE $((BASE+1)) $((BASE+2)) $((BASE+3)) $((BASE+11)) $((BASE+12)) $((BASE+13)) $((BASE+21)) $((BASE+22)) $((BASE+23)); do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use: set DEMO_PORT_BASE to another base port" >&2; exit 1
  fi
done

export GOLIVE_ADDR=127.0.0.1:$BASE
C="$BIN/golive-controller --as demo-operator"
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

step "start the controller on an embedded etcd in $DIR"
$BIN/golive-controller serve --data-dir "$DIR/controller" --listen "$GOLIVE_ADDR" --metrics-addr 127.0.0.1:$((BASE+1)) \
  --embedded-etcd-client 127.0.0.1:$((BASE+2)) --embedded-etcd-peer 127.0.0.1:$((BASE+3)) --replica-id demo \
  --heartbeat-interval 1s --artifacts-dir "$PWD/dist" >"$DIR/controller.log" 2>&1 &
PIDS+=($!)
wait_for 30 "controller" $C status

step "start three agents (web-1, web-2, web-3), each running the sample service on its own port"
for i in 1 2 3; do
  cat >"$DIR/agent-$i.hcl" <<HCL
host_id   = "web-$i"
state_dir = "$DIR/agent-$i"
labels    = { role = "web", zone = "z$i" }
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
}
HCL
  $BIN/golive-agent run --controller "$GOLIVE_ADDR" --config "$DIR/agent-$i.hcl" \
    --metrics-addr 127.0.0.1:$((BASE+10+i)) --grpc-addr "" >"$DIR/agent-$i.log" 2>&1 &
  PIDS+=($!)
done
run $BIN/golive-agent check --config "$DIR/agent-1.hcl"
wait_for 30 "3 agents" bash -c "$C status | grep -q 'agents: 3 connected'"
run $C status
run $C agents

step "automation is off: a deploy is refused and writes nothing"
run $C deploy --service app --release v2 --artifact file:///nonexistent.tar.gz --sha256 00 --hosts web-1 || echo "(exit $? — refused, as it must be)"

step "a wrong phrase is refused"
run $C authorize "yes do it" || echo "(exit $? — refused)"

step "a person authorizes automation for 10 minutes"
run $C authorize "Start automation now" --ttl 10m --reason "demo"
TOKEN=$($C approval -o json | sed -n 's/.*"fencing_token": "\([0-9]*\)".*/\1/p')
wait_for 5 "token on every agent" bash -c "$C agents -o json | grep -c '\"fencing_token\": \"$TOKEN\"' | grep -q 3"
run $C agents
echo "each agent's own view (its /status):"
for i in 1 2 3; do printf '  web-%s: ' $i; http_get $((BASE+10+i)) /status | sed 's/.*"fencing_token":\([0-9]*\).*/fencing_token=\1/'; done

ART=http://127.0.0.1:$((BASE+1))/artifacts
sha() { awk -v f="sampleapp-$1.tar.gz" '$2==f {print $1}' dist/SHA256SUMS; }
serving() { for i in 1 2 3; do printf '  web-%s answers: %s\n' $i "$(http_get $((BASE+20+i)) /version 2>/dev/null || echo DOWN)"; done; }

rollout_id() { sed -n 's/^ *"id": "\(.*\)",$/\1/p' | head -1; }

step "deploy v1 everywhere at once (fetch, sha256, safe unpack, swap, restart, health)"
run $C deploy --service app --release v1 --artifact $ART/sampleapp-v1.tar.gz --sha256 "$(sha v1)" --min-healthy 1s --wait
serving

step "plan v2 as a canary then one host per wave (dry run: nothing written, no approval needed)"
run $C deploy --service app --release v2 --artifact $ART/sampleapp-v2.tar.gz --sha256 "$(sha v2)" --canary 1 --batch 1 --dry-run

step "roll out v2: canary web-1, then a wave per host, each gated on 2s of measured health; followed live with watch"
ID=$($C deploy --service app --release v2 --artifact $ART/sampleapp-v2.tar.gz --sha256 "$(sha v2)" --canary 1 --batch 1 --min-healthy 2s -o json | rollout_id)
run $C watch "$ID"
serving

step "roll out broken v3: the canary fails its health check, the gate fails, every touched host goes back to v2 on its own"
ID=$($C deploy --service app --release v3 --artifact $ART/sampleapp-v3.tar.gz --sha256 "$(sha v3)" --canary 1 --batch 1 --min-healthy 2s -o json | rollout_id)
run $C watch "$ID" || echo "(exit $? — v3 rolled back, as it must be)"
serving
run $C agents
run $C history --service app

step "stop automation: every agent drops the token at once"
run $C stop --reason "demo over"
wait_for 5 "token gone" bash -c "! $C agents -o json | grep -q '\"fencing_token\": \"$TOKEN\"'"
run $C agents
run $C approval

step "without approval, the operator's rollback still works (the safety path, audited): back to v1"
run $C rollback --service app --wait
serving

step "the audit log"
run $C audit

step "done: stopping everything"
