#!/usr/bin/env bash
# Build a real Kubernetes (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl) from the upstream Go modules pinned in
# cluster/kubernetes/go.mod, for gomemlimit-injector's end-to-end tests.
#
#   cluster/build.sh            # build (no-op when up to date)
#   cluster/build.sh --print-bindir
#
# Output: <repo>/.cache/controlplane/<k8s version>/bin/{etcd,kube-apiserver,
# kube-controller-manager,kube-scheduler,kubelet,kubectl} (.cache/ is
# git-ignored). A stamp file
# next to bin/ holds a hash of go.mod, go.sum, cmd/etcd/main.go, the build
# flags and the Go version; when it matches and all binaries exist the build
# is skipped. The Go build cache stays at its default location, so a rebuild
# after a stamp change is incremental.
#
# Environment:
#   CONTROLPLANE_CACHE_DIR  override <repo>/.cache/controlplane
#   CONTROLPLANE_NICE       niceness for go (default 19; other builds share CPUs)
#   CONTROLPLANE_FORCE=1    rebuild even if the stamp matches
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
mod="${here}/kubernetes"

# Never let an enclosing go.work or a -mod=vendor GOFLAGS change what is built.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export CGO_ENABLED=0 # upstream builds these binaries statically too

k8s_version="$(cd "${mod}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(cd "${mod}" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
# Upstream release tarballs stamp the build date; use the module's publication
# time so the binaries are reproducible.
k8s_time="$(cd "${mod}" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
k8s_time="${k8s_time:-1970-01-01T00:00:00Z}"

cache_root="${CONTROLPLANE_CACHE_DIR:-${repo}/.cache/controlplane}"
out="${cache_root}/${k8s_version}"
bindir="${out}/bin"
stamp="${out}/build.stamp"

if [[ "${1:-}" == "--print-bindir" ]]; then
  echo "${bindir}"
  exit 0
fi

major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
  ldflags+=" -X ${pkg}.gitMajor=${major}"
  ldflags+=" -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=${k8s_time}"
done
# etcd reports its version from a constant; record where this build came from.
ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-${etcd_version}"
# Same build tags as kubernetes' hack/lib/golang.sh.
tags="selinux,notest,grpcnotrace"

binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
packages=(
  ./cmd/etcd
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kubectl
)

want="$(
  {
    go version
    echo "${ldflags}" "${tags}" "${packages[*]}"
    cat "${mod}/go.mod" "${mod}/go.sum" "${mod}/cmd/etcd/main.go"
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  local b
  for b in "${binaries[@]}"; do
    [[ -x "${bindir}/${b}" ]] || return 1
  done
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]
}
if up_to_date && [[ "${CONTROLPLANE_FORCE:-0}" != 1 ]]; then
  echo "control plane ${k8s_version} (etcd ${etcd_version}) up to date in ${bindir} (0s)"
  exit 0
fi

# Concurrent callers (parallel test binaries, CI and a developer) serialise
# here; whoever waited finds the build done.
mkdir -p "${out}"
exec 9> "${out}/.lock"
flock 9
if up_to_date && [[ "${CONTROLPLANE_FORCE:-0}" != 1 ]]; then
  echo "control plane ${k8s_version} (etcd ${etcd_version}) up to date in ${bindir} (built by a concurrent run)"
  exit 0
fi

start=$(date +%s)
echo "building control plane ${k8s_version} (etcd ${etcd_version}) into ${bindir} ..."
tmp="$(mktemp -d "${out}/bin.tmp.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT

(
  cd "${mod}"
  # One invocation so the shared dependency graph is compiled once.
  nice -n "${CONTROLPLANE_NICE:-19}" go build -trimpath -tags "${tags}" \
    -ldflags "${ldflags}" -o "${tmp}/" "${packages[@]}"
)
for b in "${binaries[@]}"; do
  [[ -x "${tmp}/${b}" ]] || { echo "missing ${b} after build" >&2; exit 1; }
done
rm -f "${stamp}"
rm -rf "${bindir}"
chmod 755 "${tmp}"
mv "${tmp}" "${bindir}"
echo "${want}" > "${stamp}"
trap - EXIT

end=$(date +%s)
"${bindir}/kube-apiserver" --version
"${bindir}/etcd" --version | sed -n 1p
echo "built control plane in ${bindir} in $((end - start))s"
