#!/usr/bin/env bash
# Measures routing: starts a private fleet (nats-server on a free port, a dispatcher, a worker
# with the built-in tasks, the Python worker of examples/python-worker), runs `fleet eval` on
# the labelled set, prints its report, and stops everything.
#
#   scripts/eval-routing.sh [fleet eval flags...]                 patterns only (no LLM)
#   OPENAI_BASE_URL=http://127.0.0.1:8088/v1 FLEET_LLM_MODEL=NAME scripts/eval-routing.sh
#                                                                 patterns, then that LLM
#
# The worker runs without an LLM and with GitHub unreachable, so `chat` and `github.repo_info`
# end at once (failed / dead): routing is what is measured, and each result still says which
# task and input were routed. EVAL_FILE (deploy/eval/routing.jsonl) is the labelled set.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
file="${EVAL_FILE:-deploy/eval/routing.jsonl}"
nats_bin="$(scripts/ensure-nats.sh)"
cargo build --quiet --workspace --bins
bin="$root/target/debug"
run="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
closed="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
lib="$root/target/python-worker-lib"
if [[ ! -f "$lib/.fleet-installed" ]]; then
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$lib" \
        -r examples/python-worker/requirements.txt
    touch "$lib/.fleet-installed"
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

"$nats_bin" -js -a 127.0.0.1 -p "$port" -sd "$run/store" >"$run/nats.log" 2>&1 & pids+=($!)
export NATS_URL="nats://127.0.0.1:$port"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

FLEET_METRICS_PORT=0 "$bin/dispatcher" >"$run/dispatcher.log" 2>&1 & pids+=($!)
env -u OPENAI_BASE_URL -u OPENAI_API_KEY -u AZURE_OPENAI_ENDPOINT \
    FLEET_METRICS_PORT=0 FLEET_MAX_ATTEMPTS=1 GITHUB_API_URL="http://127.0.0.1:$closed" \
    FLEET_HTTP_TIMEOUT=2s "$bin/worker" >"$run/worker.log" 2>&1 & pids+=($!)
PYTHONPATH="$lib" python3 examples/python-worker/worker.py >"$run/python-worker.log" 2>&1 & pids+=($!)

for _ in $(seq 1 150); do
    n="$("$bin/fleet" catalog --json 2>/dev/null | grep -o '"name"' | wc -l || true)"
    [[ "$n" -ge 4 ]] && break
    sleep 0.2
done
sleep 1
echo "eval-routing: $(grep -c . "$file") labelled requests; LLM: ${OPENAI_BASE_URL:-none} ${FLEET_LLM_MODEL:-}" >&2
"$bin/fleet" eval "$file" "$@"
