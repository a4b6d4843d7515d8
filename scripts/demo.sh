#!/usr/bin/env bash
# The main job: install what is missing, build, start NATS (when none answers), a dispatcher and
# two workers, send the seed's two requests, print each final state and result, stop the fleet.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p .fleet

command -v cargo >/dev/null || { echo "demo: cargo is missing; install Rust from https://rustup.rs" >&2; exit 1; }
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
scripts/ensure-nats.sh --start >/dev/null

echo "demo: building the fleet (cargo build --workspace --bins)" >&2
cargo build --quiet --workspace --bins
bin="$root/target/debug"

# Offline, the GitHub request fails fast and ends `dead` after its retries.
export FLEET_HTTP_TIMEOUT="${FLEET_HTTP_TIMEOUT:-5s}"
export FLEET_BACKOFF_MAX="${FLEET_BACKOFF_MAX:-8s}"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    if [[ -f .fleet/nats.pid ]]; then
        kill -TERM "$(cat .fleet/nats.pid)" 2>/dev/null || true
        rm -f .fleet/nats.pid
    fi
}
trap cleanup EXIT

FLEET_METRICS_PORT="${DISPATCHER_METRICS_PORT:-9464}" "$bin/dispatcher" >.fleet/dispatcher.log 2>&1 & pids+=($!)
FLEET_METRICS_PORT="${WORKER1_METRICS_PORT:-9465}" FLEET_WORKER_ID=worker-1 "$bin/worker" >.fleet/worker-1.log 2>&1 & pids+=($!)
FLEET_METRICS_PORT="${WORKER2_METRICS_PORT:-9466}" FLEET_WORKER_ID=worker-2 "$bin/worker" >.fleet/worker-2.log 2>&1 & pids+=($!)
echo "demo: dispatcher and two workers started (logs in .fleet/; /metrics on ports ${DISPATCHER_METRICS_PORT:-9464}, ${WORKER1_METRICS_PORT:-9465}, ${WORKER2_METRICS_PORT:-9466})" >&2

for _ in $(seq 1 100); do
    n="$("$bin/fleet" catalog --json 2>/dev/null | grep -c '"name"' || true)"
    [[ "$n" -ge 3 ]] && break
    sleep 0.2
done

status=0
for request in \
    "Give me the stars and contributors for ranfysvalle02/ai-self-attention" \
    'Make the letter `x` uppercase'; do
    echo
    echo "\$ fleet submit --wait \"$request\""
    "$bin/fleet" submit --wait --timeout "${DEMO_TIMEOUT:-180s}" "$request" || status=$?
done
echo
echo "demo: done (exit code of the last failing request: $status; 1 is expected offline for GitHub)" >&2
