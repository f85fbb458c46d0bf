#!/usr/bin/env bash
# Coverage-guided fuzzing of the AdmissionReview handler (fuzz/, cargo fuzz with libFuzzer):
#   review_bytes  arbitrary bytes as a review body, seeded from tests/data
#   review_pod    generated pods of hostile shapes inside valid reviews
# Each asserts no panic, a defined answer, and a patch that applies and is a fixed point
# (fuzz/src/lib.rs). A failing input is saved under fuzz/artifacts/<target>/ and the run
# fails; the corpus grows in fuzz/corpus/<target>/ (both git-ignored).
#
#   hack/fuzz.sh                   # the short run of make test: 20,000 inputs per target
#   FUZZ_RUNS=5000000 hack/fuzz.sh # a long run (make fuzz FUZZ_RUNS=...)
#
# cargo fuzz needs nightly compiler flags (-Z): RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. cargo-fuzz itself is installed from crates.io, at the version
# below, into TOOLS_BIN_DIR when missing.
#
# Environment:
#   FUZZ_RUNS       inputs per target (default 20000)
#   FUZZ_TIME       seconds per target at most (default 60 with the default FUZZ_RUNS,
#                   else 0: no limit)
#   FUZZ_TARGETS    the targets (default "review_bytes review_pod")
#   FUZZ_SANITIZER  none (default: the crate forbids unsafe code, and without a sanitizer
#                   it runs about three times as many inputs) or address
#   FUZZ_JOBS       processes per target (default 1; libFuzzer -fork)
#   TOOLS_BIN_DIR   where cargo-fuzz is (default <repo>/.cache/tools/bin)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
bindir="${TOOLS_BIN_DIR:-${repo}/.cache/tools/bin}"
cargo_fuzz_version=0.13.2

runs="${FUZZ_RUNS:-20000}"
if [[ -z "${FUZZ_RUNS:-}" ]]; then
  time_limit="${FUZZ_TIME:-60}"
else
  time_limit="${FUZZ_TIME:-0}"
fi
read -r -a targets <<<"${FUZZ_TARGETS:-review_bytes review_pod}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

cargo_fuzz="${bindir}/cargo-fuzz"
if ! "${cargo_fuzz}" --version 2>/dev/null | grep -q " ${cargo_fuzz_version}\$"; then
  echo "--- cargo install cargo-fuzz ${cargo_fuzz_version} into ${bindir}"
  cargo install --quiet --locked cargo-fuzz --version "${cargo_fuzz_version}" \
    --root "$(dirname "${bindir}")"
fi

export RUSTC_BOOTSTRAP=1
cd "${repo}/fuzz"
for target in "${targets[@]}"; do
  corpus="corpus/${target}"
  mkdir -p "${corpus}"
  seeds=()
  [[ "${target}" == review_bytes ]] && seeds=("${repo}/tests/data" "${repo}/tests/data/wire")
  args=(-runs="${runs}" -max_total_time="${time_limit}" -print_final_stats=1)
  ((jobs > 1)) && args+=(-fork="${jobs}")
  echo "--- fuzz ${target}: ${runs} inputs, at most ${time_limit}s (0: no limit), sanitizer ${sanitizer}"
  log="$(mktemp)"
  status=0
  "${cargo_fuzz}" run --release --sanitizer "${sanitizer}" "${target}" "${corpus}" "${seeds[@]}" \
    -- "${args[@]}" >"${log}" 2>&1 || status=$?
  if ((status != 0)); then
    tail -n 60 "${log}" >&2
    rm -f "${log}"
    echo "error: fuzz target ${target} failed; the input is in fuzz/artifacts/${target}/" >&2
    exit 1
  fi
  executed="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "${log}" | tail -n1)"
  [[ -z "${executed}" ]] && executed="$(grep -oE '^Done [0-9]+ runs' "${log}" | tail -n1 | grep -oE '[0-9]+')"
  rm -f "${log}"
  files="$(find "${corpus}" -type f | wc -l)"
  size="$(du -sk "${corpus}" | cut -f1)"
  echo "${target}: ${executed:-?} inputs, no failure; corpus ${files} files (${size} KiB)"
done
