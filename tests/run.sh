#!/usr/bin/env bash
# Runs the unit and integration test binaries of each build dir given (e.g. `tests/run.sh build build/asan`).
# Integration tests get the binaries of the same dir through WEIR_BIN, WEIR_UPSTREAM_BIN and WEIRCTL_BIN.
# A binary that crashes, times out, prints no cmocka summary, or prints a sanitizer report without a failed test to
# account for it, counts as one failure more.
# A dir named *tsan* holds ThreadSanitizer builds: only its integration tests run, with two workers each
# (WEIR_TEST_WORKERS), except those in TSAN_EXCLUDE. A dir named *fuzz* holds libFuzzer targets (fuzz_*): each runs
# FUZZ_SECONDS (default 20) from tests/fuzz/corpus/<target>/ and counts as one test, failed by any finding.
# The last line is always "N passed, N failed"; the exit status is non-zero when anything failed.
set -u

cd "$(dirname "$0")/.." || exit 2
TIMEOUT=${WEIR_TEST_TIMEOUT:-300}
[ $# -gt 0 ] || set -- build

total_pass=0
total_fail=0
failed_bins=()
log=$(mktemp "${TMPDIR:-/tmp}/weir-run.XXXXXX")
trap 'rm -f "$log"' EXIT

sanitizer_re='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer'
sanitizer_re="$sanitizer_re|WARNING: ThreadSanitizer|ERROR: libFuzzer"

# Left out of the ThreadSanitizer run: test_http_path and test_steady_state bound weir's memory and allocations,
# which TSan's shadow memory and allocator do not keep; test_large_copy_full_speed needs a copy to keep pace with
# its primary, which a build several times slower does not promise (weir drops a copy that falls behind).
TSAN_EXCLUDE=${TSAN_EXCLUDE:-test_http_path test_steady_state}
TSAN_SKIP=${TSAN_SKIP:-test_large_copy_full_speed}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

# run_one BIN: runs one cmocka binary, shows its output, adds to the totals.
run_one() {
    local bin=$1 rc pass fail extra=0 why=""
    echo "=== $bin"
    timeout -k 10 "$TIMEOUT" "$bin" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    pass=$(grep -oE '\[  PASSED  \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    fail=$(grep -oE '\[  FAILED  \] [0-9]+ test\(s\), listed below' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    if [ -z "$pass" ] && [ -z "$fail" ]; then
        pass=0 fail=0 extra=1
        why="no cmocka summary (exit status $rc)"
        [ "$rc" -eq 124 ] && why="timed out after ${TIMEOUT}s"
    else
        pass=${pass:-0} fail=${fail:-0}
        if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
            extra=1
            why="exit status $rc after its summary"
        fi
    fi
    # A report that no failed test accounts for (a failed integration test prints weir's log, report included).
    if [ "$fail" -eq 0 ] && grep -qE "$sanitizer_re" "$log"; then
        extra=1
        why="${why:+$why; }sanitizer report"
    fi
    if [ "$extra" -ne 0 ]; then
        echo "=== $bin: counted as a failure: $why"
    fi
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail + extra))
    if [ $((fail + extra)) -ne 0 ]; then
        failed_bins+=("$bin")
    fi
}

# run_fuzzer BIN: runs one libFuzzer target for FUZZ_SECONDS from its seed corpus (on a scratch copy, so the run
# does not grow the tree's corpus); one test, failed by a crash, a leak, a timeout, or a limit exceeded. What it
# found is kept in <build dir>/findings/<target>/ until the next run, to replay (`BIN FILE`).
run_fuzzer() {
    local bin=$1 name corpus work found rc dict=()
    name=$(basename "$bin")
    name=${name#fuzz_}
    corpus=tests/fuzz/corpus/$name
    found=$(dirname "$bin")/findings/$name
    echo "=== $bin (${FUZZ_SECONDS}s)"
    work=$(mktemp -d "${TMPDIR:-/tmp}/weir-fuzz.XXXXXX")
    rm -rf "$found" # what an earlier run found
    mkdir -p "$found"
    [ -d "$corpus" ] && cp -r "$corpus/." "$work/"
    [ -f "tests/fuzz/$name.dict" ] && dict=("-dict=tests/fuzz/$name.dict")
    timeout -k 10 $((FUZZ_SECONDS + 120)) "$bin" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 \
        -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 -artifact_prefix="$found/" "${dict[@]}" "$work" \
        >"$log" 2>&1
    rc=$?
    grep -vE '^#[0-9]+|NEW_FUNC' "$log" | tail -n 40
    if [ "$rc" -ne 0 ] || grep -qE "$sanitizer_re" "$log"; then
        echo "=== $bin: failed (exit status $rc); findings:"
        for a in "$found"/*; do
            [ -f "$a" ] && echo "  $a: $(head -c 300 "$a" | od -An -c | tr -s ' ' | tr -d '\n')"
        done
        total_fail=$((total_fail + 1))
        failed_bins+=("$bin")
    else
        total_pass=$((total_pass + 1))
    fi
    rm -rf "$work"
}

for dir in "$@"; do
    dir=${dir%/}
    if [ ! -d "$dir" ]; then
        echo "=== $dir: no such build dir"
        total_fail=$((total_fail + 1))
        continue
    fi
    abs=$(cd "$dir" && pwd)
    unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS WEIR_TEST_WORKERS WEIR_TEST_SKIP
    case "$dir" in
    *asan*)
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        ;;
    *fuzz*) # a smaller quarantine keeps a long run well under -rss_limit_mb, which is there for what weir allocates
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=64
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        ;;
    *tsan*)
        export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1"
        [ -f tests/tsan.supp ] && TSAN_OPTIONS="$TSAN_OPTIONS suppressions=$PWD/tests/tsan.supp"
        export WEIR_TEST_WORKERS=2 WEIR_TEST_SKIP=$TSAN_SKIP
        ;;
    esac
    export WEIR_BIN=$abs/weir WEIR_UPSTREAM_BIN=$abs/weir-upstream WEIRCTL_BIN=$abs/weirctl
    unset CMOCKA_MESSAGE_OUTPUT CMOCKA_TEST_ABORT
    found=0
    case "$dir" in
    *fuzz*) bins=("$dir"/fuzz_*) ;;
    *tsan*) bins=("$dir"/tests/integration/test_*) ;;
    *) bins=("$dir"/tests/unit/test_* "$dir"/tests/integration/test_*) ;;
    esac
    for bin in "${bins[@]}"; do
        case "$bin" in *.o | *.d) continue ;; esac
        [ -f "$bin" ] && [ -x "$bin" ] || continue
        case "$dir" in
        *tsan*) case " $TSAN_EXCLUDE " in *" $(basename "$bin") "*) continue ;; esac ;;
        esac
        found=1
        case "$dir" in
        *fuzz*) run_fuzzer "$bin" ;;
        *) run_one "$bin" ;;
        esac
    done
    if [ "$found" -eq 0 ]; then
        echo "=== $dir: no test binaries (was it built?)"
        total_fail=$((total_fail + 1))
    fi
done

# run_go LABEL DIR [VAR=VALUE...]: runs the tests of the Go module in DIR (a module of its own) with the variables
# set: each top-level Go test counts as one; a module that does not build or run counts as one failure.
run_go() {
    local label=$1 mod=$2 go=/usr/local/go/bin/go rc pass fail
    shift 2
    [ -x "$go" ] || go=$(command -v go || true)
    echo "=== $label"
    if [ -z "$go" ]; then
        echo "=== $label: counted as a failure: no go"
        total_fail=$((total_fail + 1))
        failed_bins+=("$label")
        return
    fi
    (cd "$mod" && env "$@" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -p=2" timeout -k 10 600 "$go" test -count=1 -v .) 2>&1 |
        grep -v '^=== RUN' | tee "$log"
    rc=${PIPESTATUS[0]}
    pass=$(grep -cE '^--- PASS: ' "$log" || true)
    fail=$(grep -cE '^--- FAIL: ' "$log" || true)
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        echo "=== $label: counted as a failure: exit status $rc"
        fail=1
    fi
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    [ "$fail" -eq 0 ] || failed_bins+=("$label")
}

# The Argo Rollouts analysis templates of conf/analysis/ against each build dir's weir (tests/analysis/); not the
# ThreadSanitizer dir (its run is the integration tests) nor the fuzzers' (no weir there).
for dir in "$@"; do
    dir=${dir%/}
    case "$dir" in *tsan* | *fuzz*) continue ;; esac
    if [ ! -d "$dir" ]; then
        echo "=== tests/analysis ($dir): counted as a failure: no $dir"
        total_fail=$((total_fail + 1))
        failed_bins+=("tests/analysis ($dir)")
        continue
    fi
    run_go "tests/analysis ($dir)" tests/analysis WEIR_BIN="$(cd "$dir" && pwd)/weir"
done

# The Argo Rollouts plugin's Go tests, once, against the first build dir without sanitizers (tests/plugin-tests.sh);
# their passes and failures count here. WEIR_PLUGIN_TESTS=0 leaves them out.
plugin_dir=""
for dir in "$@"; do
    case "$dir" in *asan* | *tsan* | *fuzz*) ;; *) [ -z "$plugin_dir" ] && plugin_dir=$dir ;; esac
done
if [ -n "$plugin_dir" ] && [ "${WEIR_PLUGIN_TESTS:-1}" != 0 ]; then
    echo "=== tests/plugin-tests.sh $plugin_dir"
    tests/plugin-tests.sh "$plugin_dir" 2>&1 | tee "$log"
    counts=$(grep -oE '^plugin: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    pass=$(echo "$counts" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    fail=$(echo "$counts" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    total_pass=$((total_pass + ${pass:-0}))
    total_fail=$((total_fail + ${fail:-1}))
    [ "${fail:-1}" -ne 0 ] && failed_bins+=("tests/plugin-tests.sh")
fi

# The Kubernetes manifests against the real API types (tests/manifests/), once; its `weir -t` uses the weir of the
# first build dir without sanitizers (none in `make tsan` or `make fuzz`, which leave it out).
if [ -n "$plugin_dir" ]; then
    run_go tests/manifests tests/manifests WEIR_BIN="$(cd "${plugin_dir%/}" 2>/dev/null && pwd)/weir"
fi

if [ ${#failed_bins[@]} -gt 0 ]; then
    echo "failing binaries:"
    printf '  %s\n' "${failed_bins[@]}"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
