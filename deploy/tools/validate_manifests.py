#!/usr/bin/env python3
"""Offline validation of everything deploy/ ships. Called by deploy/validate.sh.

Checks, with no cluster and no network:
  * every rendered Kubernetes manifest against the Kubernetes OpenAPI schemas
    (kubernetes-validate, strict: unknown fields are errors) for --k8s-version;
  * every KEDA ScaledObject against the openAPIV3Schema of KEDA's CRD
    (deploy/schemas/keda-scaledobject-v1alpha1.openapi.yaml, made strict the same way);
  * every prometheus-operator PodMonitor against its CRD's openAPIV3Schema
    (deploy/schemas/prometheus-operator-podmonitor-v1.openapi.yaml, strict too);
  * deploy/compose.yaml against the compose-spec JSON schema (deploy/schemas/compose-spec.json);
  * the nats-server configuration of every overlay with `nats-server -t`, when available;
  * the fleet's own rules, which no schema knows: probes on /healthz and /readyz at
    FLEET_METRICS_PORT, grace period above FLEET_DRAIN_GRACE, hardening, one autoscaler per
    Deployment, KEDA triggers on the right stream/consumers/endpoint, stream replicas that
    the NATS cluster can hold, references that resolve, Dockerfile targets that exist, every
    task run by some worker Deployment, and no pod given a secret its work does not use
    (which keys each Secret holds is read from the --example files; a Secret documented there
    is one the user creates, so references to it resolve); each fleet process logging in as its
    NATS role without managing streams, the NATS server given every password its users need,
    and a NetworkPolicy letting only the fleet's pods reach the NATS client port.

Exit status 0 when everything passes; 1 otherwise, after listing every problem.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# --------------------------------------------------------------------------------------
# Facts the manifests must agree with (SPEC.md and the implementation decisions).

FLEET_TASKS = ("github.repo_info", "text.transform", "note.append", "chat")
FLEET_IMAGES = ("fleet-dispatcher", "fleet-worker")
WORKER_IMAGE = "fleet-worker"
# Workloads whose voluntary disruptions (node drains) must be bounded by a PodDisruptionBudget
# (and every worker Deployment).
PDB_REQUIRED = {"fleet-dispatcher", "nats"}
# Least privilege (SPEC "Security"): who may hold which secret. A pod may get a key only when
# one of its tasks (or, for "@dispatcher", the dispatcher) uses it, and never alongside a task
# kept away from it: `chat` turns anyone's text into LLM output and needs no GitHub token; the
# GitHub task sends its token to GitHub and needs no LLM key.
SECRET_USERS = {
    "GITHUB_TOKEN": {"github.repo_info"},
    "OPENAI_API_KEY": {"chat", "@dispatcher"},
    "AZURE_OPENAI_API_KEY": {"chat", "@dispatcher"},
}
KEPT_AWAY = {
    "GITHUB_TOKEN": {"chat"},
    "OPENAI_API_KEY": {"github.repo_info"},
    "AZURE_OPENAI_API_KEY": {"github.repo_info"},
}
NATS_MONITOR_PORT = 8222
DEFAULTS = {"FLEET_PREFIX": "fleet", "FLEET_METRICS_PORT": "9464", "FLEET_DRAIN_GRACE": "20s",
            "FLEET_STREAM_REPLICAS": "1"}
NAMESPACED_EXEMPT = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                     "ClusterRoleBinding", "PriorityClass", "StorageClass"}


def consumer_name(task: str) -> str:
    return "worker-" + task.replace(".", "_")


def stream_name(prefix: str, what: str) -> str:
    return prefix.upper().replace("-", "_") + "_" + what


def parse_duration(text: str) -> float:
    """'20s', '500ms', '1m30s', '24h' -> seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text.strip()):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------------------
# YAML loading (values starting with '=' are plain strings, as in kubernetes-validate).

class _Loader(yaml.SafeLoader):
    pass


def _construct_value(loader: yaml.Loader, node: yaml.Node) -> str:
    return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:value", _construct_value)


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.load_all(f, Loader=_Loader) if d]


# --------------------------------------------------------------------------------------

@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    keda_checked: int = 0
    podmonitors_checked: int = 0
    nats_configs_checked: int = 0

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)


def ident(doc: dict) -> str:
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{md.get('name')}" + (f" (ns {ns})" if ns else "")


def strictify(schema: Any) -> Any:
    """Like kubeconform --strict: objects that list properties reject unknown ones."""
    if isinstance(schema, dict):
        out = {k: strictify(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strictify(v) for v in schema]
    return schema


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errs]


# --------------------------------------------------------------------------------------
# Schemas

def validate_k8s_doc(doc: dict, where: str, k8s_version: str, keda: jsonschema.protocols.Validator,
                     rep: Report) -> None:
    for key in ("apiVersion", "kind", "metadata"):
        if key not in doc:
            rep.error(where, f"document without {key}")
            return
    if not (doc.get("metadata") or {}).get("name"):
        rep.error(where, f"{doc['kind']} without metadata.name")
    if doc["apiVersion"].startswith("keda.sh/"):
        if doc["kind"] != "ScaledObject" or doc["apiVersion"] != "keda.sh/v1alpha1":
            rep.error(where, f"no schema stored for {doc['apiVersion']} {doc['kind']}")
            return
        for e in schema_errors(keda, doc):
            rep.error(f"{where} {ident(doc)}", f"KEDA CRD schema: {e}")
        rep.keda_checked += 1
        return
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        if (doc["kind"], doc["apiVersion"]) != ("PodMonitor", "monitoring.coreos.com/v1") \
                or PODMONITOR is None:
            rep.error(where, f"no schema stored for {doc['apiVersion']} {doc['kind']}")
            return
        for e in schema_errors(PODMONITOR, doc):
            rep.error(f"{where} {ident(doc)}", f"prometheus-operator CRD schema: {e}")
        rep.podmonitors_checked += 1
        return
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "<root>"
        rep.error(f"{where} {ident(doc)}", f"Kubernetes {e.version} schema: {path}: {e.message}")
    except SchemaNotFoundError as e:
        rep.error(f"{where} {ident(doc)}", e.message)


# --------------------------------------------------------------------------------------
# The fleet's rules, per rendered overlay

def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def pod_template_labels(doc: dict) -> dict:
    return ((((doc.get("spec") or {}).get("template") or {}).get("metadata") or {})
            .get("labels") or {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def image_base(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.split("@")[0].split(":")[0]


def env_value(c: dict, name: str) -> str | None:
    """A container's literal `env` value for `name`, if it sets one."""
    return next((e.get("value") for e in c.get("env") or [] if e.get("name") == name), None)


def worker_tasks(c: dict, settings: dict) -> set[str]:
    """The tasks a worker container runs: its FLEET_TASKS, else the ConfigMap's, else all."""
    text = env_value(c, "FLEET_TASKS") or settings.get("FLEET_TASKS") or ""
    tasks = {t.strip() for t in text.split(",") if t.strip()}
    return tasks or set(FLEET_TASKS)


def secret_keys_given(c: dict, secret_keys: dict[str, set[str]]) -> dict[str, str]:
    """Secret-bearing keys a container gets, each with the Secret it comes from."""
    given: dict[str, str] = {}
    for ef in c.get("envFrom") or []:
        name = (ef.get("secretRef") or {}).get("name")
        for key in secret_keys.get(name, set()) if name else ():
            given[key] = name
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            given[e.get("name")] = ref.get("name")
        elif e.get("name") in SECRET_USERS and e.get("value"):
            given[e.get("name")] = "a literal env value"
    return given


def check_overlay(name: str, docs: list[dict], rep: Report) -> None:
    where = f"overlay {name}"
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", "?"), []).append(d)

    def named(kind: str, nm: str) -> dict | None:
        return next((d for d in by_kind.get(kind, []) if d["metadata"].get("name") == nm), None)

    # --- one namespace, declared --------------------------------------------------------
    namespaces = {d["metadata"].get("namespace") for d in docs if d.get("kind") not in NAMESPACED_EXEMPT}
    if None in namespaces:
        missing = [ident(d) for d in docs
                   if d.get("kind") not in NAMESPACED_EXEMPT and not d["metadata"].get("namespace")]
        rep.error(where, f"objects without a namespace: {', '.join(missing)}")
    namespaces.discard(None)
    if len(namespaces) != 1:
        rep.error(where, f"expected one namespace, found {sorted(namespaces)}")
        return
    ns = namespaces.pop()
    if not named("Namespace", ns):
        rep.error(where, f"no Namespace object for {ns}")

    # --- settings from the fleet ConfigMap --------------------------------------------
    fleet_cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].startswith("fleet-config")]
    if len(fleet_cms) != 1:
        rep.error(where, f"expected one fleet-config ConfigMap, found {len(fleet_cms)}")
        return
    settings = dict(DEFAULTS)
    settings.update({k: str(v) for k, v in (fleet_cms[0].get("data") or {}).items()})
    try:
        drain = parse_duration(settings["FLEET_DRAIN_GRACE"])
        metrics_port = int(settings["FLEET_METRICS_PORT"])
        stream_replicas = int(settings["FLEET_STREAM_REPLICAS"])
    except ValueError as e:
        rep.error(where, f"fleet-config: {e}")
        return
    prefix = settings["FLEET_PREFIX"]

    # Secrets of the overlay, and the ones the examples document (the user creates them).
    secrets = {d["metadata"]["name"] for d in by_kind.get("Secret", [])} | set(SECRET_KEYS)
    configmaps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
    service_accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])} | {"default"}

    # --- workloads ---------------------------------------------------------------------
    workloads = [d for d in docs if pod_spec(d) is not None]
    # Worker Deployments by name, with the tasks each runs.
    worker_deployments: dict[str, set[str]] = {}
    for w in workloads:
        wid = f"{where} {ident(w)}"
        spec = pod_spec(w)
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            rep.error(wid, "pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            rep.error(wid, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            rep.error(wid, "automountServiceAccountToken must be false (no process uses the API)")
        if spec.get("serviceAccountName", "default") not in service_accounts:
            rep.error(wid, f"ServiceAccount {spec.get('serviceAccountName')} is not in the overlay")
        annotations = ((w["spec"].get("template") or {}).get("metadata") or {}).get("annotations") or {}
        for c in spec.get("containers") or []:
            cid = f"{wid} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                rep.error(cid, "securityContext.allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                rep.error(cid, "securityContext.readOnlyRootFilesystem must be true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                rep.error(cid, "securityContext.capabilities.drop must contain ALL")
            res = c.get("resources") or {}
            for k in ("cpu", "memory"):
                if k not in (res.get("requests") or {}):
                    rep.error(cid, f"resources.requests.{k} missing")
            if "memory" not in (res.get("limits") or {}):
                rep.error(cid, "resources.limits.memory missing")
            image = c.get("image", "")
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                rep.error(cid, f"image {image!r} has no tag")
            # references resolve (hash-suffixed generator names included)
            for ef in c.get("envFrom") or []:
                for kind, pool in (("configMapRef", configmaps), ("secretRef", secrets)):
                    ref = ef.get(kind)
                    if ref and not ref.get("optional") and ref.get("name") not in pool:
                        rep.error(cid, f"{kind} {ref.get('name')} does not exist in the overlay")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    if ref.get("name") not in secrets:
                        rep.error(cid, f"env {e.get('name')}: Secret {ref.get('name')} does not exist")
                    elif ref.get("key") not in SECRET_KEYS.get(ref.get("name"), {ref.get("key")}):
                        rep.error(cid, f"env {e.get('name')}: Secret {ref.get('name')} has no key "
                                  f"{ref.get('key')} (see the examples)")
            if image_base(image) in FLEET_IMAGES:
                check_nats_role(cid, c, "dispatcher" if image_base(image) == "fleet-dispatcher"
                                else "worker", rep)
                check_fleet_container(cid, w, spec, c, annotations, drain, metrics_port, rep)
                if image_base(image) == WORKER_IMAGE:
                    tasks = worker_tasks(c, settings)
                    unknown = tasks - set(FLEET_TASKS)
                    if unknown:
                        rep.error(cid, f"FLEET_TASKS names unknown tasks {sorted(unknown)}")
                    if w.get("kind") == "Deployment":
                        worker_deployments[w["metadata"]["name"]] = tasks & set(FLEET_TASKS)
                    roles = tasks
                else:
                    roles = {"@dispatcher"}
                for key, source in sorted(secret_keys_given(c, SECRET_KEYS).items()):
                    users = SECRET_USERS.get(key)
                    if users is None:
                        continue
                    if not users & roles:
                        rep.error(cid, f"gets {key} ({source}), which none of its work uses "
                                  f"({', '.join(sorted(roles))})")
                    elif KEPT_AWAY[key] & roles:
                        rep.error(cid, f"gets {key} ({source}) while it runs "
                                  f"{', '.join(sorted(KEPT_AWAY[key] & roles))}: run that in a "
                                  "Deployment of its own without this secret")
        for v in spec.get("volumes") or []:
            cm = v.get("configMap")
            if cm and not cm.get("optional") and cm.get("name") not in configmaps:
                rep.error(wid, f"volume {v.get('name')}: ConfigMap {cm.get('name')} does not exist")
            sec = v.get("secret")
            if sec and not sec.get("optional") and sec.get("secretName") not in secrets:
                rep.error(wid, f"volume {v.get('name')}: Secret {sec.get('secretName')} does not exist")

    # --- Services and PDBs select something ---------------------------------------------
    for svc in by_kind.get("Service", []):
        sel = (svc.get("spec") or {}).get("selector") or {}
        if sel and not any(selects(sel, pod_template_labels(w)) for w in workloads):
            rep.error(f"{where} {ident(svc)}", f"selector {sel} matches no pod template")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(selects(sel, pod_template_labels(w)) for w in workloads):
            rep.error(f"{where} {ident(pdb)}", f"selector {sel} matches no pod template")
    for w in workloads:
        if (w["metadata"]["name"] in PDB_REQUIRED or w["metadata"]["name"] in worker_deployments) and not any(
                selects(((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {},
                        pod_template_labels(w)) for p in by_kind.get("PodDisruptionBudget", [])):
            rep.error(f"{where} {ident(w)}", "no PodDisruptionBudget covers it")

    # --- exactly one autoscaler on the workers; KEDA triggers correct -------------------
    scalers: dict[str, list[str]] = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"].get("scaleTargetRef") or {}
        scalers.setdefault(ref.get("name"), []).append(ident(hpa))
    for so in by_kind.get("ScaledObject", []):
        ref = so["spec"].get("scaleTargetRef") or {}
        scalers.setdefault(ref.get("name"), []).append(ident(so))
        check_scaled_object(f"{where} {ident(so)}", so, ns, prefix,
                            worker_deployments.get(ref.get("name"), set(FLEET_TASKS)), rep)
    for target, owners in scalers.items():
        if not named("Deployment", target) and not named("StatefulSet", target):
            rep.error(where, f"{', '.join(owners)} scale {target}, which is not in the overlay")
        if len(owners) > 1:
            rep.error(where, f"{target} has {len(owners)} autoscalers ({', '.join(owners)}): they would fight")
    if not worker_deployments:
        rep.error(where, "no worker Deployment (image fleet-worker)")
    run = set().union(*worker_deployments.values()) if worker_deployments else set()
    if run != set(FLEET_TASKS):
        rep.error(where, f"no worker Deployment runs {sorted(set(FLEET_TASKS) - run)}")
    for name in sorted(worker_deployments):
        if len(scalers.get(name, [])) != 1:
            rep.error(where, f"{name} needs exactly one autoscaler (KEDA ScaledObject or HPA)")
        worker = named("Deployment", name)
        if worker is not None and "replicas" in worker["spec"]:
            rep.error(f"{where} {ident(worker)}", "autoscaled: spec.replicas must be left out "
                      "(every kubectl apply would reset it)")
    dispatcher = named("Deployment", "fleet-dispatcher")
    if dispatcher is None:
        rep.error(where, "no fleet-dispatcher Deployment")

    # --- NATS: cluster size, stream replicas, config --------------------------------------
    nats = named("StatefulSet", "nats")
    if nats is None:
        rep.error(where, "no nats StatefulSet")
        return
    nats_replicas = int(nats["spec"].get("replicas", 1))
    if stream_replicas > nats_replicas:
        rep.error(where, f"FLEET_STREAM_REPLICAS={stream_replicas} but NATS has {nats_replicas} node(s)")
    if nats_replicas >= 3 and stream_replicas < 3:
        rep.error(where, f"{nats_replicas} NATS nodes but FLEET_STREAM_REPLICAS={stream_replicas}: "
                  "a lost node would lose the streams it alone holds")
    if nats_replicas % 2 == 0:
        rep.error(where, f"{nats_replicas} NATS nodes: use an odd number for a RAFT quorum")
    conf_cm = next((v["configMap"]["name"] for v in pod_spec(nats).get("volumes") or []
                    if v.get("configMap")), None)
    conf_doc = named("ConfigMap", conf_cm) if conf_cm else None
    conf = ((conf_doc or {}).get("data") or {}).get("nats.conf")
    if conf is None:
        rep.error(where, "nats StatefulSet mounts no ConfigMap with a nats.conf")
        return
    clustered = re.search(r"^\s*cluster\s*\{", conf, re.M) is not None
    if clustered != (nats_replicas > 1):
        rep.error(where, f"nats.conf {'has' if clustered else 'lacks'} a cluster block "
                  f"but the StatefulSet has {nats_replicas} replica(s)")
    if clustered:
        for i in range(nats_replicas):
            if f"nats-{i}.{nats['spec'].get('serviceName')}" not in conf:
                rep.error(where, f"nats.conf routes do not name nats-{i}.{nats['spec'].get('serviceName')}")
    if not re.search(rf"^\s*http\s*:\s*\S*:{NATS_MONITOR_PORT}\b", conf, re.M):
        rep.error(where, f"nats.conf does not serve monitoring on {NATS_MONITOR_PORT} (KEDA reads /jsz)")
    data = (conf_doc or {}).get("data") or {}
    check_nats_config(where, data, rep)
    check_nats_users(f"{where} {ident(nats)}", pod_spec(nats), data, rep)
    check_network_policy(where, by_kind.get("NetworkPolicy", []), nats, workloads, rep)


def check_fleet_container(cid: str, w: dict, spec: dict, c: dict, annotations: dict,
                          drain: float, metrics_port: int, rep: Report) -> None:
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= drain:
        rep.error(cid, f"terminationGracePeriodSeconds {grace} must exceed FLEET_DRAIN_GRACE ({drain:g}s)")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ((c.get(probe) or {}).get("httpGet")) or {}
        port = get.get("port")
        port = ports.get(port, port) if isinstance(port, str) else port
        if get.get("path") != path or port != metrics_port:
            rep.error(cid, f"{probe} must GET {path} on port {metrics_port} (FLEET_METRICS_PORT), "
                      f"has {get.get('path')} on {port}")
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port),
            "prometheus.io/path": "/metrics"}
    for k, v in want.items():
        if annotations.get(k) != v:
            rep.error(cid, f"pod annotation {k} should be {v!r}, is {annotations.get(k)!r}")


def check_scaled_object(sid: str, so: dict, ns: str, prefix: str, tasks: set[str],
                        rep: Report) -> None:
    spec = so["spec"]
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if lo < 1:
        rep.error(sid, "minReplicaCount must be >= 1: the consumers and the task catalog need a live worker")
    if hi < lo:
        rep.error(sid, f"maxReplicaCount {hi} < minReplicaCount {lo}")
    fb = spec.get("fallback")
    if fb and not lo <= fb.get("replicas", lo) <= hi:
        rep.error(sid, f"fallback.replicas {fb.get('replicas')} outside [{lo}, {hi}]")
    want_stream = stream_name(prefix, "TASKS")
    # One trigger per task and priority (worker-, high-worker-, low-worker-<task>) of the
    # Deployment it scales.
    want_consumers = {lane + consumer_name(t) for t in tasks for lane in ("", "high-", "low-")}
    seen = set()
    names = set()
    for i, t in enumerate(spec.get("triggers") or []):
        tid = f"{sid} trigger {i}"
        md = t.get("metadata") or {}
        if t.get("type") != "nats-jetstream":
            rep.error(tid, f"type {t.get('type')!r}, expected nats-jetstream")
            continue
        if t.get("name") in names:
            rep.error(tid, f"duplicate trigger name {t.get('name')}")
        names.add(t.get("name"))
        if md.get("stream") != want_stream:
            rep.error(tid, f"stream {md.get('stream')!r}, expected {want_stream}")
        if md.get("account") != "$G":
            rep.error(tid, f"account {md.get('account')!r}: the fleet's NATS has no accounts, use $G")
        seen.add(md.get("consumer"))
        endpoint = md.get("natsServerMonitoringEndpoint", "")
        m = re.fullmatch(r"nats\.([a-z0-9-]+)(?:\.svc(?:\.[a-z0-9.-]+)?)?:(\d+)", endpoint)
        if not m or m.group(1) != ns or int(m.group(2)) != NATS_MONITOR_PORT:
            rep.error(tid, f"natsServerMonitoringEndpoint {endpoint!r} should be "
                      f"nats.{ns}.svc:{NATS_MONITOR_PORT} (KEDA runs in another namespace)")
        try:
            if int(md.get("lagThreshold", "")) < 1:
                raise ValueError
        except ValueError:
            rep.error(tid, f"lagThreshold {md.get('lagThreshold')!r} is not a positive integer")
    if seen != want_consumers:
        rep.error(sid, f"consumers {sorted(c for c in seen if c)} != {sorted(want_consumers)}")


NATS_SERVER: str | None = None
PODMONITOR: jsonschema.protocols.Validator | None = None
# Secret name -> the keys it holds, as the example Secrets (--example) show them.
SECRET_KEYS: dict[str, set[str]] = {}


# Where the nats-tls component mounts the server's certificate; -t needs real files there.
NATS_TLS_DIR = "/etc/nats-tls/"


def conf_variables(text: str) -> set[str]:
    """The `$NAME` references of a nats-server config outside quoted strings."""
    unquoted = re.sub(r'"[^"]*"', '""', re.sub(r"#.*", "", text))
    return set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", unquoted))


def check_nats_role(cid: str, c: dict, user: str, rep: Report) -> None:
    """A dispatcher or worker logs in as its role of deploy/nats/auth.conf, with its own inbox
    and its password from the Secret, and leaves the streams to the fleet-setup Job."""
    want = {"NATS_USER": user, "NATS_INBOX_PREFIX": f"_INBOX_{user}", "FLEET_MANAGE_STREAMS": "false"}
    for k, v in want.items():
        if env_value(c, k) != v:
            rep.error(cid, f"env {k} should be {v!r} (its NATS role), is {env_value(c, k)!r}")
    ref = next(((e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env") or []
                if e.get("name") == "NATS_PASSWORD"), None) or {}
    if ref.get("key") != f"FLEET_{user.upper()}_PASSWORD":
        rep.error(cid, f"NATS_PASSWORD should come from the Secret key FLEET_{user.upper()}_PASSWORD, "
                  f"comes from {ref.get('key')!r}")


def check_nats_users(nid: str, spec: dict, data: dict, rep: Report) -> None:
    """Every password variable of the users' file reaches the nats container from a Secret."""
    c = next((c for c in spec.get("containers") or [] if c.get("name") == "nats"), {})
    given = {e.get("name") for e in c.get("env") or []}
    for ef in c.get("envFrom") or []:
        given |= SECRET_KEYS.get((ef.get("secretRef") or {}).get("name"), set())
    auth = data.get("auth.conf")
    if auth is None:
        rep.error(nid, "the nats-config ConfigMap has no auth.conf (deploy/nats/auth.conf)")
        return
    for var in sorted(conf_variables(auth) - given):
        if not re.search(rf"^\s*{var}\s*[:=]", auth, re.M):
            rep.error(nid, f"auth.conf reads ${var}, which no env or documented Secret gives the nats container")


def check_network_policy(where: str, policies: list[dict], nats: dict, workloads: list[dict],
                         rep: Report) -> None:
    """A NetworkPolicy on the NATS pods admits every pod that logs in (NATS_USER) to the client
    port, and opens the monitoring port to chosen namespaces only."""
    labels = pod_template_labels(nats)
    mine = [p for p in policies if selects(((p.get("spec") or {}).get("podSelector") or {})
                                           .get("matchLabels") or {}, labels)
            and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or [])]
    if not mine:
        rep.error(where, "no NetworkPolicy restricts ingress to the NATS pods")
        return
    rules = [r for p in mine for r in (p["spec"].get("ingress") or [])]

    def peers(port: str) -> list[dict]:
        return [f for r in rules if any(pt.get("port") == port for pt in r.get("ports") or [])
                for f in r.get("from") or []]

    for w in workloads:
        if not any(env_value(c, "NATS_USER") for c in pod_spec(w).get("containers") or []):
            continue
        ok = any("namespaceSelector" not in f and selects((f.get("podSelector") or {})
                 .get("matchLabels") or {}, pod_template_labels(w)) for f in peers("client"))
        if not ok:
            rep.error(where, f"the NetworkPolicy keeps {ident(w)} away from the NATS client port")
    for port in ("client", "monitor", "metrics"):
        for f in peers(port):
            if f.get("namespaceSelector") == {} and not (f.get("podSelector") or {}).get("matchLabels"):
                rep.error(where, f"the NetworkPolicy opens the NATS {port} port to every pod")


def tls_files(tmp: Path) -> bool:
    """A throwaway CA-signed-looking certificate for `-t` (openssl), where the config wants one."""
    d = tmp / "tls"
    d.mkdir()
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=nats",
                        "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt")],
                       capture_output=True, timeout=30)
    if r.returncode == 0:
        (d / "ca.crt").write_bytes((d / "tls.crt").read_bytes())
    return r.returncode == 0


def check_nats_config(where: str, data: dict, rep: Report) -> None:
    if NATS_SERVER is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SERVER_NAME="nats-0")
        # Every file of the ConfigMap (nats.conf includes auth.conf and tls.conf), with a
        # placeholder for each variable the pod's environment would give (the passwords).
        for name, text in data.items():
            if NATS_TLS_DIR in text:
                if not tls_files(Path(tmp)):
                    rep.note(f"{where}: no openssl; {name}'s TLS block not run through nats-server -t")
                    return
                text = text.replace(NATS_TLS_DIR, f"{tmp}/tls/")
            (Path(tmp) / name).write_text(text)
            for var in conf_variables(text):
                env.setdefault(var, "placeholder")
        path = Path(tmp) / "nats.conf"
        r = subprocess.run([NATS_SERVER, "-t", "-c", str(path)], capture_output=True, text=True,
                           env=env, timeout=30)
        if r.returncode != 0:
            out = (r.stdout + r.stderr).strip().replace(str(path), "nats.conf")
            rep.error(where, f"nats-server -t rejects nats.conf: {out}")
        else:
            rep.nats_configs_checked += 1


# --------------------------------------------------------------------------------------
# docker compose and the Dockerfile

def dockerfile_stages(path: Path) -> dict[str, str]:
    stages = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            stages[m.group(2).lower()] = m.group(1)
    return stages


def check_dockerfile(path: Path, rep: Report) -> dict[str, str]:
    stages = dockerfile_stages(path)
    where = str(path)
    for target in ("dispatcher", "worker", "fleet"):
        if target not in stages:
            rep.error(where, f"no build target {target!r}")
    text = path.read_text()
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.M)
    if not users or any(not re.fullmatch(r"[1-9]\d*(:\d+)?", u) for u in users):
        rep.error(where, f"runtime USER must be numeric and non-root, found {users}")
    for binary in ("dispatcher", "worker", "fleet"):
        if f"/usr/local/bin/{binary}" not in text:
            rep.error(where, f"the {binary} binary is never installed")
    return stages


def check_compose(path: Path, schema_path: Path, stages: dict[str, str], rep: Report) -> None:
    import json

    where = str(path)
    data = yaml.load(path.read_text(), Loader=_Loader)
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for e in schema_errors(validator, data):
        rep.error(where, f"compose-spec schema: {e}")
    services = data.get("services") or {}
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict) and build.get("target") and build["target"] not in stages:
            rep.error(where, f"service {name}: build target {build['target']!r} not in the Dockerfile")
        if isinstance(build, dict) and build.get("dockerfile"):
            df = (path.parent / build.get("context", ".") / build["dockerfile"]).resolve()
            if not df.exists():
                rep.error(where, f"service {name}: {df} does not exist")
    for name in ("nats", "jaeger", "dispatcher", "worker"):
        if name not in services:
            rep.error(where, f"no {name} service")
    if "worker" in services and ((services["worker"].get("deploy") or {}).get("replicas")) != 3:
        rep.error(where, "the worker service should run 3 replicas")
    for name in ("dispatcher", "worker"):
        svc = services.get(name) or {}
        env = svc.get("environment") or {}
        drain = parse_duration(str(env.get("FLEET_DRAIN_GRACE") or DEFAULTS["FLEET_DRAIN_GRACE"]))
        stop = parse_duration(str(svc.get("stop_grace_period", "10s")))
        if stop <= drain:
            rep.error(where, f"service {name}: stop_grace_period {stop:g}s must exceed FLEET_DRAIN_GRACE {drain:g}s")
        for k, v in (("NATS_URL", "nats://nats:4222"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
                     ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")):
            if env.get(k) != v:
                rep.error(where, f"service {name}: {k} should be {v}, is {env.get(k)!r}")
    nats_cmd = (services.get("nats") or {}).get("command") or []
    if "-js" not in nats_cmd and "--jetstream" not in nats_cmd:
        rep.error(where, "nats runs without JetStream (-js)")
    profiles = {p for s in services.values() for p in s.get("profiles") or []}
    if "llm" not in profiles:
        rep.error(where, "no service in the llm profile")


# --------------------------------------------------------------------------------------

def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-version", required=True)
    ap.add_argument("--keda-schema", type=Path, required=True)
    ap.add_argument("--podmonitor-schema", type=Path,
                    help="openAPIV3Schema of prometheus-operator's PodMonitor CRD")
    ap.add_argument("--compose", type=Path, required=True)
    ap.add_argument("--compose-schema", type=Path, required=True)
    ap.add_argument("--dockerfile", type=Path, required=True)
    ap.add_argument("--nats-server", help="nats-server binary for `-t` config checks (optional)")
    ap.add_argument("--overlay", action="append", default=[], metavar="NAME=FILE",
                    help="a rendered overlay: schema and fleet rules")
    ap.add_argument("--checked", action="append", default=[], metavar="TEXT",
                    help="a check validate.sh already passed, for the summary line")
    ap.add_argument("--example", action="append", default=[], type=Path, metavar="FILE",
                    help="a standalone manifest (not part of an overlay): schema only")
    args = ap.parse_args(list(argv) if argv is not None else None)

    global NATS_SERVER, PODMONITOR
    NATS_SERVER = args.nats_server or None
    for path in args.example:
        for d in load_docs(path):
            if d.get("kind") == "Secret":
                keys = set((d.get("stringData") or {}).keys()) | set((d.get("data") or {}).keys())
                SECRET_KEYS.setdefault(d["metadata"]["name"], set()).update(keys)
    if args.podmonitor_schema:
        podmonitor_schema = strictify(yaml.safe_load(args.podmonitor_schema.read_text()))
        jsonschema.Draft7Validator.check_schema(podmonitor_schema)
        PODMONITOR = jsonschema.Draft7Validator(podmonitor_schema)

    rep = Report()
    keda_schema = strictify(yaml.safe_load(args.keda_schema.read_text()))
    jsonschema.Draft7Validator.check_schema(keda_schema)
    keda = jsonschema.Draft7Validator(keda_schema)

    for spec in args.overlay:
        name, _, file = spec.partition("=")
        docs = load_docs(Path(file))
        if not docs:
            rep.error(f"overlay {name}", "rendered to nothing")
        for d in docs:
            validate_k8s_doc(d, f"overlay {name}", args.k8s_version, keda, rep)
        if docs:
            check_overlay(name, docs, rep)
        rep.counts[name] = len(docs)
    for path in args.example:
        docs = load_docs(path)
        for d in docs:
            validate_k8s_doc(d, str(path), args.k8s_version, keda, rep)
        rep.counts[path.name] = len(docs)

    stages = check_dockerfile(args.dockerfile, rep)
    check_compose(args.compose, args.compose_schema, stages, rep)
    rep.counts[args.compose.name] = 1

    total = sum(rep.counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in rep.counts.items())
    if rep.errors:
        for e in rep.errors:
            print(f"FAIL {e}", file=sys.stderr)
        print(f"deploy: {len(rep.errors)} problem(s) in {total} manifests ({detail})")
        return 1
    extras = [f"{rep.keda_checked} ScaledObject(s) against the KEDA CRD", "compose-spec schema"]
    if rep.podmonitors_checked:
        extras.insert(1, f"{rep.podmonitors_checked} PodMonitor(s) against the prometheus-operator CRD")
    extras.append(f"{rep.nats_configs_checked} nats.conf by nats-server -t" if NATS_SERVER
                  else "nats.conf not run through nats-server (not installed)")
    extras += args.checked
    print(f"deploy: {total} manifests valid ({detail}; Kubernetes {args.k8s_version} strict; "
          f"{'; '.join(extras)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
