#!/usr/bin/env bash
# `make docker-check`: builds docker/Dockerfile's stages in debootstrap roots, then runs the resulting image's weir
# as the image's user on a read-only root and proxies requests through it. For machines without Docker; as root.
#
# The steps are read from the Dockerfile itself, so the check cannot drift from it:
#   ARG (defaults)   substituted into FROM; inside a stage also given to RUN's environment
#   FROM IMAGE [AS]  debian:bookworm* or debian:12* becomes a `debootstrap --variant=minbase bookworm` root
#   RUN CMD          /bin/sh -c CMD, chrooted, as the stage's USER, in its WORKDIR, with its ENV and ARGs, with
#                    /proc, /dev and the host's resolv.conf mounted (as `docker build` gives a RUN)
#   COPY [--from=S]  from the build context (the tree less .dockerignore) or from stage S's root
#   WORKDIR, USER (numeric), ENV K=V, VOLUME, EXPOSE, LABEL, ENTRYPOINT/CMD/HEALTHCHECK CMD (exec form)
# Any other instruction or form fails the check rather than being skipped.
#
# Then, in fresh mount, network and PID namespaces (ports 8080/9901 of the image cannot clash with the host's):
# the final stage's root is bind-mounted read-only, each VOLUME gets an empty tmpfs owned like the image's
# directory (what Docker's volumes and Kubernetes' emptyDirs give), weir starts from ENTRYPOINT+CMD as USER with
# two weir-upstream processes of the build stage as stable and canary, and the checks in __serve must all pass;
# then once more as docker/kubernetes/weir.yaml's Deployment runs it (its ConfigMap's weir.conf, a token).
#
# Cached under build/docker-check/: the debootstrap root (base/), and per stage the root after the steps before
# its first COPY (layers/), keyed by the text of those steps, so a second run reinstalls no packages.
# WEIR_DEBIAN_MIRROR overrides the mirror, which is otherwise the one apt uses here (/etc/apt/sources.list*).
set -euo pipefail

PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
self=$(readlink -f "$0")

die() {
    echo "docker-check: $*" >&2
    exit 1
}

# ---- helpers run inside namespaces (the script calls itself through unshare) ----------------------------------

# __chroot ROOT UID:GID DIR ENV... -- CMD...: a RUN step. Its mounts vanish with its mount namespace.
if [ "${1:-}" = __chroot ]; then
    root=$2 user=$3 dir=$4
    shift 4
    envs=()
    while [ "$1" != -- ]; do envs+=("$1") && shift; done
    shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    if [ -e /etc/resolv.conf ]; then
        [ -e "$root/etc/resolv.conf" ] || : >"$root/etc/resolv.conf"
        mount --bind "$(readlink -f /etc/resolv.conf)" "$root/etc/resolv.conf"
    fi
    exec env -i "$(command -v chroot)" --userspec="$user" "$root" /usr/bin/env --chdir="$dir" "${envs[@]}" "$@"
fi

# __serve RUNTIME BUILD UID:GID K8S_CONF PRESTOP NHEALTH HEALTH... NVOL VOLUME... ENTRYPOINT+CMD...: the run-time
# checks; K8S_CONF is Deployment weir's weir.conf (empty: not run as the Deployment), PRESTOP its preStop program.
if [ "${1:-}" = __serve ]; then
    R=$2 B=$3 U=$4 K8S_CONF=$5 PRESTOP=$6
    shift 6
    n=$1 && shift
    health=("${@:1:$n}") && shift "$n"
    n=$1 && shift
    volumes=("${@:1:$n}") && shift "$n"
    cmd=("$@")
    fail=0
    pass() { echo "  ok: $*"; }
    bad() {
        echo "  FAILED: $*"
        fail=1
    }
    in_root() { # UID:GID CMD...: a command in the image's root, as a container runs it
        local u=$1 && shift
        env -i PATH="$PATH_IN" HOME=/ chroot --userspec="$u" "$R" "$@"
    }
    mount -t proc proc /proc # this PID namespace's processes
    ip link set lo up
    for v in "${volumes[@]}"; do # read before the tmpfs hides them
        [ -d "$R$v" ] || die "VOLUME $v is not a directory of the image"
    done
    vol_opts=()
    for v in "${volumes[@]}"; do
        vol_opts+=("$(stat -c 'mode=%a,uid=%u,gid=%g' "$R$v")")
    done
    [ -e "$R/etc/hosts" ] || : >"$R/etc/hosts" # a mount point, as container runtimes make one
    mount --bind "$R" "$R"
    mount -o remount,bind,ro "$R"
    mount -t proc proc "$R/proc"
    mount --bind /dev "$R/dev"
    mount -o remount,bind,ro "$R/dev"
    mount --bind /sys "$R/sys"
    mount -o remount,bind,ro "$R/sys"
    for i in "${!volumes[@]}"; do
        mount -t tmpfs -o "size=16m,${vol_opts[$i]}" tmpfs "$R${volumes[$i]}"
    done

    # run_weir STABLE CANARY ARGS...: starts two weir-upstreams of the build stage and weir from ENTRYPOINT+CMD as
    # the image's USER with ARGS added, and waits until it is ready; sets $weir.
    run_weir() {
        chroot "$B" /src/build/weir-upstream --listen "$1" --name stable &
        chroot "$B" /src/build/weir-upstream --listen "$2" --name canary &
        shift 2
        # Not through in_root: $! must be weir itself (env and chroot exec it), not a subshell.
        env -i PATH="$PATH_IN" HOME=/ chroot --userspec="$U" "$R" "${cmd[@]}" "$@" &
        weir=$!
        local ready=0
        for _ in $(seq 100); do
            if curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:9901/readyz 2>/dev/null; then
                ready=1 && break
            fi
            kill -0 "$weir" 2>/dev/null || break
            sleep 0.1
        done
        [ "$ready" = 1 ] || die "weir did not become ready on 127.0.0.1:9901/readyz"
        pass "weir ready (/readyz 200) from ENTRYPOINT+CMD ${cmd[*]} $*"
    }
    # route_and_stop WEIRCTL-ARGS...: a request goes to stable, a weight change over the control listener sends the
    # next to canary and lands in the state file, and SIGTERM ends weir with status 0.
    route_and_stop() {
        local body out rc=-1
        body=$(curl -sS --max-time 5 http://127.0.0.1:8080/ || true)
        [ "$body" = "hello from stable" ] && pass "GET / through weir: '$body'" || bad "GET / answered '$body'"
        if out=$(in_root "$U" /usr/local/bin/weirctl "$@" set weight 100 2>&1); then
            pass "weirctl $* set weight 100"
        else
            bad "weirctl $* set weight 100: $out"
        fi
        body=$(curl -sS --max-time 5 http://127.0.0.1:8080/ || true)
        [ "$body" = "hello from canary" ] && pass "GET / after the change: '$body'" || bad "GET / then answered '$body'"
        if [ -f "$R/var/lib/weir/state" ] && [ "$(stat -c %u "$R/var/lib/weir/state")" = "${U%%:*}" ]; then
            pass "state file written to /var/lib/weir/state"
        else
            bad "no state file /var/lib/weir/state owned by ${U%%:*}"
        fi
        kill -TERM "$weir"
        for _ in $(seq 100); do
            if ! kill -0 "$weir" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$weir/stat" 2>/dev/null)" = Z ]; then
                wait "$weir" && rc=0 || rc=$?
                break
            fi
            sleep 0.1
        done
        [ "$rc" = 0 ] && pass "SIGTERM: weir exited 0" || bad "after SIGTERM weir's exit status is $rc"
        kill -TERM $(jobs -p) 2>/dev/null || true
        wait || true
    }

    echo "-- as docker run --read-only IMAGE --stable ... --canary ... runs it"
    run_weir 127.0.0.1:18081 127.0.0.1:18082 --stable 127.0.0.1:18081 --canary 127.0.0.1:18082
    ids=$(awk '/^Uid:/ {print $2, $3, $4, $5} /^Gid:/ {print $2, $3, $4, $5}' "/proc/$weir/status" | tr '\n' ' ')
    want="${U%%:*} ${U%%:*} ${U%%:*} ${U%%:*} ${U##*:} ${U##*:} ${U##*:} ${U##*:} "
    [ "$ids" = "$want" ] && pass "weir runs as $U" || bad "weir's uid/gid are '$ids', want '$want'"
    [ "${U%%:*}" != 0 ] && [ "${U##*:}" != 0 ] || bad "the image's USER is root"
    if [ ${#health[@]} -gt 0 ]; then
        out=$(in_root "$U" "${health[@]}" 2>&1) && pass "HEALTHCHECK ${health[*]}: exit 0" ||
            bad "HEALTHCHECK ${health[*]}: $out"
    fi
    # As root, so that only the read-only mount can be what refuses.
    if out=$(in_root 0:0 /bin/sh -c ': >/usr/local/bin/x' 2>&1); then
        bad "the root file system is writable"
    else
        case "$out" in *"Read-only file system"*) pass "root file system read-only" ;; *) bad "write to / failed oddly: $out" ;; esac
    fi
    tools=$(in_root 0:0 /bin/sh -c 'for t in gcc cc make curl; do command -v $t; done' || true)
    [ -z "$tools" ] && pass "no compiler, make or curl in the runtime root" || bad "runtime root has: $tools"
    route_and_stop -s /run/weir/weir.sock

    # As Deployment weir runs it: its ConfigMap's weir.conf and a token projected read-only at /etc/weir (root-owned,
    # group fsGroup, 0440), fresh emptyDirs (0777), and the Service names in /etc/hosts (kubelet manages that file
    # too; in a cluster DNS answers): the TCP control listener with the token, the names resolved by weir.
    if [ -n "$K8S_CONF" ]; then
        echo "-- as Deployment weir runs it (docker/kubernetes/weir.yaml)"
        pod=$(dirname "$K8S_CONF")/pod && rm -rf "$pod" "$pod.hosts" && mkdir -m 0755 "$pod"
        cp "$K8S_CONF" "$pod/weir.conf"
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$pod/token"
        chown "0:${U##*:}" "$pod/weir.conf" "$pod/token" && chmod 0440 "$pod/weir.conf" "$pod/token"
        mount --bind "$pod" "$R/etc/weir"
        mount -o remount,bind,ro "$R/etc/weir"
        printf '127.0.0.1 localhost\n127.0.0.2 demo-stable\n127.0.0.3 demo-canary\n' >"$pod.hosts"
        mount --bind "$pod.hosts" "$R/etc/hosts"
        for v in "${volumes[@]}"; do
            mount -t tmpfs -o size=16m,mode=0777 tmpfs "$R$v"
        done
        run_weir 127.0.0.2:80 127.0.0.3:80
        curl -fsS --max-time 5 -o /dev/null http://127.0.0.1:9901/healthz && pass "liveness GET /healthz: 200" ||
            bad "liveness GET /healthz failed"
        if [ -n "$PRESTOP" ] && in_root "$U" /bin/sh -c "test -x '$PRESTOP'"; then
            pass "the preStop command $PRESTOP is in the image"
        else
            bad "the preStop command '$PRESTOP' is not an executable of the image"
        fi
        if in_root "$U" /usr/local/bin/weirctl -s tcp://127.0.0.1:9902 -k /etc/debian_version status >/dev/null 2>&1; then
            bad "the TCP control listener accepted a wrong token"
        else
            pass "the TCP control listener refuses a wrong token"
        fi
        route_and_stop -s tcp://127.0.0.1:9902 -k /etc/weir/token
    fi
    exit "$fail"
fi

# ---- reading the Dockerfile ----------------------------------------------------------------------------------

cd "$(dirname "$self")/.."
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount namespaces)"
for t in debootstrap unshare chroot curl ip; do
    command -v "$t" >/dev/null || die "needs $t (apt-get install debootstrap util-linux curl iproute2)"
done

DOCKERFILE=${1:-docker/Dockerfile}
WORK=$PWD/build/docker-check
start=$(date +%s)

ins=() # instruction keywords, upper case
arg=() # their argument text, continuation lines joined
joined=""
while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^[[:space:]]*# ]] && continue # comments, also between continuation lines (Docker drops them)
    [[ $line =~ ^[[:space:]]*$ ]] && continue
    if [[ $line =~ \\$ ]]; then
        joined+="${line%\\}"
        continue
    fi
    joined+=$line
    joined=${joined#"${joined%%[![:space:]]*}"}
    kw=${joined%%[[:space:]]*}
    ins+=("${kw^^}")
    rest=${joined#"$kw"}
    arg+=("${rest#"${rest%%[![:space:]]*}"}")
    joined=""
done <"$DOCKERFILE"
[ -z "$joined" ] || die "$DOCKERFILE ends inside a continued line"

# exec_form TEXT: prints the elements of a JSON array of plain strings, one per line.
exec_form() {
    local s=$1 re='^[[:space:]]*"([^"\\]*)"[[:space:]]*(,|\])(.*)$'
    [[ $s =~ ^[[:space:]]*\[(.*)$ ]] || die "only the exec form [\"...\"] is supported: $1"
    s=${BASH_REMATCH[1]}
    [[ $s =~ ^[[:space:]]*\][[:space:]]*$ ]] && return 0
    while [[ $s =~ $re ]]; do
        printf '%s\n' "${BASH_REMATCH[1]}"
        [ "${BASH_REMATCH[2]}" = "]" ] && return 0
        s=${BASH_REMATCH[3]}
    done
    die "cannot read the exec form: $1"
}

# exec_array NAME TEXT: sets the array NAME to the exec form's elements (a form it cannot read ends the check).
exec_array() {
    local -n into=$1
    local text
    text=$(exec_form "$2")
    into=()
    [ -z "$text" ] || mapfile -t into <<<"$text"
}

# The apt sources this machine uses: the Debian mirror and its security mirror.
sources=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' |
    grep -oE 'https?://[^[:space:]]+' || true)
MIRROR=${WEIR_DEBIAN_MIRROR:-$(grep -E '/debian/?$' <<<"$sources" | head -1)}
SECURITY=$(grep -E '/debian-security/?$' <<<"$sources" | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SECURITY:-${MIRROR%/debian}/debian-security}

# base_root IMAGE: a cached debootstrap root for a Debian base image; prints its path.
base_root() {
    local suite
    case "$1" in
    debian:bookworm* | debian:12*) suite=bookworm ;;
    *) die "FROM $1: only Debian 12 (debian:bookworm*, debian:12*) bases can be reproduced with debootstrap" ;;
    esac
    local dir=$WORK/base/$suite
    if [ ! -f "$dir/.complete" ]; then
        echo "docker-check: debootstrap $suite from $MIRROR (once; cached in $dir)" >&2
        rm -rf "$dir" "$dir.tmp"
        mkdir -p "$WORK/base"
        debootstrap --variant=minbase "$suite" "$dir.tmp" "$MIRROR" >"$WORK/base/$suite.log" 2>&1 ||
            die "debootstrap failed; see $WORK/base/$suite.log"
        # The sources Debian's images carry: the release, its updates and its security fixes.
        rm -f "$dir.tmp/etc/apt/sources.list"
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
            "$MIRROR" "$suite" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg \
            "$SECURITY" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg >"$dir.tmp/etc/apt/sources.list.d/debian.sources"
        chroot "$dir.tmp" apt-get clean
        touch "$dir.tmp/.complete"
        mv "$dir.tmp" "$dir"
    fi
    printf '%s\n' "$dir"
}

# The build context: the tree less what .dockerignore names (patterns `path`, `dir/*.x` and `**/pattern`).
make_context() {
    local ctx=$WORK/context excl=() p
    if [ -f .dockerignore ]; then
        while IFS= read -r p || [ -n "$p" ]; do
            p=${p%%#*}
            p=$(echo "$p" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
            [ -n "$p" ] || continue
            case "$p" in
            !*) die ".dockerignore exceptions (!) are not supported: $p" ;;
            \*\*/*) excl+=(--no-anchored --wildcards-match-slash --exclude="${p#\*\*/}") ;;
            *) excl+=(--anchored --no-wildcards-match-slash --exclude="./${p#/}") ;;
            esac
        done <.dockerignore
    fi
    rm -rf "$ctx" && mkdir -p "$ctx"
    tar -C . "${excl[@]}" -cf - . | tar -C "$ctx" -xf -
    printf '%s\n' "$ctx"
}

# ---- building the stages -------------------------------------------------------------------------------------

declare -A global_args=() stage_root=()
stage_names=()
ctx=""
final_user=0:0 final_root="" entry=() cmdline=() health=() volumes=()

i=0
while [ $i -lt ${#ins[@]} ] && [ "${ins[$i]}" = ARG ]; do
    a=${arg[$i]}
    [[ $a =~ ^([A-Za-z_][A-Za-z0-9_]*)(=(.*))?$ ]] || die "cannot read ARG $a"
    global_args[${BASH_REMATCH[1]}]=${BASH_REMATCH[3]}
    i=$((i + 1))
done

while [ $i -lt ${#ins[@]} ]; do
    [ "${ins[$i]}" = FROM ] || die "expected FROM, found ${ins[$i]} ${arg[$i]}"
    from=${arg[$i]}
    for k in "${!global_args[@]}"; do
        from=${from//\$\{$k\}/${global_args[$k]}}
        from=${from//\$$k/${global_args[$k]}}
    done
    read -r image as name extra <<<"$from"
    [ -z "$extra" ] || die "cannot read FROM $from"
    [ -z "$as" ] || [ "${as^^}" = AS ] || die "cannot read FROM $from"
    name=${name:-stage${#stage_names[@]}}
    stage_names+=("$name")
    j=$((i + 1))
    while [ $j -lt ${#ins[@]} ] && [ "${ins[$j]}" != FROM ]; do j=$((j + 1)); done
    # Steps before the stage's first COPY install packages; their result is cached.
    c=$((i + 1))
    while [ $c -lt $j ] && [ "${ins[$c]}" != COPY ]; do c=$((c + 1)); done

    if [[ $image =~ ^[a-z0-9._-]+$ ]] && [ -n "${stage_root[$image]:-}" ]; then
        die "FROM an earlier stage ($image) is not supported"
    fi
    base=$(base_root "$image")
    key=$({
        echo "$image $MIRROR $SECURITY"
        for ((k = i + 1; k < c; k++)); do echo "${ins[$k]} ${arg[$k]}"; done
    } | sha256sum | cut -c1-16)
    root=$WORK/stages/$name
    layer=$WORK/layers/$name.$key
    rm -rf "$root" && mkdir -p "$WORK/stages" "$WORK/layers"
    echo "== stage $name (FROM $image)"
    if [ -d "$layer" ]; then
        echo "   steps before the first COPY: cached ($layer)"
        cp -a "$layer" "$root"
        first=$c
    else
        cp -a "$base" "$root"
        rm -f "$root/.complete"
        first=$((i + 1))
    fi

    user=0:0 workdir=/ envs=() stage_args=()
    # A cached layer's WORKDIR, USER, ENV and ARG still have to be known: replay those lines without running RUN.
    for ((k = i + 1; k < j; k++)); do
        kw=${ins[$k]} a=${arg[$k]}
        run=1
        [ $k -lt "$first" ] && run=0
        case "$kw" in
        RUN)
            [[ $a =~ ^\[ ]] && die "RUN in exec form is not supported: $a"
            if [ $run = 1 ]; then
                echo "-- RUN $a"
                unshare --mount --propagation private "$self" __chroot "$root" "$user" "$workdir" \
                    PATH="$PATH_IN" HOME=/root "${stage_args[@]}" "${envs[@]}" -- /bin/sh -c "$a" ||
                    die "stage $name: RUN failed: $a"
            fi
            ;;
        COPY)
            from_stage="" srcs=()
            read -r -a words <<<"$a"
            for w in "${words[@]}"; do
                case "$w" in
                --from=*) from_stage=${w#--from=} ;;
                --*) die "COPY option $w is not supported" ;;
                \[*) die "COPY in exec form is not supported" ;;
                *\$* | *\** | *\?*) die "COPY with variables or wildcards is not supported: $a" ;;
                *) srcs+=("$w") ;;
                esac
            done
            [ ${#srcs[@]} -ge 2 ] || die "COPY needs a source and a destination: $a"
            dest=${srcs[-1]}
            unset 'srcs[-1]'
            [[ $dest == /* ]] || dest=${workdir%/}/$dest
            if [ -n "$from_stage" ]; then
                src_root=${stage_root[$from_stage]:-}
                [ -n "$src_root" ] || die "COPY --from=$from_stage: no such earlier stage"
            else
                [ -n "$ctx" ] || ctx=$(make_context)
                src_root=$ctx
            fi
            echo "-- COPY $a"
            todir=0
            [[ $dest == */ ]] || [ ${#srcs[@]} -gt 1 ] && todir=1
            for s in "${srcs[@]}"; do
                src=$src_root/${s#/}
                [ -e "$src" ] || die "COPY: $s does not exist in ${from_stage:-the build context}"
                if [ -d "$src" ]; then
                    mkdir -p "$root$dest"
                    cp -R --no-preserve=ownership --preserve=mode,timestamps "$src/." "$root$dest/"
                elif [ $todir = 1 ] || [ -d "$root$dest" ]; then
                    mkdir -p "$root$dest"
                    cp --no-preserve=ownership --preserve=mode,timestamps "$src" "$root${dest%/}/"
                else
                    mkdir -p "$(dirname "$root$dest")"
                    cp --no-preserve=ownership --preserve=mode,timestamps "$src" "$root$dest"
                fi
            done
            ;;
        WORKDIR)
            [[ $a == /* ]] || a=${workdir%/}/$a
            workdir=$a
            mkdir -p "$root$workdir"
            ;;
        USER)
            [[ $a =~ ^[0-9]+(:[0-9]+)?$ ]] || die "USER $a: only a numeric UID[:GID] (what runAsNonRoot can verify) is supported"
            [[ $a == *:* ]] || a=$a:$a
            user=$a
            ;;
        ENV)
            [[ $a =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]\$]*$ ]] || die "ENV: only one KEY=VALUE without blanks or \$ is supported: $a"
            envs+=("$a")
            ;;
        ARG)
            [[ $a =~ ^([A-Za-z_][A-Za-z0-9_]*)(=(.*))?$ ]] || die "cannot read ARG $a"
            v=${BASH_REMATCH[3]}
            [ -n "${BASH_REMATCH[2]}" ] || v=${global_args[${BASH_REMATCH[1]}]:-}
            stage_args+=("${BASH_REMATCH[1]}=$v")
            ;;
        VOLUME) exec_array v "$a" && volumes+=("${v[@]}") ;;
        ENTRYPOINT) exec_array entry "$a" ;;
        CMD) exec_array cmdline "$a" ;;
        HEALTHCHECK)
            [[ $a =~ CMD[[:space:]]+(\[.*)$ ]] || die "HEALTHCHECK: only CMD [\"...\"] is supported: $a"
            exec_array health "${BASH_REMATCH[1]}"
            ;;
        EXPOSE | LABEL) ;;
        *) die "instruction $kw is not supported: $kw $a" ;;
        esac
        if [ $k -eq $((c - 1)) ] && [ ! -d "$layer" ]; then
            rm -rf "$WORK/layers/$name".* && cp -a "$root" "$layer.tmp" && mv "$layer.tmp" "$layer"
        fi
    done
    stage_root[$name]=$root
    stage_root[$((${#stage_names[@]} - 1))]=$root
    final_user=$user final_root=$root final_name=$name
    i=$j
done

[ ${#entry[@]} -gt 0 ] || die "the final stage has no ENTRYPOINT"
build_root=${stage_root[0]}
[ -x "$build_root/src/build/weir-upstream" ] || die "the first stage built no /src/build/weir-upstream (the test upstream)"
echo "== image: stage $final_name, $(du -sh --exclude=proc "$final_root" | cut -f1) unpacked, USER $final_user"
echo "== run: read-only root, volumes ${volumes[*]:-(none)}, ${entry[*]} ${cmdline[*]}"
# Deployment weir's weir.conf: the block under `weir.conf: |` of docker/kubernetes/weir.yaml's ConfigMap.
k8s_conf=$WORK/kubernetes-weir.conf
awk '/^  weir.conf: \|$/ {on = 1; next} on && /^    / {print substr($0, 5); next} on && /^$/ {print; next} {on = 0}' \
    docker/kubernetes/weir.yaml >"$k8s_conf"
grep -q '^control-tcp ' "$k8s_conf" || die "no weir.conf with control-tcp in docker/kubernetes/weir.yaml"
# The program of its preStop exec hook (command: ["PROGRAM", ...]), which must exist in the image.
prestop=$(awk '/preStop:/ {on = 1} on && /command:/ {print; exit}' docker/kubernetes/weir.yaml |
    sed -n 's/.*command: *\[ *"\([^"]*\)".*/\1/p')
unshare --mount --net --pid --fork --propagation private "$self" __serve "$final_root" "$build_root" "$final_user" \
    "$k8s_conf" "$prestop" \
    ${#health[@]} "${health[@]}" ${#volumes[@]} "${volumes[@]}" "${entry[@]}" "${cmdline[@]}" ||
    die "FAILED after $(($(date +%s) - start)) s"
echo "docker-check: ok ($(($(date +%s) - start)) s)"
