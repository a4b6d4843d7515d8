#!/usr/bin/env bash
# Offline checks of the monitoring files, with promtool (Debian: apt-get install prometheus):
#   1. deploy/prometheus/alerts.yaml parses and lints (promtool check rules);
#   2. its unit tests pass (promtool test rules alerts_test.yaml);
#   3. every query of the Grafana dashboard deploy/grafana/fleet.json parses: each becomes a
#      recording rule of a throw-away rule file that promtool checks, with Grafana's
#      $__rate_interval / $__interval / $__range replaced by durations.
# Whether the queries return data from a real fleet is tests/e2e/prometheus.rs's job.
#
#   deploy/prometheus/check.sh        # exit 0 = all good; PROMTOOL=/path/to/promtool to choose
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
promtool="${PROMTOOL:-promtool}"
command -v "$promtool" >/dev/null 2>&1 \
    || { echo "check: promtool is missing: apt-get install prometheus (Debian/Ubuntu)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$promtool" check rules "$here/alerts.yaml"
(cd "$here" && "$promtool" test rules alerts_test.yaml)

# JSON is YAML: the rule file is written as JSON, no YAML library needed.
python3 - "$here/../grafana/fleet.json" >"$tmp/dashboard-queries.yaml" <<'PY'
import json, sys

dashboard = json.load(open(sys.argv[1]))
grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
rules = []

def walk(panels):
    for panel in panels:
        walk(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = target.get("expr", "").strip()
            if not expr:
                sys.exit(f"check: panel {panel.get('title')!r} has a target without a query")
            for var, value in grafana_vars.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                sys.exit(f"check: panel {panel.get('title')!r}: unknown variable in {expr!r}")
            rules.append({"record": f"dashboard_query_{len(rules) + 1}", "expr": expr})

walk(dashboard.get("panels", []))
if not rules:
    sys.exit("check: the dashboard has no query")
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
PY
echo "check: $(grep -c '"record"' "$tmp/dashboard-queries.yaml") dashboard queries"
"$promtool" check rules "$tmp/dashboard-queries.yaml"
