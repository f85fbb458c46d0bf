#!/usr/bin/env bash
# Check the chart's Prometheus alerts and Grafana dashboard with promtool (built from its
# Go module by hack/build-go-tool.sh):
#   - promtool check rules on files/prometheus-rules.yaml (syntax, PromQL, templates);
#   - promtool test rules tests/prometheus/rules.test.yaml (each alert fires when it should
#     and stays quiet when it should not);
#   - the PrometheusRule the chart renders holds exactly that file's groups;
#   - every query of files/grafana-dashboard.json parses as PromQL (written as recording
#     rules, with Grafana's $__rate_interval as 5m, and checked by promtool).
# That they read only metrics the webhook exports is tests/monitoring.rs's job (cargo test).
#
#   hack/check-monitoring.sh
#
# PROMTOOL=/path/to/promtool overrides the pinned build; HELM likewise (lib-manifests.sh).
set -euo pipefail
# shellcheck source=lib-manifests.sh source-path=SCRIPTDIR
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib-manifests.sh"

if [[ -n "${PROMTOOL:-}" ]]; then
  promtool="${PROMTOOL}"
else
  "${repo}/hack/build-go-tool.sh" promtool
  promtool="$("${repo}/hack/build-go-tool.sh" promtool --print-path)"
fi
helm="$(helm_bin)"
rules="${chart}/files/prometheus-rules.yaml"
dashboard="${chart}/files/grafana-dashboard.json"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

echo "promtool check rules ${rules#"${repo}/"}"
"${promtool}" check rules "${rules}"

echo "promtool test rules tests/prometheus/rules.test.yaml"
(cd "${repo}/tests/prometheus" && "${promtool}" test rules rules.test.yaml)

echo "the rendered PrometheusRule holds the rule file as it is"
"${helm}" template "${release}" "${chart}" --namespace "${namespace}" \
  --set metrics.prometheusRule.enabled=true >"${tmp}/rendered.yaml"
python3 - "${tmp}/rendered.yaml" "${rules}" <<'PY'
import sys, yaml
rendered, path = sys.argv[1:3]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
found = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(found) == 1, f"{len(found)} PrometheusRules rendered"
assert found[0]["spec"] == yaml.safe_load(open(path)), "the PrometheusRule differs from the rule file"
PY

echo "every dashboard query parses as PromQL"
python3 - "${dashboard}" >"${tmp}/dashboard-rules.json" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", "5m")
        rules.append({"record": f"dashboard:panel_{panel['id']}:{target['refId'].lower()}", "expr": expr})
# JSON is YAML: promtool reads it as a rule file.
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout, indent=1)
PY
"${promtool}" check rules "${tmp}/dashboard-rules.json"
echo "check-monitoring: alerts and dashboard OK"
