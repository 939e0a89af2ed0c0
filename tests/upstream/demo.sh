#!/usr/bin/env bash
# `make demo`: a stable and a canary server, and weir ahead of them sending 10 % to the canary. Runs in the
# foreground; Ctrl-C stops all three.
set -u
# Job control puts each server in its own process group, so Ctrl-C reaches only this script, whose trap then
# stops the three in order.
set -m
cd "$(dirname "$0")/../.." || exit 1
B=${B:-build}
# Addresses, overridable so the integration test can run the demo beside other servers.
PORT=${WEIR_DEMO_PORT:-8080}
ADMIN=${WEIR_DEMO_ADMIN:-9901}
STABLE=${WEIR_DEMO_STABLE:-9001}
CANARY=${WEIR_DEMO_CANARY:-9002}
CONTROL=${WEIR_DEMO_CONTROL:-/tmp/weir.sock}
CTL="$B/weirctl"
[ "$CONTROL" = /tmp/weir.sock ] || CTL="$B/weirctl -s $CONTROL"

for bin in weir weirctl weir-upstream; do
    if [ ! -x "$B/$bin" ]; then
        echo "demo: $B/$bin is missing; run 'make all' first" >&2
        exit 1
    fi
done

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "demo: stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    exit "${1:-0}"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

# Polls until 127.0.0.1:$1 accepts a connection (up to 10 s).
wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "demo: nothing listens on 127.0.0.1:$1; is the port taken?" >&2
    return 1
}

"$B/weir-upstream" --listen 127.0.0.1:$STABLE --name stable &
pids+=($!)
"$B/weir-upstream" --listen 127.0.0.1:$CANARY --name canary &
pids+=($!)
wait_port "$STABLE" && wait_port "$CANARY" || stop 1

"$B/weir" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN" --control "$CONTROL" \
    --stable "127.0.0.1:$STABLE" --canary "127.0.0.1:$CANARY" --weight canary 10 --variant-header on &
pids+=($!)
wait_port "$PORT" || stop 1

cat <<EOF

weir demo: weir on 127.0.0.1:$PORT (admin 127.0.0.1:$ADMIN, control $CONTROL)
           stable on 127.0.0.1:$STABLE, canary on 127.0.0.1:$CANARY, canary weight 10 %

Try, in another terminal:
  curl -si 127.0.0.1:$PORT/                     # "hello from stable" (or canary), see x-weir-variant
  for i in \$(seq 100); do curl -s 127.0.0.1:$PORT/; done | sort | uniq -c
  $CTL set header-route dev header x-canary exact 1
  curl -s -H 'x-canary: 1' 127.0.0.1:$PORT/     # always "hello from canary"
  $CTL show routes
  $CTL get weight
  $CTL set weight 50
  $CTL show stats
  curl -s 127.0.0.1:$ADMIN/metrics | grep weir_requests_total
  curl -s 127.0.0.1:$ADMIN/stats

Ctrl-C stops all three.
EOF

# Runs until Ctrl-C, or until one of the three exits on its own.
wait -n "${pids[@]}"
echo "demo: a process exited on its own" >&2
stop 1
