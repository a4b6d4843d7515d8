#!/usr/bin/env bash
# deploy/image-smoke.sh: build the fleet's images and run them, with no registry.
#
#   sudo deploy/image-smoke.sh [--keep] [--no-build] [--rebuild-base]
#
# 1. Compiles the release binaries on the host (nice -n 10; a no-op when they are current).
# 2. Makes a Debian bookworm base from Debian's own packages: debootstrap --variant=minbase
#    plus ca-certificates, trimmed (apt lists and caches, docs, man pages, locales), imported
#    as localhost/fleet-base:bookworm.
# 3. Builds the dispatcher, worker and fleet targets of deploy/docker/Dockerfile with podman,
#    RUNTIME_IMAGE=that base and BINARIES=prebuilt (the binaries from step 1): the runtime
#    stages are the Dockerfile's own, only the compile happens outside (see the Dockerfile).
# 4. Starts nats-server (JetStream, temp store, free ports) on the host, runs the worker and
#    the dispatcher images as Compose and Kubernetes do (uid 65532, read-only root, all
#    capabilities dropped, no-new-privileges), host network, waits for both /readyz, submits
#    one text.transform request with `fleet submit --wait` and checks that it succeeded and
#    said "HI"; reads its status with the fleet image; stops both (SIGTERM) and checks that
#    they exit 0.
# 5. Prints the timings and image sizes; removes the containers, the server and (unless
#    --keep) the images and the podman storage it used.
#
# Options:
#   --keep          keep the images and the storage under $FLEET_SMOKE_DIR; a later run reuses
#                   the base image (inspect with: podman --root "$FLEET_SMOKE_DIR/storage" images)
#   --no-build      use target/release/{dispatcher,worker,fleet} as they are
#   --rebuild-base  debootstrap again even when a kept base image exists
# Environment:
#   FLEET_SMOKE_DIR   podman storage and scratch space (default /var/tmp/fleet-image-smoke)
#   DEBIAN_MIRROR     default http://deb.debian.org/debian
#   PODMAN_RUNTIME    OCI runtime (default runc; see "Podman in this sandbox" below)
#   PODMAN_STORAGE_DRIVER  default overlay; vfs where overlay cannot be mounted
#
# Needs root (debootstrap, rootful podman), nats-server, curl, python3. podman, runc and
# debootstrap are installed with apt-get when absent. Exit status 0 when the request succeeded.
#
# Podman in this sandbox (found by trying, kept because they are harmless elsewhere):
#   --runtime runc            crun 1.8 (bookworm) refuses cgroup v1/v2 hybrid hosts whose v2
#                             hierarchy has a controller ("cgroups in hybrid mode not
#                             supported"); runc accepts them
#   --cgroup-manager cgroupfs, --events-backend file   no systemd here
#   --ulimit nofile/nproc     podman asks for nofile=1048576 and nproc beyond pid_max; without
#                             CAP_SYS_RESOURCE (absent here) setrlimit refuses to raise a hard
#                             limit, so the containers get the host's: nofile = `ulimit -Hn`,
#                             nproc = min(`ulimit -Hu`, /proc/sys/kernel/pid_max)
#   own --root/--runroot      the run's images and containers stay apart from anyone else's
#                             and go away together
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

keep=0 build=1 rebuild_base=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --rebuild-base) rebuild_base=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "image-smoke: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'image-smoke: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { if (ms < 10000) printf "%d ms", ms; else printf "%.1f s", ms / 1000 }'; }

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and rootful podman)"

# ---- tools ------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
nats_server="$(command -v nats-server || echo /usr/sbin/nats-server)"
[[ -x $nats_server ]] || die "no nats-server on PATH or in /usr/sbin"
for t in curl python3; do command -v "$t" >/dev/null || die "$t is needed"; done

state="${FLEET_SMOKE_DIR:-/var/tmp/fleet-image-smoke}"
mkdir -p "$state"
work="$(mktemp -d "$state/run.XXXXXX")"
nofile="$(ulimit -Hn)"
nproc="$(ulimit -Hu)"
pid_max="$(cat /proc/sys/kernel/pid_max)"
[[ $nofile == unlimited ]] && nofile=1048576
[[ $nproc == unlimited || $nproc -gt $pid_max ]] && nproc=$pid_max
pm=(podman --root "$state/storage" --runroot "$state/run"
    --storage-driver "${PODMAN_STORAGE_DRIVER:-overlay}"
    --runtime "${PODMAN_RUNTIME:-runc}" --cgroup-manager cgroupfs --events-backend file)

base=localhost/fleet-base:bookworm
tag=smoke
images=(dispatcher worker fleet)
made_images=()
base_reused=0
containers=()
nats_pid=""

cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do "${pm[@]}" rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
  [[ -n $nats_pid ]] && { kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true; }
  if ((keep)); then
    say "kept: ${made_images[*]:-no new images} (podman --root $state/storage images)"
  elif ((base_reused)); then
    # The storage holds a base kept by an earlier --keep run: remove only this run's images.
    if ((${#made_images[@]})); then "${pm[@]}" rmi -f "${made_images[@]}" >/dev/null 2>&1 || true; fi
    "${pm[@]}" image prune -f >/dev/null 2>&1 || true
  else
    # The storage is this run's alone: all of it goes.
    "${pm[@]}" rmi -af >/dev/null 2>&1 || true
    findmnt -rn -o TARGET | grep -F "$state/" | sort -r | xargs -r umount 2>/dev/null || true
    rm -rf "$state/storage" "$state/run"
  fi
  rm -rf "$work"
  rmdir "$state" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_start=$(now_ms)

# ---- 1. binaries --------------------------------------------------------------------------
if ((build)); then
  say "cargo build --release (dispatcher, worker, fleet)"
  t0=$(now_ms)
  (cd "$repo" && nice -n 10 cargo build --release --quiet \
      -p fleet-dispatcher -p fleet-worker -p fleet-cli) || die "cargo build failed"
  t_cargo=$(( $(now_ms) - t0 ))
fi
bin="$repo/target/release"
for b in dispatcher worker fleet; do
  [[ -x $bin/$b ]] || die "$bin/$b is missing (build it or drop --no-build)"
done

# ---- 2. the base image ----------------------------------------------------------------------
if ((rebuild_base == 0)) && "${pm[@]}" image exists "$base"; then
  say "base: reusing $base (kept by an earlier --keep run; --rebuild-base to redo)"
  base_reused=1 t_debootstrap="" t_import=""
else
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  say "base: debootstrap --variant=minbase --include=ca-certificates bookworm ($mirror)"
  t0=$(now_ms)
  nice -n 10 debootstrap --variant=minbase --include=ca-certificates bookworm \
      "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # What debian:bookworm-slim leaves out too; nothing the binaries read.
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/cache/apt/*.bin \
         "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/usr/share/{doc,man,info}/* \
         "$work"/rootfs/var/log/*.log
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
       -exec rm -rf {} +
  t_debootstrap=$(( $(now_ms) - t0 ))
  t0=$(now_ms)
  tar --numeric-owner -C "$work/rootfs" -c . | "${pm[@]}" import -q - "$base" >/dev/null \
    || die "podman import failed"
  t_import=$(( $(now_ms) - t0 ))
  made_images+=("$base")
  rm -rf "$work/rootfs"
fi

# ---- 3. the fleet's images ---------------------------------------------------------------
mkdir -p "$work/ctx"
cp "$bin/dispatcher" "$bin/worker" "$bin/fleet" "$work/ctx/"
t0=$(now_ms)
for target in "${images[@]}"; do
  name="localhost/fleet-$target:$tag"
  [[ $target == fleet ]] && name="localhost/fleet-cli:$tag"
  say "build: --target $target -> $name"
  "${pm[@]}" build -q -f "$here/docker/Dockerfile" --target "$target" \
      --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$base" \
      -t "$name" "$work/ctx" >/dev/null || die "podman build --target $target failed"
  made_images+=("$name")
done
t_build=$(( $(now_ms) - t0 ))

# ---- 4. run them against a nats-server ------------------------------------------------------
read -r nats_port nats_mon worker_port dispatcher_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
nats_url="nats://127.0.0.1:$nats_port"
"$nats_server" -js -sd "$work/js" -a 127.0.0.1 -p "$nats_port" -m "$nats_mon" \
  --name fleet-image-smoke >"$work/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$nats_mon/healthz?js-enabled-only=true" >/dev/null 2>&1 && break
  kill -0 "$nats_pid" 2>/dev/null || { cat "$work/nats.log" >&2; die "nats-server exited"; }
  sleep 0.1
done
say "nats-server on $nats_url (JetStream, store in $work/js)"

run_fleet_image() { # name image metrics-port [env...]
  local name="$1" image="$2" port="$3"; shift 3
  "${pm[@]}" run -d --name "$name" --network host \
    --user 65532:65532 --read-only --cap-drop all --security-opt no-new-privileges \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
    -e NATS_URL="$nats_url" -e FLEET_METRICS_PORT="$port" "$@" "$image" >/dev/null
}

wait_ready() { # container port
  local name="$1" port="$2" t0 deadline
  t0=$(now_ms); deadline=$(( t0 + 60000 ))
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    if [[ $("${pm[@]}" inspect -f '{{.State.Running}}' "$name" 2>/dev/null) != true ]]; then
      "${pm[@]}" logs "$name" >&2 || true
      die "$name exited before /readyz"
    fi
    (( $(now_ms) < deadline )) || { "${pm[@]}" logs "$name" >&2; die "$name: no /readyz in 60 s"; }
    sleep 0.05
  done
}

suffix="$$"
t0=$(now_ms)
containers+=("fleet-smoke-worker-$suffix")
run_fleet_image "fleet-smoke-worker-$suffix" "localhost/fleet-worker:$tag" "$worker_port" \
  -e FLEET_WORKER_ID=smoke-worker || die "podman run (worker) failed"
wait_ready "fleet-smoke-worker-$suffix" "$worker_port"
t_worker=$(( $(now_ms) - t0 ))
say "worker ready on :$worker_port"

t0=$(now_ms)
containers+=("fleet-smoke-dispatcher-$suffix")
run_fleet_image "fleet-smoke-dispatcher-$suffix" "localhost/fleet-dispatcher:$tag" \
  "$dispatcher_port" || die "podman run (dispatcher) failed"
wait_ready "fleet-smoke-dispatcher-$suffix" "$dispatcher_port"
t_dispatcher=$(( $(now_ms) - t0 ))
say "dispatcher ready on :$dispatcher_port"

t0=$(now_ms)
out="$(NATS_URL="$nats_url" timeout 60 "$bin/fleet" submit --wait --task text.transform \
        --input '{"text":"hi","op":"upper"}' 2>&1)" || { echo "$out" >&2; die "fleet submit failed"; }
t_request=$(( $(now_ms) - t0 ))
printf '  | %s\n' "${out//$'\n'/$'\n  | '}" >&2
grep -q '^result: succeeded' <<<"$out" || die "the request did not succeed"
grep -q '"HI"' <<<"$out" || die "the result is not \"HI\""
request_id="$(sed -n 's/^request_id: *//p' <<<"$out" | head -1)"

# The CLI image too: read the same request's status through it.
status="$("${pm[@]}" run --rm --network host --user 65532:65532 --read-only --cap-drop all \
  --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  -e NATS_URL="$nats_url" "localhost/fleet-cli:$tag" status "$request_id" 2>&1)" \
  || { echo "$status" >&2; die "fleet status in the fleet image failed"; }
grep -q 'succeeded' <<<"$status" || { echo "$status" >&2; die "the fleet image saw no success"; }

# SIGTERM, as `docker stop` and the kubelet send it: both drain and exit 0.
t0=$(now_ms)
"${pm[@]}" stop -t 30 "${containers[@]}" >/dev/null || die "podman stop failed"
t_stop=$(( $(now_ms) - t0 ))
for c in "${containers[@]}"; do
  code="$("${pm[@]}" inspect -f '{{.State.ExitCode}}' "$c")"
  [[ $code == 0 ]] || { "${pm[@]}" logs "$c" >&2; die "$c exited $code on SIGTERM"; }
done

# ---- 5. report ----------------------------------------------------------------------------
mib() { "${pm[@]}" image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MiB", $1 / 1048576 }'; }
{
  echo "image-smoke: PASSED (podman $(podman --version | awk '{print $3}'), runtime ${PODMAN_RUNTIME:-runc}, request $request_id)"
  [[ -n ${t_cargo:-} ]] && printf '  %-40s %s\n' "cargo build --release (host)" "$(secs "$t_cargo")"
  if [[ -n $t_debootstrap ]]; then
    printf '  %-40s %s\n' "debootstrap minbase + trim" "$(secs "$t_debootstrap")"
    printf '  %-40s %s\n' "import as $base" "$(secs "$t_import")"
  else
    printf '  %-40s %s\n' "base image" "reused"
  fi
  printf '  %-40s %s\n' "image build (3 targets)" "$(secs "$t_build")"
  printf '  %-40s %s\n' "worker: podman run -> /readyz" "$(secs "$t_worker")"
  printf '  %-40s %s\n' "dispatcher: podman run -> /readyz" "$(secs "$t_dispatcher")"
  printf '  %-40s %s\n' "request round trip (submit --wait)" "$(secs "$t_request")"
  printf '  %-40s %s\n' "SIGTERM -> both exited 0" "$(secs "$t_stop")"
  printf '  %-40s %s\n' "total" "$(secs $(( $(now_ms) - t_start )))"
  printf '  image sizes: %s %s' "$base" "$(mib "$base")"
  for target in "${images[@]}"; do
    name="localhost/fleet-$target:$tag"; [[ $target == fleet ]] && name="localhost/fleet-cli:$tag"
    printf ', %s %s' "${name#localhost/}" "$(mib "$name")"
  done
  printf '\n  binaries: %s\n' "$(cd "$bin" && du -h dispatcher worker fleet | awk '{printf "%s %s  ", $2, $1}')"
}
