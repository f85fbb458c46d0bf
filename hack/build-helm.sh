#!/usr/bin/env bash
# Build helm from its Go module (no downloaded binaries), at the version pinned in
# hack/tools/go.mod, into <repo>/.cache/tools/bin/helm (.cache/ is git-ignored).
#
#   hack/build-helm.sh              # build; a no-op when the binary reports the pinned version
#   hack/build-helm.sh --print-path # print the path of the helm binary and exit
#
# Environment:
#   TOOLS_BIN_DIR   override <repo>/.cache/tools/bin
#   HELM_NICE       niceness for go (default 19: other builds share the CPUs)
#   HELM_FORCE=1    rebuild even when the binary is up to date
#
# The build is reproducible: hack/tools/go.mod and go.sum pin helm and every dependency
# (-mod=readonly: a stale go.sum fails instead of being rewritten), -trimpath, CGO off,
# and the version is stamped the way helm's own Makefile does for a tagged release.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
mod="${here}/tools"
bindir="${TOOLS_BIN_DIR:-${repo}/.cache/tools/bin}"
helm="${bindir}/helm"

if [[ "${1:-}" == "--print-path" ]]; then
  echo "${helm}"
  exit 0
fi

# Never let an enclosing go.work or a vendoring GOFLAGS change what is built.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export CGO_ENABLED=0

helm_module="$(cd "${mod}" && go list -m -f '{{.Path}}' all | grep -E '^helm\.sh/helm/v[0-9]+$' | sed -n 1p)"
helm_version="$(cd "${mod}" && go list -m -f '{{.Version}}' "${helm_module}")"

if [[ -x "${helm}" && "${HELM_FORCE:-0}" != 1 ]]; then
  have="$("${helm}" version --template '{{.Version}}' 2>/dev/null || true)"
  if [[ "${have}" == "${helm_version}" ]]; then
    echo "helm ${helm_version} is up to date: ${helm}" >&2
    exit 0
  fi
  echo "helm at ${helm} reports '${have}', want ${helm_version}: rebuilding" >&2
fi

mkdir -p "${bindir}"
echo "building helm ${helm_version} (${helm_module}) into ${helm} ..." >&2
start=${SECONDS}
ldflags="-s -w"
ldflags+=" -X ${helm_module}/internal/version.version=${helm_version}"
ldflags+=" -X ${helm_module}/internal/version.metadata="
ldflags+=" -X ${helm_module}/internal/version.gitTreeState=clean"
# Build to a temporary name and rename, so an interrupted build never leaves a broken helm.
(cd "${mod}" && nice -n "${HELM_NICE:-19}" go build -trimpath -ldflags "${ldflags}" \
  -o "${helm}.tmp.$$" "${helm_module}/cmd/helm")
mv -f "${helm}.tmp.$$" "${helm}"
echo "built $("${helm}" version --short) in $((SECONDS - start))s: ${helm}" >&2
