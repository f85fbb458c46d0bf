#!/usr/bin/env bash
# Smoke test of the e2e control plane (no Rust involved):
#   1. build the binaries (no-op when up to date) and start the control plane;
#   2. kubectl version: the server must report v1.37.x;
#   3. a Deployment with 2 replicas must get 2 Pods from the controller-manager;
#   4. a stand-in mutating webhook (python3, TLS) registered by URL on
#      127.0.0.1, and one registered by Service reference (selector-less
#      Service + EndpointSlice on this host's non-loopback IP, possible because
#      the apiserver runs with --enable-aggregator-routing=true) must both
#      mutate Pods, and their auditAnnotations and JSON patch must show up in
#      the audit log;
#   5. stop everything.
# Prints timings. Exit status 0 means every check passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cp="${here}/controlplane.sh"
ms() { date +%s%3N; }

t0=$(ms)
"${here}/build.sh"
CONTROLPLANE_BIN="$("${here}/build.sh" --print-bindir)"
export CONTROLPLANE_BIN
t_build=$(ms)

dir="$(mktemp -d "${TMPDIR:-/tmp}/gomemlimit-e2e-smoke.XXXXXX")"
hook_pid=""
cleanup() {
  local rc=$?
  if [[ -n "${hook_pid}" ]]; then
    kill "${hook_pid}" 2>/dev/null || true
    wait "${hook_pid}" 2>/dev/null || true
  fi
  if ((rc != 0)); then
    echo "smoke: FAILED (rc=${rc}); logs kept in ${dir}" >&2
    KEEP_DIR=1 "${cp}" stop "${dir}" || true
  else
    "${cp}" stop "${dir}"
  fi
}
trap cleanup EXIT

"${cp}" start "${dir}" >/dev/null
t_ready=$(ms)
eval "$("${cp}" env "${dir}")"
k() { "${KUBECTL}" "$@"; }

echo "--- kubectl version"
k version
server_version="$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
[[ "${server_version}" == v1.37.* ]] || { echo "server version ${server_version} is not v1.37.x" >&2; exit 1; }

echo "--- Deployment with 2 replicas"
t_dep0=$(ms)
k create namespace smoke-deploy
k -n smoke-deploy create deployment web --image=registry.k8s.io/pause:3.10 --replicas=2
for _ in $(seq 1 300); do
  n="$(k -n smoke-deploy get pods -l app=web --no-headers 2>/dev/null | wc -l)"
  ((n >= 2)) && break
  sleep 0.1
done
k -n smoke-deploy get deploy,rs,pods -o wide
[[ "${n}" == 2 ]] || { echo "expected 2 pods, got ${n}" >&2; exit 1; }
t_dep1=$(ms)

echo "--- stand-in mutating webhook (URL and Service reference)"
host_ip="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
host_ip="${host_ip:-$(hostname -I | awk '{print $1}')}"
hook_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
pki="${dir}/pki"
(
  cd "${pki}"
  openssl req -new -newkey rsa:2048 -nodes -keyout hook.key -out hook.csr -subj "/CN=hook" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:hook.smoke-system.svc\nextendedKeyUsage=serverAuth\n' "${host_ip}" > hook.ext
  openssl x509 -req -in hook.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile hook.ext -out hook.crt 2>/dev/null
  rm -f hook.csr hook.ext ca.srl
)
python3 - "${hook_port}" "${pki}/hook.crt" "${pki}/hook.key" > "${dir}/logs/hook.log" 2>&1 <<'EOF' &
import base64, http.server, json, ssl, sys
port, crt, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        who = self.path.split("?")[0].strip("/")  # the apiserver appends ?timeout=
        patch = [{"op": "add", "path": "/metadata/labels/smoke-mutated-by", "value": who}]
        body = json.dumps({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": True, "patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                         "auditAnnotations": {"mutated": who}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(crt, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", port, flush=True)
srv.serve_forever()
EOF
hook_pid=$!
ca_bundle="$(base64 -w0 "${pki}/ca.crt")"
k create namespace smoke-system
k label namespace smoke-deploy smoke=url --overwrite >/dev/null
k create namespace smoke-svc
k label namespace smoke-svc smoke=svc
k apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: hook, namespace: smoke-system}
spec:
  ports: [{name: https, port: 443, targetPort: ${hook_port}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hook-1
  namespace: smoke-system
  labels: {kubernetes.io/service-name: hook}
addressType: IPv4
ports: [{name: https, port: ${hook_port}, protocol: TCP}]
endpoints: [{addresses: ["${host_ip}"], conditions: {ready: true}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: smoke}
webhooks:
  - name: url.smoke.example
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    clientConfig: {url: "https://127.0.0.1:${hook_port}/url", caBundle: "${ca_bundle}"}
    rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
    namespaceSelector: {matchLabels: {smoke: url}}
  - name: svc.smoke.example
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    clientConfig:
      service: {name: hook, namespace: smoke-system, port: 443, path: /svc}
      caBundle: "${ca_bundle}"
    rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
    namespaceSelector: {matchLabels: {smoke: svc}}
EOF
# A new namespace's default ServiceAccount comes from the controller-manager;
# the ServiceAccount admission plugin rejects Pods until it exists.
"${cp}" wait-sa "${dir}" smoke-svc 30
# Webhook configurations reach the admission plugin through an informer:
# retry briefly until the first mutation is seen.
check_pod() { # namespace name expected-label
  local got=""
  for _ in $(seq 1 50); do
    k -n "$1" delete pod "$2" --ignore-not-found --wait=false >/dev/null
    k -n "$1" run "$2" --image=registry.k8s.io/pause:3.10 --restart=Never >/dev/null
    got="$(k -n "$1" get pod "$2" -o jsonpath='{.metadata.labels.smoke-mutated-by}')"
    [[ "${got}" == "$3" ]] && break
    sleep 0.2
  done
  echo "$1/$2 label smoke-mutated-by=${got}"
  [[ "${got}" == "$3" ]]
}
check_pod smoke-deploy p-url url
check_pod smoke-svc p-svc svc
# Audit events are written synchronously (--audit-log-mode=blocking).
python3 - "${AUDIT_LOG}" <<'EOF'
import json, sys
found = {}
for line in open(sys.argv[1]):
    ev = json.loads(line)
    o = ev.get("objectRef", {})
    if o.get("resource") == "pods" and ev["verb"] == "create" and o.get("name") in ("p-url", "p-svc"):
        ann = ev.get("annotations", {})
        key = o["name"]
        if any(k.endswith("smoke.example/mutated") for k in ann):
            found[key] = {k: v for k, v in ann.items() if "webhook" in k or "smoke" in k}
for k, v in sorted(found.items()):
    print("audit", k, json.dumps(v, indent=1))
assert set(found) == {"p-url", "p-svc"}, found
assert all(any(k.startswith("patch.webhook.admission.k8s.io/") for k in v) for v in found.values())
EOF
t_hook=$(ms)

echo "--- timings"
echo "build (no-op if cached):              $((t_build - t0)) ms"
echo "control plane start to ready:         $((t_ready - t_build)) ms"
echo "deployment -> 2 pods:                 $((t_dep1 - t_dep0)) ms"
echo "webhook checks:                       $((t_hook - t_dep1)) ms"
echo "server version:                       ${server_version}"
echo "smoke: OK"
