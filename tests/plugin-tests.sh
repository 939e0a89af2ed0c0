#!/usr/bin/env bash
# Runs the Argo Rollouts plugin's Go tests (integrations/argo-rollouts: unit tests, and end-to-end tests that start
# build/rollouts-plugin-trafficrouter-weir through go-plugin against the weir, weir-upstream and weirctl of DIR).
# Usage: tests/plugin-tests.sh [DIR]   (DIR defaults to build)
# The last line is "plugin: N passed, N failed, N skipped"; exit status 0 only when nothing failed. Without a Go
# toolchain new enough for the module, or without the built plugin, nothing runs: that is one failure.
set -u
cd "$(dirname "$0")/.." || exit 2
dir=$(cd "${1:-build}" 2>/dev/null && pwd) || { echo "plugin: no build dir ${1:-build}"; echo "plugin: 0 passed, 1 failed, 0 skipped"; exit 1; }
GO=${GO:-$(command -v go || ls /usr/local/go/bin/go 2>/dev/null)}
plugin_bin=$dir/rollouts-plugin-trafficrouter-weir
need="Go >= $(sed -n 's/^go //p' integrations/argo-rollouts/go.mod)"
if [ -z "$GO" ] || [ ! -x "$plugin_bin" ]; then
    if [ -z "$GO" ]; then
        echo "plugin: tests not run: no Go toolchain ($need)"
    else
        echo "plugin: tests not run: no $plugin_bin (make builds it with $need)"
    fi
    echo "plugin: 0 passed, 1 failed, 0 skipped"
    exit 1
fi
log=$(mktemp "${TMPDIR:-/tmp}/weir-plugin.XXXXXX")
trap 'rm -f "$log"' EXIT
(cd integrations/argo-rollouts &&
    GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 WEIR_PLUGIN_BIN="$plugin_bin" WEIR_BIN="$dir/weir" \
        WEIR_UPSTREAM_BIN="$dir/weir-upstream" WEIRCTL_BIN="$dir/weirctl" \
        timeout -k 10 "${WEIR_TEST_TIMEOUT:-300}" "$GO" test -p 2 -count=1 -timeout 240s -v ./... 2>&1) | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(grep -cE '^\s*--- PASS' "$log")
fail=$(grep -cE '^\s*--- FAIL' "$log")
skip=$(grep -cE '^\s*--- SKIP' "$log")
# A package that did not build, or a run that died, fails with no "--- FAIL" line to count.
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    echo "plugin: go test exited with status $rc"
    fail=1
fi
echo "plugin: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
