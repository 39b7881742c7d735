#!/usr/bin/env bash
# golive demo: a controller on an embedded etcd and three agents, all on
# loopback in a temp dir; automation refused, authorized, seen by every agent,
# revoked. Everything started here is stopped on exit and on Ctrl-C.
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

for p in $BASE $((BASE+1)) $((BASE+2)) $((BASE+3)) $((BASE+11)) $((BASE+12)) $((BASE+13)); do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use: set DEMO_PORT_BASE to another base port" >&2; exit 1
  fi
done

export GOLIVE_ADDR=127.0.0.1:$BASE
C="$BIN/golive-controller --as demo-operator"
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
  --heartbeat-interval 1s >"$DIR/controller.log" 2>&1 &
PIDS+=($!)
wait_for 30 "controller" $C status

step "start three agents (web-1, web-2, web-3)"
for i in 1 2 3; do
  $BIN/golive-agent run --controller "$GOLIVE_ADDR" --host-id web-$i --state-dir "$DIR/agent-$i" \
    --metrics-addr 127.0.0.1:$((BASE+10+i)) --grpc-addr "" --label role=web --label zone=z$i >"$DIR/agent-$i.log" 2>&1 &
  PIDS+=($!)
done
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
for i in 1 2 3; do printf '  web-%s: ' $i; curl -s 127.0.0.1:$((BASE+10+i))/status | sed 's/.*"fencing_token":\([0-9]*\).*/fencing_token=\1/'; done

step "stop automation: every agent drops the token at once"
run $C stop --reason "demo over"
wait_for 5 "token gone" bash -c "! $C agents -o json | grep -q '\"fencing_token\": \"$TOKEN\"'"
run $C agents
run $C approval

step "the audit log"
run $C audit

step "done: stopping everything"
