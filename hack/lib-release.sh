# shellcheck shell=bash
# Shared by release.sh, bench-load.sh, build-image.sh and .ci/run (sourced, not run; the
# Makefile and the Dockerfile ask `release.sh --print-path`): where the release binary is,
# and which llvm-profdata its profile needs.

release_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The target directory: CARGO_TARGET_DIR (relative to the repository when it is relative),
# else target in the repository.
release_target() {
  local target="${CARGO_TARGET_DIR:-${release_repo}/target}"
  case "${target}" in /*) ;; *) target="${release_repo}/${target}" ;; esac
  echo "${target}"
}

# The release binary release.sh builds: TARGET/pgo/release, never TARGET/release, which any
# plain `cargo build --release` or `cargo bench` rewrites.
release_binary() {
  echo "$(release_target)/pgo/release/gomemlimit-injector"
}

# The major version of rustc's LLVM: llvm-profdata reads only the profiles of its own.
rustc_llvm() {
  rustc -vV | sed -nE 's/^LLVM version: ([0-9]+).*/\1/p'
}

# Where rustup's llvm-tools component puts llvm-profdata, whether it is installed or not.
rustup_profdata() {
  echo "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -nE 's/^host: //p')/bin/llvm-profdata"
}
