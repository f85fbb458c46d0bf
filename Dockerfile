# syntax=docker/dockerfile:1
#
# gomemlimit-injector image:
#   docker build -t ghcr.io/gomemlimit/gomemlimit-injector:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# Final stage: gcr.io/distroless/cc-debian12:nonroot, not scratch + a static musl build:
#   - the builder is Debian 12 (rust:1-bookworm), so the glibc the binary links against is
#     exactly the one in the runtime image; distroless/cc adds only glibc, libgcc_s,
#     CA certificates, tzdata and an /etc/passwd with nonroot = 65532: no shell, no
#     package manager (~25 MB);
#   - a musl build would need musl-tools for ring's C/assembly and mimalloc's C, and a
#     per-architecture target triple.
# Each platform is built natively (buildx runs the builder per --platform), so multi-arch
# needs no cross toolchain.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# No debug info or symbols in the shipped binary (the release profile sets the rest).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
# Only what the build reads; benches/ because Cargo.toml declares a [[bench]] target, and
# cargo checks every declared target's path when it loads the manifest.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The release build is profile-guided (hack/release.sh, as `make release`): an instrumented
# build serves the review bodies of tests/data on loopback (sent by curl, which the rust
# image has), llvm-profdata of rustc's LLVM version (rustup's llvm-tools) merges the
# profile for the build that ships, and on x86_64 BOLT (Debian's newest bolt-N) rewrites it
# from a second training run. Each platform trains on its own build.
COPY hack/release.sh hack/lib-release.sh hack/lib-serve.sh ./hack/
COPY tests/data ./tests/data
RUN rustup component add llvm-tools \
 && if [ "$(uname -m)" = x86_64 ]; then \
      apt-get update \
      && bolt="$(apt-cache search --names-only '^bolt-[0-9]+$' | cut -d' ' -f1 | sort -V | tail -1)" \
      && apt-get install -y --no-install-recommends "${bolt}" \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# BuildKit cache mounts keep the registry and target directory between builds; the binary
# is copied out of the cache inside the same step, from where release.sh says it built it
# (the build and the question share CARGO_TARGET_DIR).
RUN --mount=type=cache,id=gomemlimit-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=gomemlimit-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=gomemlimit-target,target=/src/target \
    export CARGO_TARGET_DIR=/src/target \
 && hack/release.sh \
 && install -D -m 0755 "$(hack/release.sh --print-path)" /out/gomemlimit-injector \
 && /out/gomemlimit-injector --version

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gomemlimit-injector" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook: GOMEMLIMIT from the memory limit, request = limit" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /out/gomemlimit-injector /usr/local/bin/gomemlimit-injector
# nonroot of distroless; the Helm chart also sets runAsUser/runAsGroup 65532 and
# runAsNonRoot, which needs a numeric USER to be verifiable.
USER 65532:65532
# 8443: HTTPS AdmissionReviews; 9090: plain HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/gomemlimit-injector"]
# The chart passes `serve --listen ... --config ... --log-format json` and TLS flags.
CMD ["--help"]
