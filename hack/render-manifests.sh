#!/usr/bin/env bash
# Render deploy/manifests/<selection>-<mode>-<certificates>.yaml (8 files, the webhook) and
# deploy/manifests/native-<selection>-<mode>.yaml (4 files, engine=native) from the Helm
# chart, for `kubectl apply -f` users. Files of other names in that folder are removed.
#
#   hack/render-manifests.sh [OUT_DIR]   # default deploy/manifests
#
# HELM=/path/to/helm overrides the pinned helm (hack/build-helm.sh, built on first use);
# the output is stable only with the pinned version.
set -euo pipefail
# shellcheck source=lib-manifests.sh source-path=SCRIPTDIR
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib-manifests.sh"

out="${1:-${manifests}}"
helm="$(helm_bin)"
mkdir -p "${out}"

declare -A wanted=()
while read -r stem selection mode source; do
  render_one "${helm}" "${selection}" "${mode}" "${source}" >"${out}/${stem}.yaml.tmp"
  mv -f "${out}/${stem}.yaml.tmp" "${out}/${stem}.yaml"
  wanted["${stem}.yaml"]=1
  echo "rendered ${out}/${stem}.yaml" >&2
done < <(combinations)

while read -r stem selection mode; do
  render_native "${helm}" "${selection}" "${mode}" >"${out}/${stem}.yaml.tmp"
  mv -f "${out}/${stem}.yaml.tmp" "${out}/${stem}.yaml"
  wanted["${stem}.yaml"]=1
  echo "rendered ${out}/${stem}.yaml" >&2
done < <(native_combinations)

# A combination that no longer exists must not linger.
for f in "${out}"/*.yaml; do
  [[ -e "${f}" ]] || continue
  if [[ -z "${wanted[$(basename "${f}")]:-}" ]]; then
    rm -f "${f}"
    echo "removed stale ${f}" >&2
  fi
done
