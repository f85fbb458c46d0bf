#!/usr/bin/env bash
# Fail (with a diff) when deploy/manifests/ is not what hack/render-manifests.sh renders
# from the chart now: a file edited by hand, a chart change without `make manifests`, a
# missing or an extra file.
#
#   hack/check-manifests.sh
set -euo pipefail
# shellcheck source=lib-manifests.sh source-path=SCRIPTDIR
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib-manifests.sh"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

HELM="$(helm_bin)"
export HELM
if ! "${repo}/hack/render-manifests.sh" "${tmp}/manifests" 2>"${tmp}/render.log"; then
  cat "${tmp}/render.log" >&2
  exit 1
fi

if diff -ru "${manifests}" "${tmp}/manifests" >"${tmp}/diff" 2>&1; then
  echo "deploy/manifests is up to date ($(find "${tmp}/manifests" -name "*.yaml" | wc -l) files)" >&2
  exit 0
fi
# Paths relative to the repository; "rendered/" is what the chart renders now.
sed -e "s#${tmp}/manifests#rendered#g" -e "s#${repo}/##g" "${tmp}/diff" >&2
echo >&2
echo "deploy/manifests drifted from deploy/chart/gomemlimit-injector (lines: - committed, + rendered)." >&2
echo "Run 'make manifests' (hack/render-manifests.sh) and commit the result." >&2
exit 1
