#!/usr/bin/env bash
# Side-by-side load benchmark: weir, nginx and HAProxy as 90/10 splitting reverse proxies in front of the same two
# upstreams, plus "direct" (the load generator straight to the stable upstream: the ceiling).
#
#   bench/run.sh [SCENARIO...]        scenarios: split (default) routes16 sticky mirror-live mirror-slow mirror-dead
#                                                 body64k body1m weight-churn, or "all"
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]  length of one measured wrk run     BENCH_ROUNDS [5]  rounds, targets interleaved
#   BENCH_CONNS ["1 50 256"]  keep-alive connection counts  BENCH_TARGETS ["weir nginx haproxy direct"]
#   BENCH_IDLE_CONNS [2000]  idle connections for the memory probe (0 skips it)
#   BENCH_PROXY_CPU [1] / BENCH_LOAD_CPU [0]  CPUs for the proxy and for wrk + upstreams
#   BENCH_WRK_THREADS [1]  BENCH_WARMUP [1s]  BENCH_PORT_BASE [18400]  BENCH_OUT [bench/RESULTS.md]
#   BENCH_BOUND [1]  with split: the bound section (bench/bound.sh; perf and valgrind when present), 0 skips it
#   SCENARIO  same as the arguments;  WEIR / WEIRCTL  binaries [build/weir, build/weirctl]
# Everything listens on 127.0.0.1, lives in one temporary directory, and is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEIR=${WEIR:-$ROOT/build/weir}
WEIR_NOSTATS=${WEIR_NOSTATS:-$ROOT/build/nostats/weir}
WEIRCTL=${WEIRCTL:-$ROOT/build/weirctl}
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNS:-"1 50 256"}
TARGETS=${BENCH_TARGETS:-"weir weir-nostats nginx haproxy direct"}
IDLE_N=${BENCH_IDLE_CONNS:-2000}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
PORT_BASE=${BENCH_PORT_BASE:-18400}
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS.md}
ALL_SCENARIOS="split routes16 sticky mirror-live mirror-slow mirror-dead body64k body1m weight-churn"
SANITY_N=1000           # requests sent once per target and scenario to check the split and that it serves
CHURN_INTERVAL_US=10000 # microseconds between two weight changes in weight-churn

PORT_STABLE=$((PORT_BASE + 1))
PORT_CANARY=$((PORT_BASE + 2))
PORT_DEAD=$((PORT_BASE + 3))    # nothing ever listens here: the dead mirror target
PORT_SLOW=$((PORT_BASE + 4))    # the upstream nginx answers here at 1 byte/s: the slow mirror target
PORT_PROXY=$((PORT_BASE + 10))

NGINX_BIN=""
HAPROXY_BIN=""
WRK_BIN=""
TMP=""
PIDS=()                 # every process started here, killed on exit
CREATED_POLICY=0

# shellcheck source=bench/bound.sh
. "$ROOT/bench/bound.sh"

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------------------------
# Cleanup: kill what we started (children of nginx masters too), remove our policy-rc.d and the temp dir.

kill_tree() {
    local pid=$1 kids c
    [ -d "/proc/$pid" ] || return 0
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for c in $kids; do kill -TERM "$c" 2>/dev/null || true; done
    local i
    for ((i = 0; i < 50; i++)); do
        if [ ! -d "/proc/$pid" ] || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then break; fi
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    for c in $kids; do kill -KILL "$c" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill_tree "$pid"; done
    PIDS=()
    if [ "$CREATED_POLICY" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -n "$TMP" ] && [ -d "$TMP" ] && [ -z "${BENCH_KEEP_TMP:-}" ]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Runs a command in the background and waits for it, so that a signal to this script is handled at once (bash
# defers traps while a foreground child runs) and the cleanup can kill it.
run_waited() {
    local pid rc=0
    "$@" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

stop_pid() {
    kill_tree "$1"
    forget_pid "$1"
}

# ---------------------------------------------------------------------------------------------------------------
# Tools: nginx, haproxy, wrk from Debian when missing, without starting their system services.

find_bin() {
    local name=$1 d
    for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
        [ -x "$d/$name" ] && { echo "$d/$name"; return 0; }
    done
    command -v "$name" 2>/dev/null || true
}

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        die "missing packages ($*) and not root: install them with apt-get, then run again"
    fi
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY=1
    fi
    log "bench: installing $*"
    # The package lists may be missing or stale on a fresh machine: update once, only when the install fails.
    local rc=0
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; then
        apt-get update -q >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 || rc=$?
    fi
    if [ "$CREATED_POLICY" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        CREATED_POLICY=0
    fi
    # The packages enable their services for the next boot and may start one where policy-rc.d is not honoured:
    # this harness runs its own instances only, so undo both for what it just installed.
    local pkg svc
    for pkg in "$@"; do
        case $pkg in
        nginx*) svc=nginx ;;
        haproxy) svc=haproxy ;;
        *) continue ;;
        esac
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
        rm -f "/etc/systemd/system/multi-user.target.wants/$svc.service"
        if [ -s "/run/$svc.pid" ] && kill -0 "$(cat "/run/$svc.pid")" 2>/dev/null; then
            log "bench: stopping the $svc service the install started"
            kill_tree "$(cat "/run/$svc.pid")"
        fi
    done
    return "$rc"
}

ensure_tools() {
    local want=()
    NGINX_BIN=$(find_bin nginx)
    HAPROXY_BIN=$(find_bin haproxy)
    WRK_BIN=$(find_bin wrk)
    [ -n "$NGINX_BIN" ] || want+=(nginx)
    [ -n "$HAPROXY_BIN" ] || [[ " $TARGETS " != *" haproxy "* ]] || want+=(haproxy)
    [ -n "$WRK_BIN" ] || want+=(wrk)
    command -v curl >/dev/null || want+=(curl)
    command -v taskset >/dev/null || want+=(util-linux)
    command -v cc >/dev/null || want+=(gcc libc6-dev)
    if [[ " $SCENARIOS " == *" weight-churn "* && " $TARGETS " == *" haproxy "* ]]; then
        command -v socat >/dev/null || want+=(socat)
    fi
    if [ ${#want[@]} -gt 0 ]; then
        # nginx-light is the smaller build of older releases; plain nginx has every module used here.
        if ! apt_install "${want[@]}"; then
            [[ " ${want[*]} " == *" nginx "* ]] || die "could not install ${want[*]}"
            want=("${want[@]/#nginx/nginx-light}")
            apt_install "${want[@]}" || die "could not install ${want[*]}"
        fi
        NGINX_BIN=$(find_bin nginx)
        HAPROXY_BIN=$(find_bin haproxy)
        WRK_BIN=$(find_bin wrk)
    fi
    if [ -z "$NGINX_BIN" ] || [ -z "$WRK_BIN" ]; then die "nginx and wrk are required"; fi
    # The bound section's tools are optional: without them it reports n/a for what they measure.
    if [[ " $SCENARIOS " == *" split "* ]] && [ "${BENCH_BOUND:-1}" != 0 ]; then
        want=()
        command -v valgrind >/dev/null || want+=(valgrind)
        command -v perf >/dev/null || want+=(linux-perf)
        if [ ${#want[@]} -gt 0 ] && ! apt_install "${want[@]}"; then
            log "bench: warning: could not install ${want[*]}; the bound section reports n/a for them"
        fi
    fi
}

build_helper() {
    mkdir -p "$ROOT/build/bench"
    local bin=$ROOT/build/bench/idle_conns src=$ROOT/bench/idle_conns.c
    if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
        cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$bin" "$src" || die "cannot build $bin"
    fi
    IDLE_BIN=$bin
    CTL_BIN=$ROOT/build/bench/ctl_latency
    if [ ! -x "$CTL_BIN" ] || [ "$ROOT/bench/ctl_latency.c" -nt "$CTL_BIN" ]; then
        cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$CTL_BIN" "$ROOT/bench/ctl_latency.c" ||
            die "cannot build $CTL_BIN"
    fi
}

# Beyond the load table: the cost of one routing decision (bench/micro_decide.c, no I/O) and the time a rollout
# engine waits for `set weight` while weir serves 50 keep-alive connections (bench/ctl_latency.c, 1,000 changes).
# Writes Markdown to stdout.
extras() {
    local micro=$ROOT/build/bench/micro_decide dir=$TMP/ctl wpid
    echo "## Decision cost (router only)"
    echo
    if make -s -C "$ROOT" build/bench/micro_decide >/dev/null 2>&1 && [ -x "$micro" ]; then
        echo '```'
        taskset -c "$PROXY_CPU" "$micro" 2>&1
        echo '```'
    else
        echo "n/a: build/bench/micro_decide could not be built"
    fi
    echo
    echo "## Control change latency under load"
    echo
    start_upstream split
    if ! start_weir split; then
        echo "n/a: $START_ERR"
        stop_pid "$UPSTREAM_PID"
        return
    fi
    wpid=$TARGET_PID
    taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c50 -d30s "http://127.0.0.1:$PORT_PROXY/" >"$TMP/ctl-wrk.txt" 2>&1 &
    local wrk=$!
    PIDS+=("$wrk")
    sleep 1
    echo "\`set weight\` sent to reply received, one control connection, 1,000 changes, while wrk keeps 50"
    echo "connections busy on weir (each change is acknowledged by every worker before the reply):"
    echo
    echo '```'
    timeout 60 "$CTL_BIN" "$WEIR_SOCK" 1000 2>&1 || echo "ctl_latency failed"
    echo '```'
    stop_pid "$wrk"
    stop_pid "$wpid"
    stop_pid "$UPSTREAM_PID"
    echo
}

# ---------------------------------------------------------------------------------------------------------------
# Small helpers: time, ports, /proc accounting, waiting for a listener.

duration_s() {
    local d=$1
    case $d in
    *ms) echo 1 ;;
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
    esac
}

port_busy() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

# "utime stime", in clock ticks, summed over the given processes (all their threads).
proc_ut_st() {
    local u=0 st=0 pid s f
    for pid in "$@"; do
        s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        s=${s##*) }
        read -r -a f <<<"$s"
        u=$((u + f[11]))
        st=$((st + f[12]))
    done
    echo "$u $st"
}

# Sum of utime+stime, in clock ticks, of the given processes.
proc_ticks() {
    local u s
    read -r u s < <(proc_ut_st "$@")
    echo $((u + s))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# "busy total" jiffies of one CPU from /proc/stat.
cpu_jiffies() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# The last non-empty line of the first file that has one, without a leading timestamp, fit for a table cell.
last_err() {
    local f line
    for f in "$@"; do
        line=$(grep -v '^[[:space:]]*$' "$f" 2>/dev/null | tail -n 1) || continue
        [ -n "$line" ] || continue
        printf '%s' "$line" | sed -E 's/^[0-9]{4}\/[0-9]{2}\/[0-9]{2} [0-9:]+ //; s/^\[[A-Z]+\] *//' |
            tr '|' '/' | cut -c1-120
        return 0
    done
    echo "no output"
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# Waits (bounded) until PORT answers an HTTP request; fails early when PID died.
wait_http() {
    local port=$1 pid=${2:-} i
    for ((i = 0; i < 100; i++)); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && return 0
        sleep 0.05
    done
    return 1
}

wait_unix() {
    local path=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        [ -S "$path" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------------------------------------------------------
# Scenarios.

scenario_title() {
    case $1 in
    split) echo "90/10 weighted split, sticky off, ~100-byte responses" ;;
    routes16) echo "90/10 split behind 16 header routes that never match" ;;
    sticky) echo "90/10 split, sticky on header x-user (a random user per request)" ;;
    mirror-live) echo "all traffic to stable, 100 % mirrored to a live canary" ;;
    mirror-slow) echo "all traffic to stable, 100 % mirrored to a canary that answers at 1 byte/s" ;;
    mirror-dead) echo "all traffic to stable, 100 % mirrored to a canary port where nothing listens" ;;
    body64k) echo "90/10 split, 64 KiB responses" ;;
    body1m) echo "90/10 split, 1 MiB responses" ;;
    weight-churn) echo "90/10 split while the canary weight changes every 10 ms (10 <-> 11)" ;;
    esac
}

body_bytes() {
    case $1 in
    body64k) echo 65536 ;;
    body1m) echo 1048576 ;;
    *) echo 100 ;;
    esac
}

is_mirror() { [ "$1" = mirror-live ] || [ "$1" = mirror-slow ] || [ "$1" = mirror-dead ]; }

canary_weight() { if is_mirror "$1"; then echo 0; else echo 10; fi; }

# Where the proxies send canary traffic: the dead port in mirror-dead.
canary_port() {
    case $1 in
    mirror-dead) echo "$PORT_DEAD" ;;
    mirror-slow) echo "$PORT_SLOW" ;;
    *) echo "$PORT_CANARY" ;;
    esac
}

# Why an anchor has no equivalent of a scenario (empty: it has one).
anchor_na() {
    local target=$1 scen=$2
    case $target:$scen in
    haproxy:mirror-*) echo "n/a (HAProxy has no built-in request mirroring)" ;;
    nginx:weight-churn) echo "n/a (open-source nginx cannot change weights at run time)" ;;
    nginx:mirror-slow) echo "n/a (nginx's mirror holds each client request until its copy ends: at 1 byte/s a run does not finish)" ;;
    esac
}

write_lua() {
    cat >"$TMP/sticky.lua" <<'EOF'
-- A different user on every request, so the sticky hash is computed for a fresh key each time.
local n = 0
request = function()
    n = n + 1
    return wrk.format(nil, nil, {["x-user"] = "user-" .. math.random(1, 1000000) .. "-" .. n})
end
EOF
}

# ---------------------------------------------------------------------------------------------------------------
# Upstreams: one nginx, two server blocks, pinned to the load CPU.

make_body() {
    local variant=$1 size=$2 file=$3 head
    head="variant=$variant;"
    {
        printf '%s' "$head"
        head -c $((size - ${#head} - 1)) /dev/zero | tr '\0' 'x'
        printf '\n'
    } >"$file"
}

nginx_user_line() {
    # As root the workers would otherwise drop to nobody; run them as whoever runs the benchmark.
    if [ "$(id -u)" = 0 ]; then echo "user $(id -un) $(id -gn);"; fi
}

start_upstream() {
    local scen=$1 dir=$TMP/upstream size
    size=$(body_bytes "$scen")
    mkdir -p "$dir/logs" "$dir/www/stable" "$dir/www/canary"
    make_body stable "$size" "$dir/www/stable/body"
    make_body canary "$size" "$dir/www/canary/body"
    local serve_stable serve_canary
    if [ "$size" -le 100 ]; then
        # return avoids a file open per request: the upstreams share a CPU with wrk and must stay cheap.
        serve_stable="return 200 \"$(tr -d '\n' <"$dir/www/stable/body")\\n\";"
        serve_canary="return 200 \"$(tr -d '\n' <"$dir/www/canary/body")\\n\";"
    else
        serve_stable="try_files /body =404;"
        serve_canary="try_files /body =404;"
    fi
    cat >"$dir/nginx.conf" <<EOF
$(nginx_user_line)
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    log_format probe '\$request_uri';
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/tmp_body;
    proxy_temp_path $dir/tmp_proxy;
    fastcgi_temp_path $dir/tmp_fcgi;
    uwsgi_temp_path $dir/tmp_uwsgi;
    scgi_temp_path $dir/tmp_scgi;
    server {
        listen 127.0.0.1:$PORT_STABLE reuseport backlog=4096;
        root $dir/www/stable;
        add_header x-variant stable;
        location / { $serve_stable }
        location /__probe { access_log $dir/logs/probe-stable.log probe; $serve_stable }
    }
    server {
        listen 127.0.0.1:$PORT_CANARY reuseport backlog=4096;
        root $dir/www/canary;
        add_header x-variant canary;
        location / { $serve_canary }
        location /__probe { access_log $dir/logs/probe-canary.log probe; $serve_canary }
    }
    server {
        listen 127.0.0.1:$PORT_SLOW reuseport backlog=4096;
        root $dir/www/canary;
        limit_rate 1;
        location / { $serve_canary }
    }
}
EOF
    taskset -c "$LOAD_CPU" "$NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        >"$dir/logs/stdout" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    wait_http "$PORT_STABLE" "$UPSTREAM_PID" && wait_http "$PORT_CANARY" "$UPSTREAM_PID" && return 0
    die "upstream nginx did not start: $(last_err "$dir/logs/error.log" "$dir/logs/stdout")"
}

# ---------------------------------------------------------------------------------------------------------------
# Targets. Each start_* sets TARGET_PID (the process to account), TARGET_PORT, TARGET_ACCT (pids to sum CPU of)
# and TARGET_RSS_PID (the process that holds connections); returns non-zero with START_ERR on failure.

start_weir() {
    local scen=$1 dir=$TMP/weir args
    mkdir -p "$dir"
    if [ ! -x "$WEIR" ]; then
        START_ERR="n/a (weir: $WEIR missing; run make)"
        return 1
    fi
    rm -f "$dir/control.sock"
    args=(--listen "127.0.0.1:$PORT_PROXY" --stable "127.0.0.1:$PORT_STABLE"
        --canary "127.0.0.1:$(canary_port "$scen")" --weight canary "$(canary_weight "$scen")"
        --workers 1 --admin off --control "$dir/control.sock" --log-level error)
    if [ "$scen" = sticky ]; then args+=(--sticky header:x-user); fi
    taskset -c "$PROXY_CPU" "$WEIR" "${args[@]}" >"$dir/weir.log" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    if ! wait_http "$PORT_PROXY" "$TARGET_PID"; then
        START_ERR="n/a (weir did not serve on 127.0.0.1:$PORT_PROXY: $(last_err "$dir/weir.log"))"
        if [ "$scen" = sticky ] && grep -qi sticky "$dir/weir.log"; then
            START_ERR="n/a (weir: not supported yet: $(last_err "$dir/weir.log"))"
        fi
        return 1
    fi
    TARGET_PORT=$PORT_PROXY
    TARGET_ACCT=("$TARGET_PID")
    TARGET_RSS_PID=$TARGET_PID
    setup_weir_scenario "$scen" "$dir/control.sock"
}

weirctl() { "$WEIRCTL" -s "$WEIR_SOCK" "$@"; }

# Applies the scenario's routing over the control socket; a refused command means the feature is not there yet.
setup_weir_scenario() {
    local scen=$1 err i
    WEIR_SOCK=$2
    case $scen in
    routes16 | mirror-live | mirror-slow | mirror-dead | weight-churn) ;;
    *) return 0 ;;
    esac
    if [ ! -x "$WEIRCTL" ]; then
        START_ERR="n/a (weir: $WEIRCTL missing; run make)"
        return 1
    fi
    if ! wait_unix "$WEIR_SOCK" "$TARGET_PID"; then
        START_ERR="n/a (weir: not supported yet: no control socket)"
        return 1
    fi
    local rc=0
    case $scen in
    routes16)
        for ((i = 0; i < 16 && rc == 0; i++)); do
            err=$(weirctl set header-route "r$i" to canary header "x-bench-route-$i" exact on 2>&1 >/dev/null) ||
                rc=$?
        done
        ;;
    mirror-*) err=$(weirctl set mirror-route m 100 to canary path prefix / 2>&1 >/dev/null) || rc=$? ;;
    weight-churn) err=$(weirctl set weight 10 2>&1 >/dev/null) || rc=$? ;;
    esac
    if [ "$rc" -ne 0 ]; then
        [ -n "$err" ] || err="weirctl exit status $rc"
        START_ERR="n/a (weir: not supported yet: $(printf '%s\n' "$err" | head -n 1 | tr '|' '/' | cut -c1-100))"
        return 1
    fi
}

start_nginx_proxy() {
    local scen=$1 dir=$TMP/nginx-proxy key route_ifs="" loc i split
    mkdir -p "$dir/logs"
    # shellcheck disable=SC2016 # nginx variables, expanded by nginx
    key='${request_id}'
    # shellcheck disable=SC2016
    [ "$scen" = sticky ] && key='${http_x_user}'
    if [ "$(canary_weight "$scen")" -gt 0 ]; then
        split="    split_clients \"$key\" \$variant { $(canary_weight "$scen")% canary; * stable; }"
    else
        split="    map \$host \$variant { default stable; }"
    fi
    if [ "$scen" = routes16 ]; then
        for ((i = 0; i < 16; i++)); do
            route_ifs+="        if (\$http_x_bench_route_$i = \"on\") { set \$pick canary; }"$'\n'
        done
    fi
    if is_mirror "$scen"; then
        loc="location / { mirror /__mirror; proxy_pass http://stable; }
        location = /__mirror { internal; proxy_pass http://canary\$request_uri; }"
    else
        loc="location / { proxy_pass http://\$pick; }"
    fi
    cat >"$dir/nginx.conf" <<EOF
$(nginx_user_line)
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log crit;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path $dir/tmp_body;
    proxy_temp_path $dir/tmp_proxy;
    fastcgi_temp_path $dir/tmp_fcgi;
    uwsgi_temp_path $dir/tmp_uwsgi;
    scgi_temp_path $dir/tmp_scgi;
    upstream stable { server 127.0.0.1:$PORT_STABLE; keepalive 64; keepalive_requests 100000000; }
    upstream canary { server 127.0.0.1:$(canary_port "$scen"); keepalive 64; keepalive_requests 100000000; }
$split
    server {
        listen 127.0.0.1:$PORT_PROXY backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        set \$pick \$variant;
$route_ifs        $loc
    }
}
EOF
    taskset -c "$PROXY_CPU" "$NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        >"$dir/logs/stdout" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    if ! wait_http "$PORT_PROXY" "$TARGET_PID"; then
        START_ERR="n/a (nginx did not serve: $(last_err "$dir/logs/error.log" "$dir/logs/stdout"))"
        return 1
    fi
    TARGET_PORT=$PORT_PROXY
    local w
    w=$(children_of "$TARGET_PID")
    # shellcheck disable=SC2206
    TARGET_ACCT=("$TARGET_PID" $w)
    TARGET_RSS_PID=${w%% *}
    [ -n "$TARGET_RSS_PID" ] || TARGET_RSS_PID=$TARGET_PID
}

start_haproxy() {
    local scen=$1 dir=$TMP/haproxy balance routes="" extra_be="" i
    mkdir -p "$dir"
    if [ -z "$HAPROXY_BIN" ]; then
        START_ERR="n/a (haproxy not installed)"
        return 1
    fi
    balance="random(1)"
    [ "$scen" = sticky ] && balance="hdr(x-user)"
    if [ "$scen" = routes16 ]; then
        for ((i = 0; i < 16; i++)); do
            routes+="    use_backend canary_only if { req.hdr(x-bench-route-$i) -m str on }"$'\n'
        done
        extra_be="backend canary_only
    server canary 127.0.0.1:$PORT_CANARY"
    fi
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
    stats socket $dir/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    http-reuse always
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$PORT_PROXY
$routes    default_backend split
backend split
    balance $balance
    server stable 127.0.0.1:$PORT_STABLE weight 90
    server canary 127.0.0.1:$(canary_port "$scen") weight 10
$extra_be
EOF
    taskset -c "$PROXY_CPU" "$HAPROXY_BIN" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    if ! wait_http "$PORT_PROXY" "$TARGET_PID"; then
        START_ERR="n/a (haproxy did not serve: $(last_err "$dir/haproxy.log"))"
        return 1
    fi
    TARGET_PORT=$PORT_PROXY
    TARGET_ACCT=("$TARGET_PID")
    TARGET_RSS_PID=$TARGET_PID
    HA_SOCK=$dir/admin.sock
}

start_direct() {
    TARGET_PID=""
    TARGET_PORT=$PORT_STABLE
    TARGET_ACCT=()
    TARGET_RSS_PID=""
}

start_target() {
    START_ERR=""
    TARGET_PID=""
    case $1 in
    weir) start_weir "$2" ;;
    weir-nostats)
        # The same weir with per-request counting compiled out (make nostats): prices the metrics.
        local WEIR=$WEIR_NOSTATS
        start_weir "$2"
        ;;
    nginx) start_nginx_proxy "$2" ;;
    haproxy) start_haproxy "$2" ;;
    direct) start_direct ;;
    *) START_ERR="n/a (unknown target $1)"; return 1 ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------------
# Weight churn during a run: a bounded background loop on the load CPU.

churn_loop() {
    local target=$1 end_us=$2 max=$3 i=0 fails=0 w now next
    taskset -p -c "$LOAD_CPU" "$BASHPID" >/dev/null 2>&1 || true
    next=${EPOCHREALTIME/./}
    while ((i < max)) && (( ${EPOCHREALTIME/./} < end_us )); do
        w=$((10 + i % 2))
        case $target in
        weir) weirctl set weight "$w" >/dev/null 2>&1 || fails=$((fails + 1)) ;;
        haproxy) echo "set weight split/canary $w" | socat stdio "unix-connect:$HA_SOCK" >/dev/null 2>&1 ||
            fails=$((fails + 1)) ;;
        esac
        i=$((i + 1))
        # Changes are due on a fixed schedule; when one took longer than the interval the next follows at once.
        next=$((next + CHURN_INTERVAL_US))
        now=${EPOCHREALTIME/./}
        if ((next > now)); then sleep "$(printf '0.%06d' $((next - now)))"; fi
    done
    echo "$i $fails"
}

# ---------------------------------------------------------------------------------------------------------------
# Measurements.

# Requests the upstream VARIANT served on its /__probe location (logged there, and only there).
probe_count() {
    local f=$TMP/upstream/logs/probe-$1.log
    if [ -f "$f" ]; then wc -l <"$f"; else echo 0; fi
}

# Requests through the target before it is measured: that it serves, which share goes to the canary, and the
# scenario's feature where it shows from outside (every user stays on one variant; copies reach the canary).
# Writes "OK CANARY" to DIR/sanity and remarks to DIR/check; fails with CHECK_ERR when the job is not done.
check_target() {
    local target=$1 tdir=$2 port=$TARGET_PORT n=$SANITY_N out ok can before
    CHECK_ERR=""
    [ "$(body_bytes "$SCEN")" -gt 100000 ] && n=100
    before=$(probe_count canary)
    if [ "$SCEN" = sticky ]; then
        # 100 users, 10 requests each, through a curl config with one section per request (one connection).
        local i cfg=$TMP/sanity-sticky.cfg
        : >"$cfg"
        for ((i = 0; i < n; i++)); do
            printf 'url = "http://127.0.0.1:%s/__probe?s=%d"\nheader = "x-user: user-%d"\noutput = /dev/null\n' \
                "$port" "$i" $((i / 10)) >>"$cfg"
            printf 'dump-header = -\nnext\n' >>"$cfg"
        done
        out=$(curl -s --max-time 60 -K "$cfg" 2>/dev/null || true)
    else
        out=$(curl -s -o /dev/null -D - --max-time 60 "http://127.0.0.1:$port/__probe?s=[1-$n]" 2>/dev/null || true)
    fi
    read -r ok can < <(printf '%s\n' "$out" | tr -d '\r' | awk 'toupper($0) ~ /^HTTP\/1\.1 200/ {ok++}
        tolower($0) ~ /^x-variant: canary$/ {c++} END {print ok + 0, c + 0}')
    echo "$ok $can" >"$tdir/sanity"
    if [ "$ok" -eq 0 ]; then
        CHECK_ERR="n/a ($target answered no 200 to a check request)"
        return 1
    fi
    local label=$target
    [ "$target" = weir ] && label="weir: not supported yet"
    if [ "$SCEN" = sticky ] && [ "$target" != direct ]; then
        local moved
        moved=$(printf '%s\n' "$out" | tr -d '\r' | awk 'tolower($1) == "x-variant:" {u = int(k++ / 10)
            if ((u in seen) && seen[u] != $2) m[u] = 1; seen[u] = $2} END {print length(m)}')
        if [ "$moved" -gt 0 ]; then
            CHECK_ERR="n/a ($label: sticky header:x-user did not stick, $moved of $((n / 10)) users moved)"
            return 1
        fi
        echo "every one of $((n / 10)) users stayed on one variant" >"$tdir/check"
    fi
    if [ "$SCEN" = routes16 ] && [ "$target" != direct ]; then
        # The routes must exist and work: a request carrying one route's header goes to the canary every time.
        local routed
        routed=$(curl -s -o /dev/null -D - --max-time 30 -H "x-bench-route-7: on" \
            "http://127.0.0.1:$port/__probe?r=[1-20]" 2>/dev/null | tr -d '\r' |
            awk 'tolower($0) ~ /^x-variant: canary$/ {c++} END {print c + 0}')
        if [ "$routed" -ne 20 ]; then
            CHECK_ERR="n/a ($label: a request matching route 7 went to the canary $routed times in 20)"
            return 1
        fi
        echo "matching requests routed to the canary" >"$tdir/check"
    fi
    if [ "$SCEN" = mirror-live ] && [ "$target" != direct ]; then
        # Copies are sent after the client's response: poll (bounded) until they have all arrived.
        local i copies=0
        for ((i = 0; i < 40; i++)); do
            copies=$(($(probe_count canary) - before))
            ((copies >= ok)) && break
            sleep 0.05
        done
        if [ "$copies" -eq 0 ]; then
            CHECK_ERR="n/a ($label: no mirrored copy reached the canary)"
            return 1
        fi
        echo "$copies of $ok check requests mirrored" >"$tdir/check"
    fi
}

# Opens IDLE_N keep-alive connections (one request each) and prints the RSS growth per connection in bytes.
idle_probe() {
    local port=$1 pid=$2 before after ready i ip out=$TMP/idle.out
    before=$(rss_kb "$pid")
    : >"$out"
    "$IDLE_BIN" 127.0.0.1 "$port" "$IDLE_N" 120 >"$out" 2>"$TMP/idle.err" &
    ip=$!
    PIDS+=("$ip")
    ready=""
    for ((i = 0; i < 1200; i++)); do
        ready=$(awk '/^ready/ {print $2}' "$out")
        [ -n "$ready" ] && break
        kill -0 "$ip" 2>/dev/null || break
        sleep 0.05
    done
    after=$(rss_kb "$pid")
    stop_pid "$ip"
    if [ "${ready:-0}" != "$IDLE_N" ]; then
        log "bench:   idle probe opened ${ready:-0}/$IDLE_N: $(head -n 1 "$TMP/idle.err")"
        return 1
    fi
    echo $(((after - before) * 1024 / IDLE_N))
}

# Microseconds from a wrk latency token such as 812.00us, 1.20ms, 2.01s.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) u = n; else if (v ~ /ms$/) u = n * 1000; else if (v ~ /m$/) u = n * 60e6;
        else if (v ~ /s$/) u = n * 1e6; else u = n
        printf "%.1f\n", u }'
}

# One measured run; appends each metric to $RES/<scen>/<target>/<conns>/<metric>.
measure() {
    local target=$1 conns=$2 dir out t0 t1 c0 c1 churn_pid="" script=() threads
    dir=$RES/$SCEN/$target/$conns
    mkdir -p "$dir"
    out=$TMP/wrk.out
    threads=$WRK_THREADS
    ((threads > conns)) && threads=$conns
    [ "$SCEN" = sticky ] && script=(-s "$TMP/sticky.lua")
    if [ "$SCEN" = weight-churn ] && [ "$target" != direct ]; then
        local secs end_us
        secs=$(duration_s "$DURATION")
        end_us=$(( ${EPOCHREALTIME/./} + secs * 1000000 ))
        churn_loop "$target" "$end_us" $((secs * 100 + 10)) >"$dir/churn.$ROUND" &
        churn_pid=$!
        PIDS+=("$churn_pid")
    fi
    t0=$(proc_ticks "${TARGET_ACCT[@]}")
    local tot0 tot1
    read -r c0 tot0 < <(cpu_jiffies "$LOAD_CPU")
    run_waited taskset -c "$LOAD_CPU" "$WRK_BIN" -t"$threads" -c"$conns" -d"$DURATION" --timeout 5s --latency \
        "${script[@]}" "http://127.0.0.1:$TARGET_PORT/" >"$out" 2>&1 || true
    t1=$(proc_ticks "${TARGET_ACCT[@]}")
    read -r c1 tot1 < <(cpu_jiffies "$LOAD_CPU")
    if [ -n "$churn_pid" ]; then
        wait "$churn_pid" 2>/dev/null || true
        forget_pid "$churn_pid"
    fi
    local reqs rps secs p50 p99 errs
    reqs=$(awk '/requests in/ {print $1}' "$out")
    secs=$(awk '/requests in/ {sub(/,$/, "", $4); print $4}' "$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(awk '$1 == "50%" {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    errs=$(awk '/Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10} /Non-2xx/ {e += $NF}
        END {print e + 0}' "$out")
    if [ -z "$reqs" ] || [ -z "$rps" ]; then
        log "bench:   wrk produced no result: $(head -n 3 "$out" | tr '\n' ' ')"
        return 1
    fi
    local wall_s
    wall_s=$(awk -v d="$(duration_s "$DURATION")" -v s="$secs" 'BEGIN {
        n = s + 0; if (s ~ /ms$/) n /= 1000; else if (s ~ /m$/) n *= 60; if (n <= 0) n = d; print n }')
    echo "$rps" >>"$dir/rps"
    to_us "$p50" >>"$dir/p50"
    to_us "$p99" >>"$dir/p99"
    echo "$errs" >>"$dir/errors"
    echo "$reqs" >>"$dir/requests"
    local hz
    hz=$(getconf CLK_TCK)
    if [ ${#TARGET_ACCT[@]} -gt 0 ]; then
        awk -v t="$((t1 - t0))" -v hz="$hz" -v r="$reqs" 'BEGIN {printf "%.4f\n", t / hz / r * 100000}' >>"$dir/cpu100k"
        awk -v t="$((t1 - t0))" -v hz="$hz" -v s="$wall_s" 'BEGIN {printf "%.1f\n", t / hz / s * 100}' >>"$dir/proxycpu"
    fi
    awk -v b="$((c1 - c0))" -v t="$((tot1 - tot0))" 'BEGIN {printf "%.1f\n", (t > 0 ? b / t * 100 : 0)}' \
        >>"$dir/loadcpu"
    log "$(printf 'bench:   %-8s c=%-4s %10s req/s  p50 %-9s p99 %-9s errors %s' "$target" "$conns" "$rps" "$p50" \
        "$p99" "$errs")"
}

run_target() {
    local target=$1 tdir reason
    tdir=$RES/$SCEN/$target
    mkdir -p "$tdir"
    [ -e "$tdir/na" ] && return 0
    reason=$(anchor_na "$target" "$SCEN")
    if [ -n "$reason" ]; then
        echo "$reason" >"$tdir/na"
        return 0
    fi
    if ! start_target "$target" "$SCEN"; then
        log "bench: $target: $START_ERR"
        echo "$START_ERR" >"$tdir/na"
        [ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
        return 0
    fi
    if [ ! -e "$tdir/sanity" ] && ! check_target "$target" "$tdir"; then
        log "bench: $target: $CHECK_ERR"
        echo "$CHECK_ERR" >"$tdir/na"
        [ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
        return 0
    fi
    if [ "$IDLE_N" -gt 0 ] && [ -n "$TARGET_RSS_PID" ]; then
        local per
        if per=$(idle_probe "$TARGET_PORT" "$TARGET_RSS_PID"); then echo "$per" >>"$tdir/idle_rss"; fi
    fi
    run_waited taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$(echo "$CONNS" | awk '{print $NF}')" -d"$WARMUP" \
        "${SCEN_WRK_SCRIPT[@]}" "http://127.0.0.1:$TARGET_PORT/" >/dev/null 2>&1 || true
    local c
    for c in $CONNS; do
        measure "$target" "$c" || true
        if [ -n "$TARGET_PID" ] && ! kill -0 "$TARGET_PID" 2>/dev/null; then
            log "bench: $target exited during the run"
            echo "n/a ($target exited during the run)" >"$tdir/na"
            break
        fi
    done
    [ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
    return 0
}

# ---------------------------------------------------------------------------------------------------------------
# Report.

median() {
    [ -s "$1" ] || { echo ""; return; }
    sort -g "$1" | awk '{v[NR] = $1}
        END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

fmt() { # fmt PRINTF_FORMAT VALUE: "—" when empty
    if [ -z "$2" ]; then echo "—"; else awk -v f="$1" -v v="$2" 'BEGIN {printf f, v}'; fi
}

fmt_ms() { if [ -z "$1" ]; then echo "—"; else awk -v v="$1" 'BEGIN {printf "%.3f", v / 1000}'; fi; }

ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then
        echo "—"
    else
        awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "—"}'
    fi
}

target_label() {
    case $1 in
    weir) echo weir ;;
    weir-nostats) echo "weir, counting compiled out" ;;
    nginx) echo nginx ;;
    haproxy) echo HAProxy ;;
    direct) echo "direct (ceiling)" ;;
    esac
}

render_scenario() {
    local scen=$1 t c d
    echo "## Scenario \`$scen\`: $(scenario_title "$scen")"
    echo
    echo "Medians over $ROUNDS round(s) of $DURATION each. Latency in ms. CPU/100k: CPU seconds the proxy process"
    echo "spent per 100,000 requests. proxy CPU %: of one core. load CPU %: busy share of CPU $LOAD_CPU"
    echo "(wrk + upstreams, and anything else that ran there)."
    echo
    echo "| target | conns | req/s | req/s min-max | p50 ms | p99 ms | CPU s/100k req | proxy CPU % | load CPU %" \
        "| errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in $TARGETS; do
        if [ -e "$RES/$scen/$t/na" ] && [ ! -d "$RES/$scen/$t/$(echo "$CONNS" | awk '{print $1}')" ]; then
            echo "| $(target_label "$t") | all | $(cat "$RES/$scen/$t/na") | | | | | | | |"
            continue
        fi
        for c in $CONNS; do
            d=$RES/$scen/$t/$c
            if [ ! -s "$d/rps" ]; then
                echo "| $(target_label "$t") | $c | no result | | | | | | | |"
                continue
            fi
            local errs range
            errs=$(awk '{s += $1} END {print s + 0}' "$d/errors")
            range=$(sort -g "$d/rps" | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f-%.0f", lo, hi}')
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(target_label "$t")" "$c" \
                "$(fmt %.0f "$(median "$d/rps")")" "$range" "$(fmt_ms "$(median "$d/p50")")" \
                "$(fmt_ms "$(median "$d/p99")")" \
                "$(fmt %.3f "$(median "$d/cpu100k")")" "$(fmt %.0f "$(median "$d/proxycpu")")" \
                "$(fmt %.0f "$(median "$d/loadcpu")")" "$errs"
        done
    done
    echo
    echo "| target | RSS per idle keep-alive conn (bytes, $IDLE_N conns) | canary share (sample) | notes |"
    echo "|---|---:|---:|---|"
    for t in $TARGETS; do
        local rss="—" share="—" note=""
        [ -s "$RES/$scen/$t/idle_rss" ] && rss=$(fmt %.0f "$(median "$RES/$scen/$t/idle_rss")")
        [ "$t" = direct ] && rss="—"
        if [ -s "$RES/$scen/$t/sanity" ]; then
            share=$(awk '{printf "%.1f %% of %d", ($1 ? $2 / $1 * 100 : 0), $1}' "$RES/$scen/$t/sanity")
        fi
        [ -e "$RES/$scen/$t/check" ] && note=$(cat "$RES/$scen/$t/check")
        [ -e "$RES/$scen/$t/na" ] && note=$(cat "$RES/$scen/$t/na")
        if [ "$scen" = weight-churn ] && ls "$RES/$scen/$t"/*/churn.* >/dev/null 2>&1; then
            note+=$(cat "$RES/$scen/$t"/*/churn.* | awk -v d="$(duration_s "$DURATION")" '{n += $1; f += $2; r++}
                END {printf "%d weight changes (%.0f/s), %d failed", n, n / (r * d), f}')
        fi
        echo "| $(target_label "$t") | $rss | $share | $note |"
    done
    echo
    echo "Ratios (median req/s and CPU per request; for req/s above 1 is better for weir, for CPU below 1 is):"
    echo
    echo "| conns | weir/HAProxy req/s | weir/nginx req/s | weir/direct req/s | direct/faster anchor req/s" \
        "| weir/HAProxy CPU/req | weir/nginx CPU/req |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CONNS; do
        local wr nr hr dr wc nc hc fast
        wr=$(median "$RES/$scen/weir/$c/rps")
        nr=$(median "$RES/$scen/nginx/$c/rps")
        hr=$(median "$RES/$scen/haproxy/$c/rps")
        dr=$(median "$RES/$scen/direct/$c/rps")
        wc=$(median "$RES/$scen/weir/$c/cpu100k")
        nc=$(median "$RES/$scen/nginx/$c/cpu100k")
        hc=$(median "$RES/$scen/haproxy/$c/cpu100k")
        fast=$(awk -v a="$nr" -v b="$hr" 'BEGIN {if (a == "" && b == "") exit; print (a + 0 > b + 0 ? a : b)}')
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(ratio "$wr" "$hr")" "$(ratio "$wr" "$nr")" \
            "$(ratio "$wr" "$dr")" "$(ratio "$dr" "$fast")" "$(ratio "$wc" "$hc")" "$(ratio "$wc" "$nc")"
    done
    echo
    echo "direct/faster anchor is the most any proxy could lead the faster anchor by here: no proxy at all, with"
    echo "wrk and the upstream on the load CPU as in every other row."
    echo
    if [[ " $TARGETS " == *" weir-nostats "* ]]; then
        echo "Cost of the metrics (weir with counting against the same build without; above 1 means counting costs):"
        echo
        echo "| conns | req/s without / with | CPU/req with / without |"
        echo "|---:|---:|---:|"
        for c in $CONNS; do
            printf '| %s | %s | %s |\n' "$c" \
                "$(ratio "$(median "$RES/$scen/weir-nostats/$c/rps")" "$(median "$RES/$scen/weir/$c/rps")")" \
                "$(ratio "$(median "$RES/$scen/weir/$c/cpu100k")" "$(median "$RES/$scen/weir-nostats/$c/cpu100k")")"
        done
        echo
    fi
}

version_of() {
    case $1 in
    weir) if [ -x "$WEIR" ]; then "$WEIR" --version 2>&1 | head -n 1 || true; else echo "not built"; fi ;;
    weir-nostats) echo "build/nostats/weir: the same sources with -DWEIR_NO_STATS" ;;
    nginx) "$NGINX_BIN" -v 2>&1 | head -n 1 | sed 's/^nginx version: //' ;;
    haproxy)
        if [ -n "$HAPROXY_BIN" ]; then
            "$HAPROXY_BIN" -v 2>&1 | awk 'NR == 1 {print $1, $3}'
        else
            echo "not installed"
        fi
        ;;
    wrk) "$WRK_BIN" -v 2>&1 | head -n 1 | awk '{print $1, $2}' ;;
    esac
}

render_header() {
    echo "# weir benchmark results"
    echo
    echo "Written by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); see bench/README.md for the method."
    echo
    local model mem
    model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
    echo "- machine: $(nproc) CPUs, $model, $mem RAM, Linux $(uname -r)"
    local rev
    rev=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "no commit yet")
    echo "- versions: weir $(version_of weir | sed 's/^weir *//') ($WEIR, source tree $rev);" \
        "nginx $(version_of nginx | sed 's/^nginx\///'); $(version_of haproxy); $(version_of wrk)"
    echo "- parameters: rounds $ROUNDS, duration $DURATION, warm-up $WARMUP, connections {$CONNS}," \
        "wrk threads $WRK_THREADS, idle probe $IDLE_N conns"
    echo "- pinning: proxy on CPU $PROXY_CPU (one worker/thread); wrk and the upstream nginx on CPU $LOAD_CPU"
    echo "- scenarios: $SCENARIOS"
    echo "- load average when the run started: $LOADAVG_START (anything well above 0 means other work shared the CPUs)"
    echo
}

# ---------------------------------------------------------------------------------------------------------------

main() {
    local a
    SCENARIOS=""
    for a in "$@"; do
        case $a in
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) SCENARIOS+="$a " ;;
        esac
    done
    [ -n "$SCENARIOS" ] || SCENARIOS=${SCENARIO:-split}
    read -r -a a <<<"$SCENARIOS"
    SCENARIOS="${a[*]}"
    [ "$SCENARIOS" = all ] && SCENARIOS=$ALL_SCENARIOS
    for a in $SCENARIOS; do
        [[ " $ALL_SCENARIOS " == *" $a "* ]] || die "unknown scenario '$a' (one of: $ALL_SCENARIOS, all)"
    done
    [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
    [[ "$IDLE_N" =~ ^[0-9]+$ ]] || die "BENCH_IDLE_CONNS must be a number"
    [ "$(nproc)" -ge 2 ] || log "bench: warning: one CPU only; proxy and load share it"

    ensure_tools
    build_helper
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
    TMP=$(mktemp -d /tmp/weir-bench.XXXXXX)
    chmod 755 "$TMP"
    cd "$TMP"
    RES=$TMP/results
    mkdir -p "$RES"
    write_lua

    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * IDLE_N + 1024)) ]; then
        log "bench: warning: open-file limit $(ulimit -n) is low for $IDLE_N idle connections"
    fi
    local p
    for p in "$PORT_STABLE" "$PORT_CANARY" "$PORT_DEAD" "$PORT_SLOW" "$PORT_PROXY"; do
        port_busy "$p" && die "port $p is in use (set BENCH_PORT_BASE)"
    done
    if [[ " $TARGETS " == *" weir "* ]] && [ ! -x "$WEIR" ]; then
        log "bench: warning: $WEIR is missing (run make); weir is reported as n/a"
    fi

    local start_s=$SECONDS round t
    LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
    if awk -v l="${LOADAVG_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
        log "bench: warning: load average $LOADAVG_START: other work is running, numbers will be noisy"
    fi
    for SCEN in $SCENARIOS; do
        log "bench: scenario $SCEN"
        SCEN_WRK_SCRIPT=()
        [ "$SCEN" = sticky ] && SCEN_WRK_SCRIPT=(-s "$TMP/sticky.lua")
        start_upstream "$SCEN"
        for ((round = 1; round <= ROUNDS; round++)); do
            ROUND=$round
            log "bench: round $round/$ROUNDS"
            for t in $TARGETS; do run_target "$t"; done
        done
        stop_pid "$UPSTREAM_PID"
    done

    {
        render_header
        for SCEN in $SCENARIOS; do render_scenario "$SCEN"; done
        [[ " $TARGETS " == *" weir "* ]] && extras
        if [[ " $SCENARIOS " == *" split "* ]] && [ "${BENCH_BOUND:-1}" != 0 ]; then bound_section; fi
        local end_load
        end_load=$(cut -d' ' -f1-3 /proc/loadavg)
        echo "Run time: $((SECONDS - start_s)) s; load average at the end: $end_load."
        # The run itself keeps both CPUs busy, so only the load average at the start tells of other work.
        if awk -v a="${LOADAVG_START%% *}" 'BEGIN {exit !(a > 0.5)}'; then
            echo
            echo "Other work was running when this run started (load average above 0.5): req/s and latency carry"
            echo "its noise; CPU per request and memory per connection suffer less from it."
        fi
    } >"$TMP/RESULTS.md"
    cp "$TMP/RESULTS.md" "$OUT"
    cat "$OUT"
    log "bench: written to $OUT"
}

main "$@"
