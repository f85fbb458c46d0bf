#!/usr/bin/env bash
# Build gomemlimit-injector's container images without Docker, as OCI image layouts and
# OCI archives that `ctr images import` and `skopeo copy` read.
#
#   hack/build-image.sh webhook [--binary PATH] [--ref REF] [--version V] [--out DIR]
#                               [--ca-bundle PEM]
#   hack/build-image.sh go PKGDIR REF [--user UID[:GID]] [--out DIR]
#
# webhook: the image the Dockerfile builds (gcr.io/distroless/cc-debian12:nonroot plus
#   the binary), made from a release binary built on this host:
#     make release && hack/build-image.sh webhook
#   --binary   default the release binary of make release (pgo/release/gomemlimit-injector
#              in CARGO_TARGET_DIR, or in <repo>/target)
#   --ref      default ghcr.io/gomemlimit/gomemlimit-injector:<version> (the Helm chart's
#              default image: repository ghcr.io/gomemlimit/gomemlimit-injector, tag =
#              appVersion)
#   --version  default Cargo.toml's package version; org.opencontainers.image.version
#   --ca-bundle  PEM bundle for /etc/ssl/certs/ca-certificates.crt (default: the Mozilla
#              certificates of Debian's ca-certificates package, never local additions)
#   Two layers: a distroless/cc-like base, then /usr/local/bin/gomemlimit-injector
#   (symbols stripped, as the Dockerfile's build does). The base holds the shared
#   libraries and the dynamic loader as `ldd` resolves them on this host, so build on
#   Debian 12 (distroless/cc-debian12's glibc) for the host's architecture; /etc/passwd
#   and /etc/group with root and nonroot 65532; nsswitch.conf; os-release; the CA
#   bundle; /tmp 1777; /home/nonroot owned by 65532; dpkg status and copyright files of
#   the packages the libraries come from, for image scanners.
#   Config as the Dockerfile's: User 65532:65532, WorkingDir /home/nonroot, Entrypoint
#   [/usr/local/bin/gomemlimit-injector], Cmd [--help], ports 8443/tcp 9090/tcp, the
#   org.opencontainers.image.* labels, PATH and SSL_CERT_FILE as distroless sets them.
#
# go: a static Go program (CGO_ENABLED=0 go build -trimpath -buildvcs=false) alone in
#   an image: /<name> (name = the last element of the package's import path) and /tmp,
#   Entrypoint [/<name>], User UID:GID (default 65532:65532; GID defaults to UID).
#   GOARCH in the environment builds for another architecture. For test workloads:
#     hack/build-image.sh go workloads/pause localhost/gomemlimit-e2e/pause:1 --user 65535
#     hack/build-image.sh go workloads/alloc localhost/gomemlimit-e2e/alloc:1
#
# Output, in DIR (default <repo>/.cache/images, git-ignored), <name> being the last path
# element of REF's repository (gomemlimit-injector, pause, alloc):
#   <name>/        OCI image layout (oci-layout, index.json, blobs/sha256/)
#   <name>.tar     the same as an OCI archive; its index names the image twice:
#                  io.containerd.image.name = REF (what `ctr images import` registers)
#                  and org.opencontainers.image.ref.name = REF's tag (OCI convention)
#   <name>.stamp   hash of every input (files, modes, owners, config, this script)
# The last line on stdout is the path of <name>.tar; progress goes to stderr. Import:
#   ctr -n k8s.io images import .cache/images/gomemlimit-injector.tar
#   skopeo copy oci-archive:.cache/images/gomemlimit-injector.tar docker://REGISTRY/IMAGE:TAG
#
# Reproducible: layers are sorted, with mtime 0, numeric owners and no atime/ctime;
# gzip is deterministic; the config's created time is SOURCE_DATE_EPOCH, else the HEAD
# commit's time, else 0. Nothing is rebuilt when the stamp matches; concurrent runs for
# the same name serialise on a lock.
#
# Tools: umoci (Debian package umoci) writes the blobs, manifest and config (umoci raw
# add-layer + umoci config); GNU tar writes the layer and archive tars, since umoci's
# repack takes file owners from disk and could not give /home/nonroot to 65532 without
# root; jq adds io.containerd.image.name to index.json, which umoci cannot. Plus ldd,
# strip (optional) and go for the go mode.
#
# Environment:
#   SOURCE_DATE_EPOCH    image creation time (seconds)
#   BUILD_IMAGE_NICE     niceness for go build and strip (default 19)
#   BUILD_IMAGE_FORCE=1  rebuild even if the stamp matches
set -euo pipefail
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
# shellcheck source=lib-release.sh source-path=SCRIPTDIR
source "${here}/lib-release.sh"
self="${here}/$(basename "${BASH_SOURCE[0]}")"
nice_n="${BUILD_IMAGE_NICE:-19}"

die() { echo "build-image.sh: $*" >&2; exit 1; }
log() { echo "build-image.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${self}"; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# --- arguments -------------------------------------------------------------------------
mode="${1:-}"
[[ $# -gt 0 ]] && shift
case "${mode}" in
  webhook | go) ;;
  -h | --help | help) usage; exit 0 ;;
  "") usage >&2; die "missing mode: webhook or go" ;;
  *) usage >&2; die "unknown mode '${mode}': webhook or go" ;;
esac

binary="" ref="" version="" out_dir="" user="" ca_bundle="" positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary | --ref | --version | --out | --user | --ca-bundle)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --binary) binary="$2" ;;
        --ref) ref="$2" ;;
        --version) version="$2" ;;
        --out) out_dir="$2" ;;
        --user) user="$2" ;;
        --ca-bundle) ca_bundle="$2" ;;
      esac
      shift 2 ;;
    --binary=* | --ref=* | --version=* | --out=* | --user=* | --ca-bundle=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done

case "${mode}" in
  webhook)
    [[ ${#positional[@]} -eq 0 ]] || die "webhook takes no arguments, got: ${positional[*]}"
    [[ -z "${user}" ]] || die "--user is for go images; the webhook runs as 65532:65532"
    ;;
  go)
    [[ ${#positional[@]} -eq 2 ]] || die "usage: build-image.sh go PKGDIR REF [--user UID[:GID]] [--out DIR]"
    [[ -z "${binary}${version}${ca_bundle}" ]] || die "--binary, --version and --ca-bundle are for the webhook image"
    pkgdir="${positional[0]}" ref="${positional[1]}"
    ;;
esac

need umoci "install Debian's umoci package (apt-get install umoci)"
need jq "install jq (apt-get install jq)"
need sha256sum "coreutils"
need flock "util-linux"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar not found (the layers need --sort/--pax-option)"

# --- common settings -------------------------------------------------------------------
epoch="${SOURCE_DATE_EPOCH:-$(git -c safe.directory="${repo}" -C "${repo}" log -1 --format=%ct 2>/dev/null || true)}"
epoch="${epoch:-0}"
[[ "${epoch}" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since 1970, got '${epoch}'"
created="$(date -u -d "@${epoch}" +%Y-%m-%dT%H:%M:%SZ)"

# ELF e_machine of a file -> OCI architecture; empty if not an ELF file we know.
elf_arch() {
  [[ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" == '177ELF' ]] || return 0
  case "$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')" in
    62) echo amd64 ;; 183) echo arm64 ;; 3) echo 386 ;; 40) echo arm ;;
    243) echo riscv64 ;; 21) echo ppc64le ;; 22) echo s390x ;;
  esac
}

check_ref() {
  local r="$1" name_re='[a-z0-9]+([._-]+[a-z0-9]+)*'
  [[ "${r}" =~ ^([a-zA-Z0-9.-]+(:[0-9]+)?/)?${name_re}(/${name_re})*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
    die "bad image reference '${r}': want [registry/]path/name:tag (lower case, with a tag, no digest)"
}

# --- layer tars ------------------------------------------------------------------------
# make_layer DIR TAR [PATH=UID:GID ...]: tar DIR's contents into TAR, sorted by name, with
# numeric owner 0:0 except PATH and everything below it (one rule per PATH, the longest
# match wins). Owners come from the rules, not from disk, so no chown (and no root) is
# needed. Consecutive entries with the same owner go into one tar invocation.
# shellcheck disable=SC2054 # commas inside --pax-option's value
tar_flags=(--format=posix --numeric-owner --mtime=@0 --no-recursion --null
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
  --no-acls --no-xattrs --no-selinux)
make_layer() {
  local dir="$1" out="$2"; shift 2
  local rules=("$@") list run run_owner="" op=-c path owner r p len best
  list="$(mktemp "${work}/list.XXXXXX")"
  run="$(mktemp "${work}/run.XXXXXX")"
  : > "${run}"
  flush() {
    [[ -s "${run}" ]] || return 0
    tar "${op}" -f "${out}" -C "${dir}" "${tar_flags[@]}" \
      --owner="${run_owner%%:*}" --group="${run_owner##*:}" -T "${run}"
    op=-r
    : > "${run}"
  }
  (cd "${dir}" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z) > "${list}"
  while IFS= read -r -d '' path; do
    owner=0:0 best=0
    for r in "${rules[@]}"; do
      p="${r%%=*}" len="${#p}"
      if [[ "${path}" == "${p}" || "${path}" == "${p}/"* ]] && ((len > best)); then
        owner="${r#*=}" best="${len}"
      fi
    done
    if [[ "${owner}" != "${run_owner}" ]]; then
      flush
      run_owner="${owner}"
    fi
    printf '%s\0' "${path}" >> "${run}"
  done < "${list}"
  flush
  [[ -f "${out}" ]] || die "nothing to put in layer ${out}"
}

# Hash of what a layer will hold: names, types, modes, owners rules, link targets, bytes.
tree_hash() {
  local dir="$1"; shift
  {
    printf '%s\n' "$@"
    (cd "${dir}" && find . -mindepth 1 -printf '%P %y %m %l\n' | LC_ALL=C sort)
    (cd "${dir}" && find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0r sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# --- staging ---------------------------------------------------------------------------
out_dir="${out_dir:-${repo}/.cache/images}"
mkdir -p "${out_dir}"
out_dir="$(cd "${out_dir}" && pwd)"
work="$(mktemp -d "${out_dir}/.build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

layers=()       # staging dirs, bottom first
layer_rules=()  # per layer: space-separated PATH=UID:GID rules
layer_history=()
config_args=()

stage_webhook() {
  need ldd "install libc-bin"
  local bin version_out toml_version
  bin="${binary:-$(release_binary)}"
  [[ -f "${bin}" ]] || die "no webhook binary at ${bin}: run 'make release' first, or pass --binary PATH"
  arch="$(elf_arch "${bin}")"
  [[ -n "${arch}" ]] || die "${bin} is not an ELF executable of a known architecture"
  local host_arch
  host_arch="$(elf_arch /bin/sh)"
  [[ "${arch}" == "${host_arch}" ]] ||
    die "${bin} is ${arch} but this host is ${host_arch}: the libraries come from this host's ldd; build the image on a ${arch} Debian 12 host (or use docker buildx)"

  toml_version="$(awk -F'"' '/^\[/{p=($0=="[package]")} p&&/^version[ \t]*=/{print $2; exit}' "${repo}/Cargo.toml")"
  version="${version:-${toml_version}}"
  [[ -n "${version}" ]] || die "no package version in ${repo}/Cargo.toml; pass --version"
  ref="${ref:-ghcr.io/gomemlimit/gomemlimit-injector:${version}}"
  version_out="$("${bin}" --version 2>/dev/null || true)"
  [[ "${version_out}" == *" ${version}" ]] ||
    log "warning: '${bin} --version' says '${version_out}', the image is labelled version ${version}"

  # Layer 1: the runtime base.
  local base="${work}/base" path target ldd_out pkgs=() pkg
  mkdir -p "${base}"/{etc/ssl/certs,home/nonroot,root,tmp,var/lib/dpkg/status.d,usr/share/doc}
  chmod 1777 "${base}/tmp"
  chmod 0700 "${base}/root" "${base}/home/nonroot"
  cat > "${base}/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat > "${base}/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  cat > "${base}/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
EOF
  if [[ -f /etc/os-release ]]; then cp -L /etc/os-release "${base}/etc/os-release"; fi

  if [[ -n "${ca_bundle}" ]]; then
    [[ -f "${ca_bundle}" ]] || die "--ca-bundle ${ca_bundle}: no such file"
    cp -L "${ca_bundle}" "${base}/etc/ssl/certs/ca-certificates.crt"
  else
    # What Debian's ca-certificates package ships (as distroless has), not this host's
    # /etc/ssl/certs/ca-certificates.crt, which also holds local additions.
    local moz=/usr/share/ca-certificates/mozilla
    compgen -G "${moz}/*.crt" >/dev/null ||
      die "no CA certificates in ${moz}: install ca-certificates, or pass --ca-bundle PATH"
    # shellcheck disable=SC1003,SC2016 # sed: append a newline to a file lacking one
    find "${moz}" -maxdepth 1 -name '*.crt' -print0 | LC_ALL=C sort -z |
      xargs -0 sed -s -e '$a\' > "${base}/etc/ssl/certs/ca-certificates.crt"
    pkgs+=(ca-certificates)
  fi

  # Shared libraries and the dynamic loader, at the paths ldd reports; a symlink there
  # (Debian's /lib64/ld-linux-x86-64.so.2) stays a symlink, its target is copied too.
  ldd_out="$(LC_ALL=C ldd "${bin}" 2>&1)" || true
  if [[ "${ldd_out}" == *"not a dynamic executable"* || "${ldd_out}" == *"statically linked"* ]]; then
    ldd_out=""
  elif [[ "${ldd_out}" == *"not found"* ]]; then
    die "ldd ${bin}: missing libraries on this host:"$'\n'"$(grep 'not found' <<< "${ldd_out}")"
  fi
  local libs=()
  while read -r a b c _; do
    case "${a}" in linux-vdso.so.* | linux-gate.so.*) continue ;; esac
    if [[ "${b}" == "=>" && "${c}" == /* ]]; then libs+=("${c}")
    elif [[ "${a}" == /* ]]; then libs+=("${a}")
    fi
  done <<< "${ldd_out}"
  if [[ -n "${ldd_out}" && ${#libs[@]} -eq 0 ]]; then
    die "could not parse ldd ${bin}:"$'\n'"${ldd_out}"
  fi
  local seen=" "
  while [[ ${#libs[@]} -gt 0 ]]; do
    path="${libs[0]}"; libs=("${libs[@]:1}")
    if [[ "${seen}" == *" ${path} "* ]]; then continue; fi
    seen+="${path} "
    mkdir -p "${base}$(dirname "${path}")"
    if [[ -L "${path}" ]]; then
      target="$(readlink "${path}")"
      ln -s "${target}" "${base}${path}"
      [[ "${target}" == /* ]] || target="$(dirname "${path}")/${target}"
      libs+=("${target}")
    else
      [[ -f "${path}" ]] || die "ldd named ${path}, which is not a file"
      cp -L "${path}" "${base}${path}"
      chmod "$(stat -L -c %a "${path}")" "${base}${path}"
      pkg="$(dpkg-query -S "${path}" 2>/dev/null | head -1 | cut -d: -f1 || true)"
      if [[ -n "${pkg}" ]]; then pkgs+=("${pkg}"); fi
    fi
  done

  # dpkg status and copyright of the packages the files come from, in distroless's
  # layout (/var/lib/dpkg/status.d/<package>), so image scanners see glibc's version.
  if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in $(printf '%s\n' "${pkgs[@]}" | LC_ALL=C sort -u); do
      dpkg-query -s "${pkg}" > "${base}/var/lib/dpkg/status.d/${pkg}" 2>/dev/null ||
        { rm -f "${base}/var/lib/dpkg/status.d/${pkg}"; continue; }
      if [[ -f "/usr/share/doc/${pkg}/copyright" ]]; then
        mkdir -p "${base}/usr/share/doc/${pkg}"
        cp -L "/usr/share/doc/${pkg}/copyright" "${base}/usr/share/doc/${pkg}/copyright"
      fi
    done
  fi
  find "${base}" -type d -exec chmod u+rwx,go+rx,go-w {} +
  chmod 1777 "${base}/tmp"
  chmod 0700 "${base}/root" "${base}/home/nonroot"
  find "${base}" -type f -exec chmod go-w,a+r {} +

  # Layer 2: the binary, without symbols (the Dockerfile builds with strip=symbols).
  local app="${work}/app"
  install -d -m 0755 "${app}/usr/local/bin"
  if command -v strip >/dev/null 2>&1; then
    nice -n "${nice_n}" strip --strip-all -o "${app}/usr/local/bin/gomemlimit-injector" "${bin}"
  else
    log "warning: strip (binutils) not found, the binary keeps its symbols"
    cp -L "${bin}" "${app}/usr/local/bin/gomemlimit-injector"
  fi
  chmod 0755 "${app}/usr/local/bin/gomemlimit-injector"

  layers=("${base}" "${app}")
  layer_rules=("home/nonroot=65532:65532" "")
  layer_history=(
    "hack/build-image.sh: distroless/cc-debian12:nonroot equivalent (glibc, libgcc_s, CA certificates, passwd/group with nonroot 65532, /tmp, /home/nonroot)"
    "COPY gomemlimit-injector /usr/local/bin/gomemlimit-injector (symbols stripped)"
  )
  config_args=(
    --config.user=65532:65532
    --config.workingdir=/home/nonroot
    --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --config.env=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    --config.exposedports=8443/tcp
    --config.exposedports=9090/tcp
    --config.entrypoint=/usr/local/bin/gomemlimit-injector
    --config.cmd=--help
    --config.label=org.opencontainers.image.title=gomemlimit-injector
    "--config.label=org.opencontainers.image.description=Kubernetes mutating admission webhook: GOMEMLIMIT from the memory limit, request = limit"
    --config.label=org.opencontainers.image.licenses=Apache-2.0
    "--config.label=org.opencontainers.image.version=${version}"
  )
}

stage_go() {
  need go "install Go (https://go.dev/dl/) to build ${pkgdir}"
  [[ -d "${pkgdir}" ]] || die "no Go package directory ${pkgdir}"
  compgen -G "${pkgdir}/*.go" >/dev/null || die "${pkgdir} holds no .go files"
  user="${user:-65532:65532}"
  [[ "${user}" == *:* ]] || user="${user}:${user}"
  [[ "${user}" =~ ^[0-9]+:[0-9]+$ ]] || die "--user wants UID[:GID] numbers, got '${user}'"

  local import_path name app="${work}/app"
  export GOWORK=off CGO_ENABLED=0 GOOS=linux
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  arch="$(go env GOARCH)"
  import_path="$(cd "${pkgdir}" && go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' .)" ||
    die "go list ${pkgdir} failed"
  [[ -n "${import_path}" ]] || die "${pkgdir} is not a main package"
  name="${import_path##*/}"
  mkdir -p "${app}/tmp"
  chmod 1777 "${app}/tmp"
  (cd "${pkgdir}" && nice -n "${nice_n}" go build -trimpath -buildvcs=false -ldflags="-s -w" -o "${app}/${name}" .) ||
    die "go build ${pkgdir} failed"
  chmod 0755 "${app}/${name}"

  layers=("${app}")
  layer_rules=("")
  layer_history=("go build -trimpath -buildvcs=false -ldflags='-s -w' ${import_path} (CGO_ENABLED=0 GOOS=linux GOARCH=${arch}) -> /${name}")
  config_args=(
    "--config.user=${user}"
    "--config.entrypoint=/${name}"
    "--config.label=org.opencontainers.image.title=${name}"
  )
}

case "${mode}" in
  webhook) stage_webhook ;;
  go) stage_go ;;
esac
check_ref "${ref}"
tag="${ref##*:}"
repo_part="${ref%:*}"
name="${repo_part##*/}"
layout="${out_dir}/${name}"
archive="${out_dir}/${name}.tar"
stamp="${out_dir}/${name}.stamp"

want="$(
  {
    sha256sum < "${self}"
    printf '%s\n' "${mode}" "${ref}" "${arch}" "${created}" "${config_args[@]}" "${layer_history[@]}"
    umoci --version
    for i in "${!layers[@]}"; do
      # shellcheck disable=SC2086 # rules are space-separated words
      tree_hash "${layers[$i]}" ${layer_rules[$i]}
    done
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  [[ "${BUILD_IMAGE_FORCE:-0}" != 1 && -f "${archive}" && -f "${layout}/index.json" &&
    -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]
}
if up_to_date; then
  log "${ref} up to date in ${archive}"
  echo "${archive}"
  exit 0
fi
exec 9> "${out_dir}/.${name}.lock"
flock 9
if up_to_date; then
  log "${ref} up to date in ${archive} (built by a concurrent run)"
  echo "${archive}"
  exit 0
fi

# --- image -----------------------------------------------------------------------------
start_ms="$(($(date +%s%N) / 1000000))"
log "building ${ref} (${arch}) ..."
img="${work}/layout"
umoci init --layout "${img}"
umoci new --image "${img}:${tag}"
for i in "${!layers[@]}"; do
  # shellcheck disable=SC2086
  make_layer "${layers[$i]}" "${work}/layer${i}.tar" ${layer_rules[$i]}
  umoci raw add-layer --image "${img}:${tag}" --history.created="${created}" \
    --history.created_by="${layer_history[$i]}" "${work}/layer${i}.tar"
done
umoci config --image "${img}:${tag}" --no-history --created="${created}" \
  --architecture="${arch}" --os=linux "${config_args[@]}"
umoci gc --layout "${img}"
# ctr (containerd 1.6) registers an OCI archive's image under io.containerd.image.name;
# a bare ref.name tag would need --base-name. The platform lets importers pick by it.
jq -c --arg name "${ref}" --arg arch "${arch}" \
  '.manifests |= map(.annotations["io.containerd.image.name"] = $name
                     | .platform = {architecture: $arch, os: "linux"})' \
  "${img}/index.json" > "${work}/index.json"
mv "${work}/index.json" "${img}/index.json"
umoci stat --image "${img}:${tag}" > /dev/null || die "umoci cannot read back ${img}:${tag}"

tar -C "${img}" -cf "${work}/image.tar" --sort=name --format=posix --numeric-owner \
  --owner=0 --group=0 --mtime=@0 --mode=a+rX,u+w,go-w \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  oci-layout index.json blobs

rm -f "${stamp}"
rm -rf "${layout}"
mv "${img}" "${layout}"
mv -f "${work}/image.tar" "${archive}"
echo "${want}" > "${stamp}"

digest="$(jq -r '.manifests[0].digest' "${layout}/index.json")"
bytes="$(jq '[.layers[].size] | add' "${layout}/blobs/sha256/${digest#sha256:}")"
log "built ${ref} ${digest}: $(jq '.layers | length' "${layout}/blobs/sha256/${digest#sha256:}") layers, ${bytes} compressed bytes, in $(($(date +%s%N) / 1000000 - start_ms))ms"
echo "${archive}"
