#!/usr/bin/env bash
# A one-node Kubernetes on this machine for end-to-end tests: the control
# plane of controlplane.sh plus kube-scheduler, a kubelet, containerd and runc
# (Debian's packages), all inside a network namespace of their own.
#
#   cluster/node.sh start [DIR]        start (DIR defaults to a new mktemp dir);
#                                      prints DIR on the last line of stdout
#   cluster/node.sh env DIR            print `export VAR=...` lines (eval-able)
#   cluster/node.sh import DIR TAR...  import OCI image archives into containerd
#   cluster/node.sh status DIR         exit 0 when every process runs and the
#                                      node is Ready
#   cluster/node.sh stop DIR           stop everything, clean up, delete DIR
#                                      (KEEP_DIR=1 keeps it, e.g. for logs)
#
# Environment on start:
#   NODE_PAUSE_IMAGE=TAR   OCI archive of the sandbox ("pause") image, whose
#                          reference is NODE_PAUSE_REF (required; containerd
#                          never pulls it)
#   NODE_OWNER_PID=PID     a watchdog runs `stop DIR` as soon as PID has exited
#
# Network. The kubelet refuses a loopback node IP, and nothing here may use
# the machine's own interfaces, so everything runs in a network namespace made
# for this node (`ip netns add`): one end of a veth pair whose other end is in
# the same namespace carries the node IP
# (10.241.0.2) and the default route, so a packet for anywhere else is
# dropped; pods get their own namespaces on a bridge (CNI bridge plugin,
# 10.244.0.0/24); the apiserver listens on 0.0.0.0 inside the namespace. With
# no kube-proxy, one iptables DNAT rule routes the `kubernetes` Service
# (10.0.0.1:443) to the apiserver, which is all a pod's in-cluster client
# needs; the apiserver reaches Services through their endpoints
# (--enable-aggregator-routing). Clients enter the namespace (the test binary
# runs itself again under `nsenter --net=/run/netns/NAME`).
#
# Processes are found by pid file, containerd's shims by their command line,
# containers through the kubelet's cgroup root (/gomemlimit-<suffix> in every
# hierarchy). `stop` also removes what the kubelet and containerd write
# outside DIR: the shims' sockets in /run/containerd/s, the symlinks in
# /var/log/containers, CNI result files in /var/lib/cni, mounts, the cgroups,
# the network namespace, and, when it is the last node running, the kernel
# settings the kubelet changes (vm.overcommit_memory, kernel.panic, ...), which
# are restored, and the shared directories that did not exist before.
#
# Layout of DIR: controlplane.sh's (kubeconfig, env, pki/, logs/, audit/,
# etcd/, pids/) plus node/ (containerd/, kubelet/, cni/, pod-logs/). While
# nodes run, /run/gomemlimit-nodes holds one entry per node and the machine's
# state before the first of them (what the last one's stop restores).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
READY_TIMEOUT="${NODE_READY_TIMEOUT:-120}"

NODE_NAME=gomemlimit-node
NODE_IP=10.241.0.2
POD_SUBNET=10.244.0.0/24
SERVICE_IP=10.0.0.1
NODE_PAUSE_REF="${NODE_PAUSE_REF:-localhost/gomemlimit-e2e/pause:1}"
# Written by the kubelet at start (protectKernelDefaults: false).
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
# Shared directories the kubelet, containerd and CNI write into.
SHARED_DIRS=(/run/containerd /run/containerd/s /var/log/containers /var/lib/cni
  /var/lib/cni/results /run/netns)

name=node
# shellcheck source=cluster/lib.sh
. "${here}/lib.sh"

# What a node's names derive from: the suffix of DIR (mktemp's random part).
derive_names() {
  local id
  id="$(basename "${dir}")"
  id="${id##*.}"
  id="$(printf '%s' "${id}" | tr -cd 'A-Za-z0-9' | cut -c1-12)"
  [[ -n "${id}" ]] || id="$(printf '%s' "${dir}" | sha256sum | cut -c1-12)"
  NETNS="gmi-${id}"
  CGROUP_ROOT="/gomemlimit-${id}"
  CNI_NETWORK="gomemlimit-${id}"
  SOCK="${dir}/node/containerd/containerd.sock"
  # For launch, which cannot run a shell function.
  NSENTER=(nsenter --net="/run/netns/${NETNS}" --)
}

in_netns() { nsenter --net="/run/netns/${NETNS}" -- "$@"; }

ctr_() { ctr --address "${SOCK}" --namespace k8s.io "$@"; }

require() {
  local c
  [[ "$(id -u)" == 0 ]] || die "must run as root (kubelet, containerd, network namespaces)"
  for c in containerd containerd-shim-runc-v2 runc ctr ip iptables nsenter python3 openssl; do
    command -v "${c}" >/dev/null 2>&1 || die "${c} not found (Debian: apt-get install containerd runc iproute2 iptables util-linux)"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
    || die "CNI plugins not found in /usr/lib/cni (Debian: apt-get install containernetworking-plugins)"
  [[ -d /sys/fs/cgroup/memory ]] || die "needs cgroup v1 hierarchies under /sys/fs/cgroup"
  [[ -n "${NODE_PAUSE_IMAGE:-}" && -f "${NODE_PAUSE_IMAGE}" ]] \
    || die "NODE_PAUSE_IMAGE must name the pause image archive (hack/build-image.sh go workloads/pause ${NODE_PAUSE_REF})"
  for c in kubelet kube-scheduler kubectl; do
    [[ -x "${bin}/${c}" ]] || die "missing ${bin}/${c}"
  done
}

# Every cgroup v1 hierarchy (and the unified one of a hybrid host).
hierarchies() {
  local h
  for h in /sys/fs/cgroup/*/; do
    if [[ -f "${h}cgroup.procs" ]]; then echo "${h%/}"; fi
  done
}

# The machine's state before any node ran: the kernel settings the kubelet
# changes and which shared directories existed. Several nodes may run at once
# (each test binary, soak or lab has its own), so the first of them records it
# in MACHINE_DIR and the last one to stop restores it; each running node has an
# entry there named after its network namespace. /run itself is the lock (flock
# on the directory: no lock file is left behind).
MACHINE_DIR=/run/gomemlimit-nodes

with_machine_lock() { # command...
  local rc=0
  exec 8< /run
  flock 8
  "$@" || rc=$?
  exec 8<&-
  return "${rc}"
}

# Entries of the other nodes that run or are starting: each names its
# directory, which its stop deletes (KEEP_DIR=1 keeps it, but stop has removed
# the entry by then).
other_nodes() {
  local e
  for e in "${MACHINE_DIR}"/gmi-*; do
    [[ -f "${e}" && "${e##*/}" != "${NETNS}" ]] || continue
    if [[ -d "$(cat "${e}")" ]]; then echo "${e##*/}"; fi
  done
}

register_node() {
  local s d created=()
  [[ -d "${MACHINE_DIR}" ]] || created+=("${MACHINE_DIR}")
  mkdir -p "${MACHINE_DIR}"
  if [[ -z "$(other_nodes)" ]]; then
    for d in "${SHARED_DIRS[@]}"; do
      [[ -e "${d}" ]] || created+=("${d}")
    done
    {
      for s in "${SYSCTLS[@]}"; do
        echo "sysctl ${s} $(cat "/proc/sys/${s}")"
      done
      for d in "${created[@]}"; do
        echo "created ${d}"
      done
    } > "${MACHINE_DIR}/machine.state"
  fi
  echo "${dir}" > "${MACHINE_DIR}/${NETNS}"
}

# The last node restores the kernel settings and removes the shared directories
# the first one found missing (when empty).
release_node() {
  local state s v d
  rm -f "${MACHINE_DIR}/${NETNS}"
  [[ -z "$(other_nodes)" && -f "${MACHINE_DIR}/machine.state" ]] || return 0
  state="$(cat "${MACHINE_DIR}/machine.state")"
  while read -r _ s v; do
    [[ "$(cat "/proc/sys/${s}")" == "${v}" ]] || echo "${v}" > "/proc/sys/${s}" \
      || log "could not restore ${s}=${v}"
  done < <(grep '^sysctl ' <<< "${state}")
  rm -f "${MACHINE_DIR}/machine.state"
  while read -r _ d; do
    # ip netns makes /run/netns a mount point of its own.
    if [[ "${d}" == /run/netns && -d "${d}" && -z "$(ls -A "${d}")" ]] && mountpoint -q "${d}"; then
      umount "${d}" || true
    fi
    rmdir "${d}" 2>/dev/null || true
  done < <(grep '^created ' <<< "${state}" | sort -r)
}

make_netns() {
  ip netns add "${NETNS}"
  ip -n "${NETNS}" link set lo up
  # A veth pair with both ends inside (this kernel has no dummy device).
  ip -n "${NETNS}" link add node0 type veth peer name node1
  ip -n "${NETNS}" addr add "${NODE_IP}/24" dev node0
  ip -n "${NETNS}" link set node1 up
  ip -n "${NETNS}" link set node0 up
  ip -n "${NETNS}" route add default dev node0
}

make_cgroup_root() {
  local h
  while read -r h; do
    [[ "${h}" == */unified ]] && continue
    mkdir -p "${h}${CGROUP_ROOT}"
    if [[ -f "${h}/cpuset.cpus" ]]; then
      cat "${h}/cpuset.cpus" > "${h}${CGROUP_ROOT}/cpuset.cpus"
      cat "${h}/cpuset.mems" > "${h}${CGROUP_ROOT}/cpuset.mems"
    fi
  done < <(hierarchies)
}

write_containerd_config() {
  local c="${dir}/node/containerd"
  mkdir -p "${c}/root" "${c}/state" "${c}/runc" "${c}/runc-v1"
  cat > "${c}/config.toml" <<EOF
version = 2
root = "${c}/root"
state = "${c}/state"
# The opt plugin would write /opt/containerd.
disabled_plugins = ["io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "${SOCK}"

[ttrpc]
  address = "${SOCK}.ttrpc"

# Unused (the CRI runs runc through the v2 shim), but the tasks service needs it;
# its default root is /run/containerd/runc.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "${c}/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${NODE_PAUSE_REF}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF" (runc cannot lower
  # oom_score_adj below its own).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${c}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${dir}/node/cni/net.d"
    max_conf_num = 1
EOF
}

write_cni_config() {
  mkdir -p "${dir}/node/cni/net.d" "${dir}/node/cni/ipam"
  cat > "${dir}/node/cni/net.d/10-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "${CNI_NETWORK}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${dir}/node/cni/ipam",
        "ranges": [[{"subnet": "${POD_SUBNET}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
  local k="${dir}/node/kubelet"
  mkdir -p "${k}/root" "${dir}/node/pod-logs"
  : > "${k}/resolv.conf"
  cat > "${k}/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${SOCK}
podLogsDir: ${dir}/node/pod-logs
# cgroup v1 host, cgroupfs driver (no systemd); every pod cgroup below a root
# of this node's own, so stop can find and remove them.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ${CGROUP_ROOT}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: ${dir}/pki/kubelet-serving.crt
tlsPrivateKeyFile: ${dir}/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${dir}/pki/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: ${k}/resolv.conf
staticPodPath: ""
# Images are imported, never pulled: keep them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
maxPods: 110
shutdownGracePeriod: 0s
EOF
}

cmd_start() {
  dir="$(cluster_dir "${1:-}" gomemlimit-node)"
  [[ -e "${dir}/node" ]] && die "${dir} already holds a node (stop it first)"
  bin="$(bindir)"
  require
  derive_names

  local t0; t0="$(now_ms)"
  mkdir -p "${dir}/node"
  with_machine_lock register_node

  start_ok=0
  trap 'if [[ "${start_ok}" != 1 ]]; then log "start failed; logs in ${dir}/logs"; KEEP_DIR=1 STOP_REASON="its start failed" cmd_stop "${dir}" >/dev/null 2>&1 || true; fi' EXIT

  make_netns

  # The control plane, inside the namespace, no watchdog of its own.
  CONTROLPLANE_BIN="${bin}" CONTROLPLANE_BIND_ADDRESS=0.0.0.0 \
    CONTROLPLANE_ADVERTISE_ADDRESS="${NODE_IP}" CONTROLPLANE_OWNER_PID="" \
    in_netns "${here}/controlplane.sh" start "${dir}" > /dev/null
  # shellcheck disable=SC1091
  . "${dir}/env"
  local t_cp; t_cp="$(now_ms)"

  # The kubernetes Service, routed to the apiserver (see the header).
  local rule=(-d "${SERVICE_IP}/32" -p tcp --dport 443 -j DNAT
    --to-destination "${NODE_IP}:${APISERVER_PORT}")
  in_netns iptables -t nat -A OUTPUT "${rule[@]}"
  in_netns iptables -t nat -A PREROUTING "${rule[@]}"

  make_cgroup_root
  write_containerd_config
  write_cni_config
  launch containerd "${NSENTER[@]}" containerd --config "${dir}/node/containerd/config.toml"
  wait_for containerd "${READY_TIMEOUT}" ctr_ version \
    || { tail -20 "${dir}/logs/containerd.log" >&2; false; }
  ctr_ images import "${NODE_PAUSE_IMAGE}" > /dev/null
  # Captured, not piped into grep -q: under pipefail an early exit of grep
  # fails the pipeline whenever ctr is still writing.
  [[ "$(ctr_ images ls -q "name==${NODE_PAUSE_REF}")" == "${NODE_PAUSE_REF}" ]] \
    || die "${NODE_PAUSE_IMAGE} did not import as ${NODE_PAUSE_REF}"
  local t_ctrd; t_ctrd="$(now_ms)"

  sign_leaf kubelet "/O=system:nodes/CN=system:node:${NODE_NAME}" "${client_ext}"
  sign_leaf kubelet-serving "/CN=${NODE_NAME}" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:${NODE_IP},DNS:${NODE_NAME}"
  sign_leaf scheduler "/CN=system:kube-scheduler" "${client_ext}"
  write_kubeconfig "${dir}/kubelet.kubeconfig" "${APISERVER_URL}" "system:node:${NODE_NAME}" \
    "${dir}/pki/kubelet.crt" "${dir}/pki/kubelet.key"
  write_kubeconfig "${dir}/scheduler.kubeconfig" "${APISERVER_URL}" system:kube-scheduler \
    "${dir}/pki/scheduler.crt" "${dir}/pki/scheduler.key"
  write_kubelet_config

  # The namespace is this node's own: the components' default ports are free.
  local sched_port=10259
  launch kube-scheduler "${NSENTER[@]}" "${bin}/kube-scheduler" \
    --kubeconfig="${dir}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${dir}/scheduler.kubeconfig" \
    --authorization-kubeconfig="${dir}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${sched_port}" \
    --leader-elect=false

  launch kubelet "${NSENTER[@]}" "${bin}/kubelet" \
    --config="${dir}/node/kubelet/config.yaml" \
    --kubeconfig="${dir}/kubelet.kubeconfig" \
    --root-dir="${dir}/node/kubelet/root" \
    --cert-dir="${dir}/node/kubelet/pki" \
    --hostname-override="${NODE_NAME}" \
    --node-ip="${NODE_IP}" \
    --v=1

  wait_for kube-scheduler "${READY_TIMEOUT}" \
    in_netns curl -fsSk --max-time 2 "https://127.0.0.1:${sched_port}/healthz" \
    || { tail -20 "${dir}/logs/kube-scheduler.log" >&2; false; }
  # Ready, and without the not-ready taint the node lifecycle controller lifts.
  node_ready() {
    local out
    out="$(in_netns "${bin}/kubectl" --kubeconfig "${dir}/kubeconfig" get node "${NODE_NAME}" \
      -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints}')"
    [[ "${out}" == "True " ]]
  }
  wait_for kubelet "${READY_TIMEOUT}" node_ready \
    || { tail -30 "${dir}/logs/kubelet.log" >&2; false; }
  local t_node; t_node="$(now_ms)"
  start_ok=1
  trap - EXIT

  cat >> "${dir}/env" <<EOF
export NODE_NAME=${NODE_NAME}
export NODE_IP=${NODE_IP}
export NODE_NETNS=${NETNS}
export NODE_NETNS_PATH=/run/netns/${NETNS}
export NODE_CGROUP_ROOT=${CGROUP_ROOT}
export CONTAINERD_ADDRESS=${SOCK}
EOF
  if [[ -n "${NODE_OWNER_PID:-}" ]]; then
    start_watchdog "${NODE_OWNER_PID}" "${here}/node.sh" stop "${dir}/"
  fi
  log "control plane ready in namespace ${NETNS} after $((t_cp - t0)) ms"
  log "containerd ready, pause image imported after $((t_ctrd - t0)) ms"
  log "node ${NODE_NAME} (${NODE_IP}) Ready after $((t_node - t0)) ms"
  log "enter with: nsenter --net=/run/netns/${NETNS}; stop with: $0 stop ${dir}"
  echo "${dir}"
}

cmd_import() {
  dir="$(cd "${1:?usage: $0 import DIR TAR...}" && pwd)"; shift
  derive_names
  local tar
  for tar in "$@"; do
    ctr_ images import "${tar}" > /dev/null || die "failed to import ${tar}"
  done
}

# Processes in the kubelet's cgroups: the containers.
container_pids() {
  local h
  h="/sys/fs/cgroup/memory${CGROUP_ROOT}"
  [[ -d "${h}" ]] || return 0
  find "${h}" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

kill_containers() {
  local i pids
  for ((i = 0; i < 50; i++)); do
    pids="$(container_pids)"
    [[ -n "${pids}" ]] || return 0
    # shellcheck disable=SC2086
    kill -KILL ${pids} 2>/dev/null || true
    sleep 0.1
  done
  log "processes left in ${CGROUP_ROOT}: $(container_pids | tr '\n' ' ')"
}

# The pod sandboxes containerd has known, running or not: each has a shim (the
# pod's containers share it) and CNI results.
sandbox_ids() {
  local c="${dir}/node/containerd" d
  for d in "${c}"/{root,state}/io.containerd.grpc.v1.cri/sandboxes/*/; do
    [[ -d "${d}" ]] && basename "${d}"
  done | sort -u
}

# containerd 1.6 puts each shim's socket at /run/containerd/s/<sha256 of
# "<containerd address>/<namespace>/<id>">, whatever its state directory.
kill_shims() {
  local pid id
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address ${SOCK}( |$)" || true); do
    kill -KILL "${pid}" 2>/dev/null || true
  done
  for id in $(sandbox_ids); do
    rm -f "/run/containerd/s/$(printf '%s' "${SOCK}/k8s.io/${id}" | sha256sum | cut -d' ' -f1)"
  done
}

# Whatever still runs with DIR/ on its command line (a client of this node, such
# as the test process that ran inside its namespace, when the node is stopped
# by its watchdog), except this very process (the watchdog execs stop).
kill_clients() {
  local pids pid
  pids="$(pgrep -f -- "${dir}/" || true)"
  for pid in ${pids}; do
    [[ "${pid}" == "$$" ]] && continue
    log "stopping client pid ${pid}: $(tr '\0' ' ' < "/proc/${pid}/cmdline" 2>/dev/null | cut -c1-120)"
    kill -KILL "${pid}" 2>/dev/null || true
  done
}

unmount_all() {
  local m i
  for ((i = 0; i < 5; i++)); do
    # Deepest first.
    mapfile -t mounts < <(awk -v d="${dir}/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo \
      | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    ((${#mounts[@]} == 0)) && return 0
    for m in "${mounts[@]}"; do
      umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || true
    done
  done
  log "mounts left under ${dir}"
}

remove_cgroups() {
  local h i
  while read -r h; do
    [[ -d "${h}${CGROUP_ROOT}" ]] || continue
    for ((i = 0; i < 20; i++)); do
      find "${h}${CGROUP_ROOT}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [[ -d "${h}${CGROUP_ROOT}" ]] || break
      sleep 0.1
    done
    if [[ -d "${h}${CGROUP_ROOT}" ]]; then log "cgroup ${h}${CGROUP_ROOT} is busy"; fi
  done < <(hierarchies)
}

# The kubelet's symlinks in /var/log/containers that point into DIR and CNI's
# result cache for this node's network.
sweep_shared() {
  local f id
  for f in /var/log/containers/*; do
    [[ -L "${f}" ]] || continue
    if [[ "$(readlink "${f}")" == "${dir}/"* ]]; then rm -f "${f}"; fi
  done
  rm -f /var/lib/cni/results/"${CNI_NETWORK}"-* 2>/dev/null || true
  for id in $(sandbox_ids); do
    rm -f /var/lib/cni/results/*-"${id}"-* 2>/dev/null || true
  done
}

cmd_stop() {
  dir="${1:?usage: $0 stop DIR}"
  [[ -d "${dir}" ]] || { log "${dir}: no such directory"; return 0; }
  dir="$(cd "${dir}" && pwd)"
  log_stop_reason
  derive_names
  local t0; t0="$(now_ms)"
  stop_watchdog
  stop_all kubelet kube-scheduler
  kill_containers
  kill_shims
  stop_one containerd
  unmount_all
  remove_cgroups
  sweep_shared
  # Removes DIR unless KEEP_DIR=1.
  if [[ -e "${dir}/pids" ]]; then
    STOP_REASON="the node stops" "${here}/controlplane.sh" stop "${dir}" 2>/dev/null || true
  fi
  kill_clients
  if [[ -e "/run/netns/${NETNS}" ]]; then
    ip netns delete "${NETNS}" || log "could not delete netns ${NETNS}"
  fi
  with_machine_lock release_node
  if [[ -d "${dir}" && "${KEEP_DIR:-0}" == 1 ]]; then
    log "stopped in $(($(now_ms) - t0)) ms; kept ${dir}"
  else
    rm -rf "${dir}"
    log "stopped in $(($(now_ms) - t0)) ms; removed ${dir}"
  fi
}

cmd_status() {
  dir="$(cd "${1:?usage: $0 status DIR}" && pwd)"
  derive_names
  local rc=0
  daemons_status etcd kube-apiserver kube-controller-manager containerd kube-scheduler kubelet || rc=1
  # shellcheck disable=SC1091
  bin="$(. "${dir}/env" && echo "${CONTROLPLANE_BIN}")"
  local ready
  ready="$(in_netns "${bin}/kubectl" --kubeconfig "${dir}/kubeconfig" get node "${NODE_NAME}" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  if [[ "${ready}" == True ]]; then
    echo "node: Ready"
  else
    echo "node: not Ready"; rc=1
  fi
  return "${rc}"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  env) shift; cat "${1:?usage: $0 env DIR}/env" ;;
  import) shift; cmd_import "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
