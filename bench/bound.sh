# shellcheck shell=bash
# Sourced by bench/run.sh: what bounds req/s at 50 connections in the `split` scenario, measured rather than
# assumed. Per proxied request, for weir, nginx, HAProxy and direct: the system calls of the proxy process (perf's
# syscall tracepoints), the TCP segments sent on the machine (/proc/net/snmp), the proxy's user and system CPU
# time (/proc/PID/stat), and how the load CPU splits between the upstream nginx and wrk; then weir's user-space
# instructions per request by stage (callgrind, whose counts repeat run to run on this noisy machine).
# Uses run.sh's helpers (start_upstream, start_target, proc_ut_st, ...). perf and valgrind are optional: what one
# of them measures is reported n/a without it.

BOUND_CONNS=50
BOUND_SECS=6

bound_out_segs() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]+$/ {print $12}' /proc/net/snmp; }

# Counts syscalls of PIDS (comma-separated) for SECS seconds into FILE (perf stat -x, format).
bound_perf_syscalls() {
    local pids=$1 secs=$2 file=$3 ev s
    ev=raw_syscalls:sys_enter
    for s in read recvfrom readv recvmsg write writev sendto sendmsg epoll_wait epoll_pwait epoll_ctl; do
        ev+=",syscalls:sys_enter_$s"
    done
    perf stat -x, -e "$ev" -p "$pids" -o "$file" -- sleep "$secs" >/dev/null 2>&1
}

# Sum of the named events' counts in a perf -x, file.
bound_perf_sum() {
    local file=$1
    shift
    awk -F, -v names="$*" 'BEGIN {n = split(names, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1}
        ($3 in want) && $1 ~ /^[0-9]+$/ {s += $1} END {print s + 0}' "$file"
}

bound_row() {
    local t=$1
    local dir=$TMP/bound/$t out pids=() perf_pid="" seg0 seg1 ut0 ut1 up0 up1 c0 c1 tot0 tot1 reqs rps
    mkdir -p "$dir"
    if ! start_target "$t" split; then
        echo "| $(target_label "$t") | $START_ERR | | | | | | | | |"
        return
    fi
    run_waited taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$BOUND_CONNS" -d1s "http://127.0.0.1:$TARGET_PORT/" \
        >/dev/null 2>&1 || true
    pids=("${TARGET_ACCT[@]}")
    if [ ${#pids[@]} -gt 0 ] && command -v perf >/dev/null; then
        bound_perf_syscalls "$(
            IFS=,
            echo "${pids[*]}"
        )" "$((BOUND_SECS + 1))" "$dir/perf.txt" &
        perf_pid=$!
        PIDS+=("$perf_pid")
        sleep 0.3 # perf attaches before the load starts; what it counts after the load is idle time (no syscalls)
    fi
    read -r ut0 < <(proc_ut_st "${pids[@]}")
    read -r up0 < <(proc_ut_st "${UPSTREAM_WORKERS[@]}")
    read -r c0 tot0 < <(cpu_jiffies "$LOAD_CPU")
    seg0=$(bound_out_segs)
    out=$dir/wrk.txt
    run_waited taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$BOUND_CONNS" -d"${BOUND_SECS}s" \
        "http://127.0.0.1:$TARGET_PORT/" >"$out" 2>&1 || true
    seg1=$(bound_out_segs)
    read -r c1 tot1 < <(cpu_jiffies "$LOAD_CPU")
    read -r up1 < <(proc_ut_st "${UPSTREAM_WORKERS[@]}")
    ut1=$(proc_ut_st "${pids[@]}")
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        forget_pid "$perf_pid"
    fi
    [ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
    reqs=$(awk '/requests in/ {print $1}' "$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
        echo "| $(target_label "$t") | no result | | | | | | | | |"
        return
    fi
    local sys="—" rd="—" wr="—" ep="—" ctl="—" user="—" kern="—" upct wrkct
    if [ -s "$dir/perf.txt" ]; then
        sys=$(awk -v a="$(bound_perf_sum "$dir/perf.txt" raw_syscalls:sys_enter)" -v r="$reqs" \
            'BEGIN {printf "%.2f", a / r}')
        rd=$(awk -v a="$(bound_perf_sum "$dir/perf.txt" syscalls:sys_enter_read syscalls:sys_enter_recvfrom \
            syscalls:sys_enter_readv syscalls:sys_enter_recvmsg)" -v r="$reqs" 'BEGIN {printf "%.2f", a / r}')
        wr=$(awk -v a="$(bound_perf_sum "$dir/perf.txt" syscalls:sys_enter_write syscalls:sys_enter_writev \
            syscalls:sys_enter_sendto syscalls:sys_enter_sendmsg)" -v r="$reqs" 'BEGIN {printf "%.2f", a / r}')
        ep=$(awk -v a="$(bound_perf_sum "$dir/perf.txt" syscalls:sys_enter_epoll_wait \
            syscalls:sys_enter_epoll_pwait)" -v r="$reqs" 'BEGIN {printf "%.2f", a / r}')
        ctl=$(awk -v a="$(bound_perf_sum "$dir/perf.txt" syscalls:sys_enter_epoll_ctl)" -v r="$reqs" \
            'BEGIN {printf "%.2f", a / r}')
    fi
    local hz
    hz=$(getconf CLK_TCK)
    if [ ${#pids[@]} -gt 0 ]; then
        read -r user kern < <(awk -v a="$ut0" -v b="$ut1" -v hz="$hz" -v r="$reqs" 'BEGIN {
            split(a, x, " "); split(b, y, " ");
            printf "%.2f %.2f\n", (y[1] - x[1]) / hz / r * 1e6, (y[2] - x[2]) / hz / r * 1e6}')
    fi
    # Shares of the load CPU's time during the run: the upstream nginx's, and the rest (wrk, and its softirqs).
    read -r upct wrkct < <(awk -v a="$up0" -v b="$up1" -v busy="$((c1 - c0))" -v tot="$((tot1 - tot0))" 'BEGIN {
        split(a, x, " "); split(b, y, " "); u = (y[1] + y[2] - x[1] - x[2]);
        if (tot <= 0) {print "— —"; exit}
        printf "%.0f %.0f\n", u / tot * 100, (busy - u) / tot * 100}')
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n' "$(target_label "$t")" "$rps" "$sys" \
        "$rd" "$wr" "$ep" "$ctl" \
        "$(awk -v a="$seg0" -v b="$seg1" -v r="$reqs" 'BEGIN {printf "%.2f", (b - a) / r}')" "$user" "$kern" \
        "$upct" "$wrkct"
}

# Groups callgrind's self costs (callgrind_annotate --inclusive=no) by stage of the request path.
bound_stages() {
    awk -v reqs="$1" '
        /^ *[0-9,]+ +\(/ {
            n = $1; gsub(/,/, "", n); line = $0
            if (line ~ /llhttp/) s = "HTTP/1 parsing, requests and responses (llhttp)"
            else if (line ~ /proxy\/h1\.c/) s = "header block split and rewrite (proxy/h1.c)"
            else if (line ~ /router\//) s = "routing decision (router/)"
            else if (line ~ /proxy\/stats\.c/) s = "counters and latency histograms (proxy/stats.c)"
            else if (line ~ /proxy\//) s = "connection, cycle and upstream pool state (proxy/conn*.c, upstream.c, ...)"
            else if (line ~ /libuv/) s = "libuv (event loop, read/write wrappers, timers)"
            else if (line ~ /libc\.so|ld-linux/) s = "libc (memcpy, memchr, syscall wrappers, clock)"
            else s = "other"
            cost[s] += n; total += n
        }
        END {
            for (s in cost) printf "| %s | %.0f | %.1f %% |\n", s, cost[s] / reqs, cost[s] / total * 100
            printf "| **all user space** | **%.0f** | 100 %% |\n", total / reqs
        }' | sort -t'|' -k3 -rn
}

bound_callgrind() {
    local dir=$TMP/bound/callgrind sock out reqs
    mkdir -p "$dir"
    if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
        echo "n/a: valgrind is not installed"
        return
    fi
    sock=$dir/control.sock
    taskset -c "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$WEIR" \
        --listen "127.0.0.1:$PORT_PROXY" --stable "127.0.0.1:$PORT_STABLE" --canary "127.0.0.1:$PORT_CANARY" \
        --weight canary 10 --workers 1 --admin off --control "$sock" --log-level error >"$dir/weir.log" 2>&1 &
    local vpid=$!
    PIDS+=("$vpid")
    local i
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT_PROXY/" && break
        sleep 0.1
    done
    out=$dir/wrk.txt
    run_waited taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$BOUND_CONNS" -d8s "http://127.0.0.1:$PORT_PROXY/" \
        >"$out" 2>&1 || true
    kill -INT "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    forget_pid "$vpid"
    reqs=$(awk '/requests in/ {print $1}' "$out")
    if [ -z "$reqs" ] || [ ! -s "$dir/cg.out" ]; then
        echo "n/a: the callgrind run produced no result"
        return
    fi
    echo "weir under \`valgrind --tool=callgrind\`, one worker, \`wrk -t1 -c$BOUND_CONNS -d8s\`: $reqs requests;"
    echo "instructions of the whole run (start-up included, well under 1 %) divided by the requests, grouped by"
    echo "where they ran. The kernel's share is not in these counts (see the table above)."
    echo
    echo "| stage | instructions per request | share |"
    echo "|---|---:|---:|"
    # Only the function table: the source annotation after it has numbered lines of the same shape.
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$dir/cg.out" 2>/dev/null |
        sed -n '/file:function/,/^$/p' | bound_stages "$reqs"
}

bound_section() {
    local t
    echo "## What bounds req/s at $BOUND_CONNS connections (\`split\`, measured separately)"
    echo
    start_upstream split
    # shellcheck disable=SC2207 # pids are words
    UPSTREAM_WORKERS=($(children_of "$UPSTREAM_PID"))
    [ ${#UPSTREAM_WORKERS[@]} -gt 0 ] || UPSTREAM_WORKERS=("$UPSTREAM_PID")
    echo "Each target alone, one ${BOUND_SECS} s run of \`wrk -t1 -c$BOUND_CONNS\`, per request. syscalls: all system calls"
    echo "of the proxy process, then reads (read, recvfrom, ...), writes (write, writev, sendto, ...), epoll_wait and"
    echo "epoll_ctl (perf syscall tracepoints). segments: TCP segments sent on the machine (all four legs for a"
    echo "proxy: request in, request out, response in, response out). user/system µs: the proxy's CPU time. load"
    echo "CPU: share of CPU $LOAD_CPU's time used by the upstream nginx / by the rest (wrk and its kernel work)."
    echo
    echo "| target | req/s | syscalls | reads | writes | epoll_wait | epoll_ctl | segments | user µs | system µs" \
        "| load CPU % upstream / wrk |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in weir nginx haproxy direct; do bound_row "$t"; done
    echo
    echo "### weir's user-space instructions per request, by stage"
    echo
    bound_callgrind
    stop_pid "$UPSTREAM_PID"
    echo
}
