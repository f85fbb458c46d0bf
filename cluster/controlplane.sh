#!/usr/bin/env bash
# A real, node-less Kubernetes control plane on loopback for end-to-end tests:
# etcd + kube-apiserver + kube-controller-manager, started the way
# controller-runtime's envtest starts etcd and the apiserver (free loopback
# ports, generated PKI in a temporary directory), plus the controller-manager
# so that Deployments get ReplicaSets and Pods and namespaces get their
# `default` ServiceAccount. There are no nodes, no scheduler, no kubelet and
# no kube-proxy: Pods stay Pending, which is fine for tests that inspect the
# stored objects.
#
#   cluster/controlplane.sh start [DIR]   start (DIR defaults to a new mktemp dir);
#                                     prints DIR on the last line of stdout
#   cluster/controlplane.sh env DIR       print `export VAR=...` lines (eval-able)
#   cluster/controlplane.sh status DIR    exit 0 when all three processes run and
#                                     the apiserver is ready
#   cluster/controlplane.sh wait-sa DIR NAMESPACE [TIMEOUT_S]
#                                     wait for NAMESPACE/default ServiceAccount
#   cluster/controlplane.sh stop DIR      stop the processes and delete DIR
#                                     (KEEP_DIR=1 keeps it, e.g. for logs)
#
# CONTROLPLANE_OWNER_PID=PID on start: a watchdog stops the control plane
# (like `stop DIR`) as soon as process PID has exited, so a test binary that
# dies or never cleans up does not leak etcd/apiserver processes.
#
# CONTROLPLANE_BIND_ADDRESS (default 127.0.0.1) and
# CONTROLPLANE_ADVERTISE_ADDRESS (default 127.0.0.1, added to the apiserver
# certificate) are where the apiserver listens and what it advertises: node.sh
# runs the control plane inside a network namespace of its own, listening on
# 0.0.0.0 there and advertising the node's IP, so that pods can reach it.
#
# Binaries come from cluster/build.sh (run on demand; a no-op when up
# to date) unless CONTROLPLANE_BIN names a directory that holds them.
#
# Layout of DIR: kubeconfig (admin, O=system:masters), env, pki/, logs/
# (etcd.log, kube-apiserver.log, kube-controller-manager.log), audit/
# (policy.yaml, audit.log), etcd/ (data), pids/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
READY_TIMEOUT="${CONTROLPLANE_READY_TIMEOUT:-120}"
BIND_ADDRESS="${CONTROLPLANE_BIND_ADDRESS:-127.0.0.1}"
ADVERTISE_ADDRESS="${CONTROLPLANE_ADVERTISE_ADDRESS:-127.0.0.1}"

name=controlplane
# shellcheck source=cluster/lib.sh
. "${here}/lib.sh"

gen_pki() {
  local pki="${dir}/pki" sans
  mkdir -p "${pki}"
  ca() { # name common-name
    (
      cd "${pki}"
      umask 077
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -sha256 \
        -keyout "$1.key" -out "$1.crt" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
      chmod 644 "$1.crt"
    )
  }
  # Cluster CA: apiserver serving cert, client certs, webhook certs in tests.
  ca ca gomemlimit-e2e-ca
  sans="IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  if [[ "${ADVERTISE_ADDRESS}" != 127.0.0.1 ]]; then
    sans+=",IP:${ADVERTISE_ADDRESS}"
  fi
  sign_leaf apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${sans}"
  sign_leaf admin "/O=system:masters/CN=e2e-admin" "${client_ext}"
  # The bootstrap RBAC policy binds this user name to the
  # system:kube-controller-manager ClusterRole (as with kubeadm).
  sign_leaf kcm "/CN=system:kube-controller-manager" "${client_ext}"
  # The apiserver's client certificate towards kubelets (logs, exec).
  sign_leaf kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "${client_ext}"
  # Front-proxy (request-header) CA and the apiserver's proxy client cert,
  # as kubeadm sets up; without them the controller-manager's delegated
  # authentication logs errors about a missing requestheader CA bundle.
  ca front-proxy-ca gomemlimit-e2e-front-proxy-ca
  sign_leaf front-proxy-client "/CN=front-proxy-client" "${client_ext}" front-proxy-ca
  # Service-account token signing key pair.
  (
    cd "${pki}"
    umask 077
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 sa.pub
  )
}

write_audit_policy() {
  cat > "$1" <<'EOF'
# Audit policy for the e2e control plane.
# Pods are logged at Request level: webhook audit annotations
# (mutation.webhook.admission.k8s.io/round_N_index_M and the webhook's own
# auditAnnotations, "<webhook name>/<key>") need Metadata, and the JSON patch a
# mutating webhook applied (patch.webhook.admission.k8s.io/round_N_index_M)
# is only recorded at Request level or above.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    resources:
      - group: "coordination.k8s.io"
        resources: ["leases"]
      - group: ""
        resources: ["events"]
      - group: "events.k8s.io"
        resources: ["events"]
  - level: Request
    resources:
      - group: ""
        resources: ["pods", "pods/ephemeralcontainers"]
  - level: Metadata
EOF
}

admin_curl() { # path
  curl -fsS --max-time 5 --cacert "${dir}/pki/ca.crt" \
    --cert "${dir}/pki/admin.crt" --key "${dir}/pki/admin.key" \
    "${APISERVER_URL}$1"
}

cmd_start() {
  dir="$(cluster_dir "${1:-}" gomemlimit-e2e)"
  [[ -e "${dir}/pids" ]] && die "${dir} already holds a control plane (stop it first)"

  local bin; bin="$(bindir)"
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [[ -x "${bin}/${b}" ]] || die "missing ${bin}/${b}"
  done

  local t0; t0="$(now_ms)"
  mkdir -p "${dir}/pids" "${dir}/logs" "${dir}/audit" "${dir}/kcm"
  mkdir -m 700 "${dir}/etcd"
  gen_pki
  write_audit_policy "${dir}/audit/policy.yaml"

  local etcd_port etcd_peer_port api_port kcm_port
  read -r etcd_port etcd_peer_port api_port kcm_port <<< "$(free_ports 4)"
  ETCD_URL="http://127.0.0.1:${etcd_port}"
  APISERVER_URL="https://127.0.0.1:${api_port}"

  write_kubeconfig "${dir}/kubeconfig" "${APISERVER_URL}" e2e-admin \
    "${dir}/pki/admin.crt" "${dir}/pki/admin.key"
  write_kubeconfig "${dir}/kcm.kubeconfig" "${APISERVER_URL}" system:kube-controller-manager \
    "${dir}/pki/kcm.crt" "${dir}/pki/kcm.key"

  cat > "${dir}/env" <<EOF
export CONTROLPLANE_DIR=${dir}
export CONTROLPLANE_BIN=${bin}
export KUBECONFIG=${dir}/kubeconfig
export APISERVER_URL=${APISERVER_URL}
export APISERVER_PORT=${api_port}
export APISERVER_CA=${dir}/pki/ca.crt
export ETCD_URL=${ETCD_URL}
export AUDIT_LOG=${dir}/audit/audit.log
export KUBECTL=${bin}/kubectl
EOF

  # If anything below fails, take down what was started (the directory and
  # its logs are kept for inspection).
  start_ok=0
  trap 'if [[ "${start_ok}" != 1 ]]; then log "start failed; logs in ${dir}/logs"; KEEP_DIR=1 STOP_REASON="its start failed" cmd_stop "${dir}" >/dev/null 2>&1 || true; fi' EXIT

  launch etcd "${bin}/etcd" \
    --name=e2e \
    --data-dir="${dir}/etcd" \
    --listen-client-urls="${ETCD_URL}" \
    --advertise-client-urls="${ETCD_URL}" \
    --listen-peer-urls="http://127.0.0.1:${etcd_peer_port}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${etcd_peer_port}" \
    --initial-cluster="e2e=http://127.0.0.1:${etcd_peer_port}" \
    --unsafe-no-fsync=true \
    --log-level=warn

  wait_for etcd "${READY_TIMEOUT}" curl -fsS --max-time 2 "${ETCD_URL}/health" \
    || { tail -20 "${dir}/logs/etcd.log" >&2; false; }
  local t_etcd; t_etcd="$(now_ms)"

  launch kube-apiserver "${bin}/kube-apiserver" \
    --etcd-servers="${ETCD_URL}" \
    --bind-address="${BIND_ADDRESS}" \
    --advertise-address="${ADVERTISE_ADDRESS}" \
    --endpoint-reconciler-type=none \
    --secure-port="${api_port}" \
    --cert-dir="${dir}/pki" \
    --tls-cert-file="${dir}/pki/apiserver.crt" \
    --tls-private-key-file="${dir}/pki/apiserver.key" \
    --client-ca-file="${dir}/pki/ca.crt" \
    --requestheader-client-ca-file="${dir}/pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="${dir}/pki/front-proxy-client.crt" \
    --proxy-client-key-file="${dir}/pki/front-proxy-client.key" \
    --service-account-key-file="${dir}/pki/sa.pub" \
    --service-account-signing-key-file="${dir}/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="${dir}/pki/kubelet-client.crt" \
    --kubelet-client-key="${dir}/pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true \
    --enable-aggregator-routing=true \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction \
    --audit-policy-file="${dir}/audit/policy.yaml" \
    --audit-log-path="${dir}/audit/audit.log" \
    --audit-log-format=json \
    --audit-log-mode=blocking \
    --audit-log-maxbackup=1 \
    --audit-log-maxsize=100

  wait_for kube-apiserver "${READY_TIMEOUT}" admin_curl /readyz \
    || { tail -30 "${dir}/logs/kube-apiserver.log" >&2; false; }
  local t_api; t_api="$(now_ms)"

  launch kube-controller-manager "${bin}/kube-controller-manager" \
    --kubeconfig="${dir}/kcm.kubeconfig" \
    --authentication-kubeconfig="${dir}/kcm.kubeconfig" \
    --authorization-kubeconfig="${dir}/kcm.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${kcm_port}" \
    --cert-dir="${dir}/kcm" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --controllers='*,-node-ipam-controller,-persistentvolume-attach-detach-controller,-ttl-controller' \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-private-key-file="${dir}/pki/sa.key" \
    --root-ca-file="${dir}/pki/ca.crt" \
    --cluster-signing-cert-file="${dir}/pki/ca.crt" \
    --cluster-signing-key-file="${dir}/pki/ca.key"

  wait_for kube-controller-manager "${READY_TIMEOUT}" \
    curl -fsSk --max-time 2 "https://127.0.0.1:${kcm_port}/healthz" \
    || { tail -30 "${dir}/logs/kube-controller-manager.log" >&2; false; }
  # The serviceaccount controller is running once default/default exists.
  wait_for kube-controller-manager "${READY_TIMEOUT}" \
    admin_curl /api/v1/namespaces/default/serviceaccounts/default \
    || { tail -30 "${dir}/logs/kube-controller-manager.log" >&2; false; }
  local t_kcm; t_kcm="$(now_ms)"
  start_ok=1
  trap - EXIT

  echo "export KUBE_CONTROLLER_MANAGER_URL=https://127.0.0.1:${kcm_port}" >> "${dir}/env"
  if [[ -n "${CONTROLPLANE_OWNER_PID:-}" ]]; then
    # Watchdog: stop the control plane (and delete DIR) once the owner
    # process is gone, e.g. a test binary that keeps the control plane in a
    # static and so never runs a destructor, or that was killed.
    start_watchdog "${CONTROLPLANE_OWNER_PID}" "${here}/controlplane.sh" stop "${dir}/"
  fi
  log "etcd ${ETCD_URL} ready in $((t_etcd - t0)) ms (incl. PKI)"
  log "kube-apiserver ${APISERVER_URL} ready (/readyz) after $((t_api - t0)) ms"
  log "kube-controller-manager serving, default/default ServiceAccount present after $((t_kcm - t0)) ms"
  log "KUBECONFIG=${dir}/kubeconfig; stop with: $0 stop ${dir}"
  echo "${dir}"
}

cmd_stop() {
  dir="${1:?usage: $0 stop DIR}"
  [[ -d "${dir}" ]] || { log "${dir}: no such directory"; return 0; }
  dir="$(cd "${dir}" && pwd)"
  log_stop_reason
  local n
  stop_watchdog
  # Graceful shutdown takes 2-3 s per process: stop the two etcd clients
  # together, then etcd.
  stop_all kube-controller-manager kube-apiserver
  stop_one etcd
  if [[ "${KEEP_DIR:-0}" == 1 ]]; then
    rmdir "${dir}/pids" 2>/dev/null || true
    log "stopped; kept ${dir}"
  else
    rm -rf "${dir}"
    log "stopped; removed ${dir}"
  fi
}

cmd_env() {
  dir="${1:?usage: $0 env DIR}"
  cat "${dir}/env"
}

cmd_status() {
  dir="$(cd "${1:?usage: $0 status DIR}" && pwd)"
  local rc=0
  daemons_status etcd kube-apiserver kube-controller-manager || rc=1
  # shellcheck disable=SC1091
  APISERVER_URL="$(. "${dir}/env" && echo "${APISERVER_URL}")"
  if admin_curl /readyz >/dev/null 2>&1; then echo "apiserver: ready"; else echo "apiserver: not ready"; rc=1; fi
  return "${rc}"
}

cmd_wait_sa() {
  dir="$(cd "${1:?usage: $0 wait-sa DIR NAMESPACE [TIMEOUT_S]}" && pwd)"
  local ns="${2:?namespace}" timeout="${3:-60}"
  # shellcheck disable=SC1091
  APISERVER_URL="$(. "${dir}/env" && echo "${APISERVER_URL}")"
  wait_for - "${timeout}" \
    admin_curl "/api/v1/namespaces/${ns}/serviceaccounts/default" \
    || die "no ServiceAccount ${ns}/default after ${timeout}s"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  env) shift; cmd_env "$@" ;;
  status) shift; cmd_status "$@" ;;
  wait-sa) shift; cmd_wait_sa "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
