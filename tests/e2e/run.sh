#!/bin/sh
# make e2e: builds (once) kube-apiserver and the Argo Rollouts controller into the cache folder, then runs
# TestRollouts against them, etcd, weir and the weir plugin. Not part of make test.
#
#   WEIR_E2E_CACHE  cache folder (default $HOME/.cache/weir-e2e): the two binaries, kept across runs and clones
#   GO              a Go >= 1.26.1 toolchain (default: go on PATH, else /usr/local/go/bin/go)
#   E2E_REPORT      where the timeline goes (default bench/E2E.md)
#   E2E_KEEP=1      keep the run directory (every process's log) after a passing run too
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${WEIR_E2E_CACHE:-$HOME/.cache/weir-e2e}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
report=${E2E_REPORT:-$root/bench/E2E.md}
t0=$(date +%s)

etcd=$(command -v etcd || true)
if [ -z "$etcd" ]; then
	echo "e2e: no etcd on PATH: make e2e-deps (Debian package etcd-server)" >&2
	exit 1
fi
for b in weir weir-upstream weirctl rollouts-plugin-trafficrouter-weir; do
	if [ ! -x "$root/build/$b" ]; then
		echo "e2e: build/$b is missing (make all; the plugin target comes with integrations/argo-rollouts/)" >&2
		exit 1
	fi
done

# The binaries are rebuilt when go.mod/go.sum (the pinned releases) change.
mkdir -p "$cache"
cd "$root/tests/e2e"
stamp=$(cat go.mod go.sum | sha256sum | cut -c1-16)
if [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ]; then rm -f "$cache/kube-apiserver" "$cache/rollouts-controller"; fi
build() { # OUT PACKAGE
	if [ ! -x "$cache/$1" ]; then
		echo "e2e: building $1 from $2 (first run only; long on a small machine)"
		s=$(date +%s)
		"$GO" build -p 2 -o "$cache/$1.tmp" "$2"
		mv "$cache/$1.tmp" "$cache/$1"
		echo "e2e: $1 built in $(( $(date +%s) - s ))s"
	fi
}
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build rollouts-controller github.com/argoproj/argo-rollouts/cmd/rollouts-controller
echo "$stamp" >"$cache/stamp"
crds=$("$GO" list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)/manifests/crds

echo "e2e: binaries ready after $(( $(date +%s) - t0 ))s; running the rollouts"
status=0
REPO=$root E2E_CACHE=$cache ETCD_BIN=$etcd ARGO_CRDS=$crds E2E_REPORT=$report \
	WEIR_BIN=$root/build/weir WEIR_UPSTREAM_BIN=$root/build/weir-upstream WEIRCTL_BIN=$root/build/weirctl \
	PLUGIN_BIN=$root/build/rollouts-plugin-trafficrouter-weir \
	"$GO" test -p 2 -count=1 -v -timeout 30m -run TestRollouts . || status=$?
echo "e2e: $( [ $status -eq 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - t0 ))s (timeline: $report)"
exit $status
