#!/usr/bin/env bash
# Build a Go-written check tool from its Go module (no downloaded binaries), at the
# version pinned in hack/tools/<tool>/go.mod, into <repo>/.cache/tools/bin/<tool>
# (.cache/ is git-ignored). Each tool is a module of its own, so that one tool's
# dependencies never move another's (helm's module is hack/tools itself, built by
# hack/build-helm.sh).
#
#   hack/build-go-tool.sh TOOL              # build; a no-op when up to date
#   hack/build-go-tool.sh TOOL --print-path # print the path of the binary and exit
#
# TOOL:
#   promtool    github.com/prometheus/prometheus/cmd/promtool, built with the tag
#               remove_all_sd: the service discoveries (cloud SDKs) are left out, since
#               only `promtool check rules` and `promtool test rules` are used
#   actionlint  github.com/rhysd/actionlint/cmd/actionlint
#
# Environment:
#   TOOLS_BIN_DIR   override <repo>/.cache/tools/bin
#   TOOLS_NICE      niceness for go (default 19: other builds share the CPUs)
#   TOOLS_FORCE=1   rebuild even when the binary is up to date
#
# Up to date means: the binary exists and its stamp (<bin>/.<tool>.stamp) matches the
# hash of the module's go.mod, go.sum and tools.go, the build flags, this script and the
# Go version. The build is reproducible: go.mod and go.sum pin every dependency
# (-mod=readonly: a stale go.sum fails instead of being rewritten), -trimpath, CGO off.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
bindir="${TOOLS_BIN_DIR:-${repo}/.cache/tools/bin}"

tool="${1:-}"
case "${tool}" in
  promtool)
    module=github.com/prometheus/prometheus
    package="${module}/cmd/promtool"
    tags=remove_all_sd
    ;;
  actionlint)
    module=github.com/rhysd/actionlint
    package="${module}/cmd/actionlint"
    tags=""
    ;;
  *)
    echo "usage: $0 promtool|actionlint [--print-path]" >&2
    exit 2
    ;;
esac
bin="${bindir}/${tool}"
if [[ "${2:-}" == "--print-path" ]]; then
  echo "${bin}"
  exit 0
fi

mod="${here}/tools/${tool}"
# Never let an enclosing go.work or a vendoring GOFLAGS change what is built.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export CGO_ENABLED=0

version="$(cd "${mod}" && go list -m -f '{{.Version}}' "${module}")"
ldflags="-s -w"
# `--version` reports the pinned module version instead of nothing or "(devel)".
case "${tool}" in
  promtool) ldflags+=" -X github.com/prometheus/common/version.Version=${version}" ;;
  actionlint) ldflags+=" -X ${module}.version=${version}" ;;
esac
stamp_file="${bindir}/.${tool}.stamp"
stamp="$(cat "${mod}/go.mod" "${mod}/go.sum" "${mod}/tools.go" "${BASH_SOURCE[0]}" \
  <(echo "${tags} ${ldflags}") <(go version) | sha256sum | cut -d' ' -f1)"

if [[ -x "${bin}" && -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${stamp}" && "${TOOLS_FORCE:-0}" != 1 ]]; then
  echo "${tool} ${version} is up to date: ${bin}" >&2
  exit 0
fi

mkdir -p "${bindir}"
echo "building ${tool} ${version} (${package}) into ${bin} ..." >&2
start=${SECONDS}
# Build to a temporary name and rename, so an interrupted build never leaves a broken tool.
(cd "${mod}" && nice -n "${TOOLS_NICE:-19}" go build -trimpath -tags "${tags}" \
  -ldflags "${ldflags}" -o "${bin}.tmp.$$" "${package}")
mv -f "${bin}.tmp.$$" "${bin}"
echo "${stamp}" >"${stamp_file}"
echo "built ${tool} ${version} in $((SECONDS - start))s: ${bin}" >&2
