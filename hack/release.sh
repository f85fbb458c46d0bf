#!/usr/bin/env bash
# The release binary (`make release`, and the Dockerfile's build), optimized with the
# profile of a training run (profile-guided optimization, as rustc itself is built):
#   1. the binary built with instrumentation (-Cprofile-generate) into TARGET/pgo-train;
#   2. that binary run as `serve --self-signed` on loopback, and sent the review bodies of
#      tests/data over HTTP/1.1 and HTTP/2 with curl (each on one kept-alive connection),
#      and the probes; then stopped, which writes its profile;
#   3. the profile merged by llvm-profdata (the one of rustc's own LLVM version);
#   4. the binary built again with it (-Cprofile-use) into TARGET/pgo, its relocations kept;
#   5. on x86_64, that binary instrumented by BOLT (llvm-bolt), trained as in 2, and
#      rewritten by llvm-bolt from what it counted, in place: the release binary,
#      TARGET/pgo/release/gomemlimit-injector, which `hack/build-image.sh webhook`,
#      `make bench-load` and `make bench-limits` take. Not TARGET/release: any plain
#      `cargo build --release` or `cargo bench` writes its own build there.
# The profiles change only how the code is laid out and which paths are made fast, never
# what it does (README, Performance). TARGET is CARGO_TARGET_DIR, or target/.
#
#   hack/release.sh                # build
#   hack/release.sh --print-path   # print the path of the release binary and exit
#
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: target in the repository)
#   LLVM_PROFDATA      the llvm-profdata to merge with (default: the first of rustup's
#                      llvm-tools component, llvm-profdata-N and /usr/lib/llvm-N/bin,
#                      N being the major LLVM version `rustc -vV` prints)
#   LLVM_BOLT          the llvm-bolt to rewrite with, on x86_64 (default: the newest
#                      llvm-bolt-N on PATH, as Debian's bolt-N installs it, else llvm-bolt)
#   PGO_REQUESTS       requests per body and protocol in the training run (default 400)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib-release.sh source-path=SCRIPTDIR
source "${repo}/hack/lib-release.sh"
# shellcheck source=lib-serve.sh source-path=SCRIPTDIR
source "${repo}/hack/lib-serve.sh"
target="$(release_target)"
case "${1:-}" in
"") ;;
--print-path)
  release_binary
  exit 0
  ;;
*)
  echo "error: unknown argument '$1' (hack/release.sh takes none, or --print-path)" >&2
  exit 1
  ;;
esac
requests="${PGO_REQUESTS:-400}"
if [[ ! "${requests}" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: PGO_REQUESTS must be a positive whole number, not '${requests}'" >&2
  exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
  echo "error: curl is required for the training run (apt-get install curl)" >&2
  exit 1
fi

# llvm-profdata reads only the profile format of its own LLVM major version.
llvm="$(rustc_llvm)"
profdata="${LLVM_PROFDATA:-}"
if [[ -z "${profdata}" ]]; then
  for candidate in "$(rustup_profdata)" "$(command -v "llvm-profdata-${llvm}" || true)" \
    "/usr/lib/llvm-${llvm}/bin/llvm-profdata"; do
    if [[ -n "${candidate}" && -x "${candidate}" ]]; then
      profdata="${candidate}"
      break
    fi
  done
fi
if [[ -z "${profdata}" ]]; then
  echo "error: llvm-profdata of LLVM ${llvm} (rustc's) is required: rustup component add llvm-tools, or apt-get install llvm-${llvm}; or set LLVM_PROFDATA" >&2
  exit 1
fi
if ! "${profdata}" --version | grep -q "LLVM version ${llvm}\."; then
  echo "error: ${profdata} is not of LLVM ${llvm}, rustc's: $("${profdata}" --version | grep -m1 'LLVM version')" >&2
  exit 1
fi

# BOLT (llvm-bolt) rewrites the linked binary: any LLVM version's, the newest found. Only on
# x86_64, where its gain was measured; elsewhere the binary is profile-guided only.
bolt="${LLVM_BOLT:-}"
use_bolt=false
[[ "$(uname -m)" == x86_64 ]] && use_bolt=true
if "${use_bolt}" && [[ -z "${bolt}" ]]; then
  bolt="$(compgen -c llvm-bolt- | grep -E '^llvm-bolt-[0-9]+$' | sort -t- -k3 -n | tail -1 || true)"
  [[ -n "${bolt}" ]] || bolt="$(command -v llvm-bolt || true)"
fi
if "${use_bolt}" && [[ -z "${bolt}" ]]; then
  echo "error: llvm-bolt is required: apt-get install bolt-${llvm}; or set LLVM_BOLT" >&2
  exit 1
fi

work="${target}/pgo-profile"
rm -rf "${work}"
mkdir -p "${work}/raw"

echo "--- release: instrumented build (${target}/pgo-train)"
RUSTFLAGS="-Cprofile-generate=${work}/raw" \
  cargo build --locked --release --bin gomemlimit-injector --target-dir "${target}/pgo-train"
# The build scripts cargo ran were instrumented too; only the server's profile is wanted.
rm -f "${work}"/raw/*

# train BIN NAME: BIN as `serve --self-signed` on loopback, sent the training requests, then
# stopped with SIGTERM (an instrumented binary writes its profile as it exits).
train() {
  local bin="$1" name="$2" server
  echo "--- release: training run (${name})"
  serve_locally "${bin}" "${work}" "${name}" --log-level info --log-format json
  server="${served_pid}"
  # shellcheck disable=SC2064 # the server of this run
  trap "kill ${server} 2>/dev/null || true" EXIT
  local proto body
  for proto in http1.1 http2; do
    for body in "${repo}"/tests/data/pod-*.json; do
      send "${served_addr}" "${proto}" /mutate "${body}" application/json
    done
    send "${served_addr}" "${proto}" /audit "${repo}/tests/data/pod-create.json" application/json
    send "${served_addr}" "${proto}" /healthz
  done
  curl -sS --fail --noproxy '*' "http://${served_metrics}/metrics" >/dev/null
  kill -TERM "${server}"
  wait "${server}"
  trap - EXIT
}

# repeat N URL: URL N times, for one curl that sends them all on one connection.
repeat() { for _ in $(seq "$1"); do printf '%s\n' "$2"; done; }
# send ADDR PROTO PATH [BODY TYPE]: REQUESTS requests, a POST of BODY as TYPE when given,
# else a GET; fails on an answer of 400 or more.
send() {
  local addr="$1" proto="$2" path="$3" body="${4:-}" type="${5:-}"
  local args=(-sS --fail --noproxy '*' "--${proto}" --cacert "${work}/ca.crt")
  [[ -n "${body}" ]] && args+=(-H "content-type: ${type}" --data-binary "@${body}")
  # shellcheck disable=SC2046 # one word per URL
  curl "${args[@]}" $(repeat "${requests}" "https://${addr}${path}") >/dev/null
}

train "${target}/pgo-train/release/gomemlimit-injector" profile
if ! compgen -G "${work}/raw/*.profraw" >/dev/null; then
  echo "error: the training run wrote no profile into ${work}/raw" >&2
  exit 1
fi
"${profdata}" merge -o "${work}/merged.profdata" "${work}"/raw/*.profraw

echo "--- release: optimized build (${target}/pgo)"
# The profile is an input of every crate (rustc lists it among each one's dependencies), so
# each new training rebuilds them all here: about 5 minutes on 2 cores. The relocations stay
# in the binary for BOLT.
RUSTFLAGS="-Cprofile-use=${work}/merged.profdata -Clink-arg=-Wl,--emit-relocs" \
  cargo build --locked --release --bin gomemlimit-injector --target-dir "${target}/pgo"
built="$(release_binary)"

if ! "${use_bolt}"; then
  echo "release: ${built} (no BOLT on $(uname -m))"
  exit 0
fi
echo "--- release: BOLT"
"${bolt}" "${built}" -instrument -instrumentation-file="${work}/bolt.fdata" \
  -o "${work}/gomemlimit-injector.bolt-train" >"${work}/bolt-instrument.log"
train "${work}/gomemlimit-injector.bolt-train" bolt
if [[ ! -s "${work}/bolt.fdata" ]]; then
  echo "error: the BOLT training run wrote no profile (${work}/bolt.fdata)" >&2
  exit 1
fi
"${bolt}" "${built}" -o "${work}/gomemlimit-injector" -data="${work}/bolt.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
  -split-eh -icf=all -use-gnu-stack >"${work}/bolt-optimize.log"
# Over cargo's own output, which only this script builds, and each time after cargo.
mv "${work}/gomemlimit-injector" "${built}"
"${built}" --version >/dev/null
echo "release: ${built}"
