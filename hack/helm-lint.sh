#!/usr/bin/env bash
# Lint the chart and render it for every selection x mode x certificate source (and, with
# engine=native, every selection x mode):
#   - helm lint --strict (values.schema.json, template errors, warnings fail too);
#   - helm template, and the output must parse as YAML (python3 + PyYAML, when present)
#     with the expected kinds and webhook path;
#   - values the chart must refuse are refused (schema and template checks).
#
#   hack/helm-lint.sh
set -euo pipefail
# shellcheck source=lib-manifests.sh source-path=SCRIPTDIR
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib-manifests.sh"

helm="$(helm_bin)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

have_yaml=0
if python3 -c 'import yaml' 2>/dev/null; then
  have_yaml=1
elif [[ "${CI:-}" == "true" ]]; then
  echo "error: python3 with PyYAML is required in CI (pip install pyyaml)" >&2
  exit 1
else
  echo "note: python3 with PyYAML not found (pip install pyyaml): skipping the YAML checks" >&2
fi

# check_yaml FILE SELECTION MODE SOURCE: parse every document, check what must be there.
check_yaml() {
  python3 - "$@" <<'PY'
import sys, yaml
path, selection, mode, source = sys.argv[1:5]
docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
kinds = sorted(d["kind"] for d in docs)
def one(kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{path}: {len(found)} {kind}"
    return found[0]
for d in docs:
    assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), f"{path}: incomplete object {d}"
mwc = one("MutatingWebhookConfiguration")
wh = mwc["webhooks"][0]
want_path = "/audit" if mode == "audit" else "/mutate"
assert wh["clientConfig"]["service"]["path"] == want_path, f"{path}: path {wh['clientConfig']['service']['path']}"
assert "caBundle" not in wh["clientConfig"], f"{path}: caBundle must be left to the injector"
assert wh["sideEffects"] == "None" and wh["reinvocationPolicy"] == "IfNeeded"
assert wh["admissionReviewVersions"] == ["v1"] and wh["matchPolicy"] == "Equivalent"
ns = wh["namespaceSelector"]
if selection == "optIn":
    assert ns == {"matchLabels": {"gomemlimit.io/inject": "enabled"}}, ns
else:
    names = [e for e in ns["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"][0]["values"]
    assert {"kube-system", "kube-public", "kube-node-lease"} <= set(names), names
dep = one("Deployment")
pod = dep["spec"]["template"]
assert pod["metadata"]["labels"]["gomemlimit.io/inject"] == "disabled"
c = pod["spec"]["containers"][0]
res = c["resources"]
assert res["requests"] == res["limits"], res
args = c["args"]
policy = yaml.safe_load(one("ConfigMap")["data"]["policy.yaml"])
assert policy["gogc"] == "off", policy
annotations = mwc["metadata"].get("annotations", {})
if source == "certManager":
    assert any(a.startswith("--tls-cert-file=") for a in args), args
    assert "cert-manager.io/inject-ca-from" in annotations
    assert kinds.count("Certificate") == 2 and kinds.count("Issuer") == 2, kinds
    assert "Secret" not in kinds
    assert not [d for d in docs if d["metadata"]["name"].endswith(("-cert-secret", "-webhook-ca"))], kinds
else:
    assert any(a.startswith("--cert-secret=") for a in args), args
    assert "cert-manager.io/inject-ca-from" not in annotations
    assert "Certificate" not in kinds
    secret = one("Secret")
    assert "data" not in secret and secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole")
             and d["metadata"]["name"].endswith(("-cert-secret", "-webhook-ca")) for r in d["rules"]]
    assert len(rules) == 2, rules
    assert all(r.get("resourceNames") and "create" not in r["verbs"] and "list" not in r["verbs"] for r in rules), rules
# The background audit (on by default): its flags match the selection, and its RBAC is
# list on pods and namespaces plus one Lease, nothing more.
assert pod["spec"]["automountServiceAccountToken"] is True
assert "--background-audit-interval=5m" in args and f"--selection={selection}" in args, args
lease = "gomemlimit-injector-background-audit"
assert f"--background-audit-lease={lease}" in args, args
excluded = [a.split("=", 1)[1].split(",") for a in args if a.startswith("--exclude-namespaces=")]
if selection == "clusterWide":
    assert excluded == [names], (excluded, names)
else:
    assert excluded == [], excluded
audit = [d for d in docs if d["metadata"]["name"] == lease]
assert sorted(d["kind"] for d in audit) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"], audit
cluster_rules = [d for d in audit if d["kind"] == "ClusterRole"][0]["rules"]
assert cluster_rules == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]}], cluster_rules
role_rules = [d for d in audit if d["kind"] == "Role"][0]["rules"]
assert role_rules == [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]},
], role_rules
print(f"  {len(docs)} objects: {', '.join(kinds)}")
PY
}

# check_native FILE SELECTION MODE: the native policies and bindings, and nothing else.
check_native() {
  python3 - "$@" <<'PY'
import sys, yaml
path, selection, mode = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
name = "pods.gomemlimit.io"
want = [("ValidatingAdmissionPolicy", name), ("ValidatingAdmissionPolicyBinding", name)]
if mode == "enforce":
    want = [("MutatingAdmissionPolicy", name), ("MutatingAdmissionPolicyBinding", name)] + want + [
        ("ValidatingAdmissionPolicy", "deny." + name), ("ValidatingAdmissionPolicyBinding", "deny." + name)]
assert sorted(kinds) == sorted(want), f"{path}: {kinds}"
for d in docs:
    spec = d["spec"]
    if d["kind"].endswith("Binding"):
        ns = spec["matchResources"]["namespaceSelector"]
        if selection == "optIn":
            assert ns == {"matchLabels": {"gomemlimit.io/inject": "enabled"}}, ns
        else:
            names = [e for e in ns["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"][0]["values"]
            assert {"kube-system", "kube-public", "kube-node-lease"} <= set(names), names
        continue
    assert spec["failurePolicy"] == "Fail" and spec["matchConstraints"]["resourceRules"][0]["resources"] == ["pods"]
    for v in spec["variables"]:
        assert v["expression"] and "{{" not in v["expression"], v
warn = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding" and d["metadata"]["name"] == name][0]
assert warn["spec"]["validationActions"] == (["Warn"] if mode == "enforce" else ["Warn", "Audit"]), warn["spec"]
audit = [v for d in docs if d["kind"] == "ValidatingAdmissionPolicy" for v in d["spec"]["variables"] if v["name"] == "auditPolicy"]
assert all(v["expression"] == ("false" if mode == "enforce" else "true") for v in audit), audit
print(f"  {len(docs)} objects: {', '.join(k for k, _ in kinds)}")
PY
}

failed=0
echo "helm lint --strict (default values)"
"${helm}" lint --strict "${chart}" --namespace "${namespace}" >"${tmp}/lint.log" 2>&1 || { cat "${tmp}/lint.log" >&2; failed=1; }

while read -r stem selection mode source; do
  flags="$(set_flags "${selection}" "${mode}" "${source}")"
  echo "${stem}: ${flags}"
  # shellcheck disable=SC2086
  if ! "${helm}" lint --strict "${chart}" --namespace "${namespace}" ${flags} >"${tmp}/lint.log" 2>&1; then
    cat "${tmp}/lint.log" >&2
    echo "FAIL: helm lint --strict ${flags}" >&2
    failed=1
    continue
  fi
  # shellcheck disable=SC2086
  if ! "${helm}" template "${release}" "${chart}" --namespace "${namespace}" ${flags} >"${tmp}/${stem}.yaml" 2>"${tmp}/template.log"; then
    cat "${tmp}/template.log" >&2
    echo "FAIL: helm template ${flags}" >&2
    failed=1
    continue
  fi
  if [[ "${have_yaml}" == 1 ]] && ! check_yaml "${tmp}/${stem}.yaml" "${selection}" "${mode}" "${source}"; then
    echo "FAIL: rendered YAML of ${flags}" >&2
    failed=1
  fi
done < <(combinations)

while read -r stem selection mode; do
  flags="$(native_set_flags "${selection}" "${mode}")"
  echo "${stem}: ${flags}"
  # shellcheck disable=SC2086
  if ! "${helm}" lint --strict "${chart}" --namespace "${namespace}" ${flags} >"${tmp}/lint.log" 2>&1; then
    cat "${tmp}/lint.log" >&2
    echo "FAIL: helm lint --strict ${flags}" >&2
    failed=1
    continue
  fi
  # shellcheck disable=SC2086
  if ! "${helm}" template "${release}" "${chart}" --namespace "${namespace}" ${flags} >"${tmp}/${stem}.yaml" 2>"${tmp}/template.log"; then
    cat "${tmp}/template.log" >&2
    echo "FAIL: helm template ${flags}" >&2
    failed=1
    continue
  fi
  if [[ "${have_yaml}" == 1 ]] && ! check_native "${tmp}/${stem}.yaml" "${selection}" "${mode}"; then
    echo "FAIL: rendered YAML of ${flags}" >&2
    failed=1
  fi
done < <(native_combinations)

# Non-default values that must still render (and lint) cleanly.
while read -r flags; do
  [[ -n "${flags}" ]] || continue
  echo "extra: ${flags}"
  # shellcheck disable=SC2086
  if ! "${helm}" lint --strict "${chart}" --namespace other-ns ${flags} >"${tmp}/lint.log" 2>&1; then
    cat "${tmp}/lint.log" >&2
    echo "FAIL: helm lint --strict ${flags}" >&2
    failed=1
  fi
done <<'EXTRA'
--set policy.percent=90 --set policy.gogc=100 --set policy.missingLimit=default --set policy.defaultMemory=256Mi --set policy.excludeContainers={istio-proxy,linkerd-proxy}
--set-string policy.gogc=keep --set policy.mode=audit --set replicaCount=1 --set priorityClassName=system-cluster-critical
--set certificates.certManager.issuerRef.name=corp-ca --set certificates.certManager.issuerRef.kind=ClusterIssuer
--set selection=clusterWide --set excludeNamespaces={monitoring,istio-system} --set webhook.failurePolicy=Fail --set webhook.timeoutSeconds=10
--set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --set fullnameOverride=gmi
--set engine=native --set native.failurePolicy=Ignore --set policy.percent=90 --set-string policy.gogc=keep --set policy.excludeContainers={istio-proxy}
--set engine=native --set policy.mode=audit --set policy.missingLimit=default --set policy.defaultMemory=256Mi
--set backgroundAudit.interval=1h30m --set selection=clusterWide
--set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.labels.release=prom --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true --set metrics.dashboard.namespace=monitoring --set metrics.dashboard.annotations.grafana_folder=Kubernetes
EXTRA

# The background audit off: no RBAC of its own, no flags, and with cert-manager no token;
# engine=native has no replicas to run it.
for off in "--set backgroundAudit.interval=0" "--set-string backgroundAudit.interval=0s" "--set engine=native"; do
  # shellcheck disable=SC2086
  if ! "${helm}" template "${release}" "${chart}" --namespace "${namespace}" ${off} >"${tmp}/off.yaml" 2>"${tmp}/template.log"; then
    cat "${tmp}/template.log" >&2
    echo "FAIL: helm template ${off}" >&2
    failed=1
  elif grep -q -e "background-audit" -e "automountServiceAccountToken: true" "${tmp}/off.yaml"; then
    echo "FAIL: ${off} still renders the background audit or mounts a token" >&2
    failed=1
  else
    echo "background audit off as it should: ${off}"
  fi
done

# Values the chart must refuse, each with a word of the expected message.
while IFS='|' read -r flags expect; do
  [[ -n "${flags}" ]] || continue
  # shellcheck disable=SC2086
  if "${helm}" template "${release}" "${chart}" --namespace "${namespace}" ${flags} >/dev/null 2>"${tmp}/err.log"; then
    echo "FAIL: accepted ${flags}" >&2
    failed=1
  elif ! grep -q -- "${expect}" "${tmp}/err.log"; then
    cat "${tmp}/err.log" >&2
    echo "FAIL: ${flags} refused without '${expect}'" >&2
    failed=1
  else
    echo "refused as it should: ${flags}"
  fi
done <<'BAD'
--set selection=optin|selection
--set mode=dryrun|mode
--set certificates.source=vault|source
--set policy.gogc=fast|gogc
--set policy.gogc=false|gogc
--set policy.missingLimit=default|defaultMemory
--set policy.percent=40|percent
--set policy.minPercent=90 --set policy.maxPercent=80 --set policy.percent=85|Percent
--set webhook.failurePolicy=Maybe|failurePolicy
--set webhook.timeoutSeconds=31|timeoutSeconds
--set polcy.percent=90|polcy
--set engine=wasm|engine
--set engine=native --set native.failurePolicy=Maybe|failurePolicy
--set engine=native --set policy.percent=40|percent
--set backgroundAudit.interval=5min|interval
--set backgroundAudit.interval=-1|interval
--set metrics.serviceMonitor.enabled=yes|enabled
--set metrics.dashboard.namespace=Monitoring|namespace
--set engine=native --set metrics.prometheusRule.enabled=true|engine=native
BAD

if [[ "${failed}" != 0 ]]; then
  echo "helm-lint: FAILED" >&2
  exit 1
fi
echo "helm-lint: chart lints and renders for all $(combinations | wc -l) webhook and $(native_combinations | wc -l) native combinations"
