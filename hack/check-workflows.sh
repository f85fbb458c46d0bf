#!/usr/bin/env bash
# Check the GitHub Actions workflows (.github/workflows) with actionlint, built from its Go
# module by hack/build-go-tool.sh: workflow syntax, expressions and contexts, job needs,
# action inputs, and the shell of every `run:` step through shellcheck (which must be on
# the PATH; .ci/run installs Debian's). The workflows cannot run here; this is what can be
# checked without GitHub.
#
#   hack/check-workflows.sh
#
# ACTIONLINT=/path/to/actionlint overrides the pinned build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"

if [[ -n "${ACTIONLINT:-}" ]]; then
  actionlint="${ACTIONLINT}"
else
  "${here}/build-go-tool.sh" actionlint
  actionlint="$("${here}/build-go-tool.sh" actionlint --print-path)"
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "error: shellcheck is required to check the workflows' run steps" >&2
  exit 1
fi
cd "${repo}"
mapfile -t workflows < <(find .github/workflows -name '*.yml' -o -name '*.yaml' | sort)
if ((${#workflows[@]} == 0)); then
  echo "error: no workflows found in .github/workflows" >&2
  exit 1
fi
"${actionlint}" -shellcheck "$(command -v shellcheck)" "${workflows[@]}"
echo "check-workflows: ${#workflows[@]} workflows OK (actionlint $("${actionlint}" -version | head -n 1))"
