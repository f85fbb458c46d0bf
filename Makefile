# gomemlimit-injector developer targets. `make test` runs every test.
CARGO ?= cargo

.PHONY: all build release test unit e2e e2e-node controlplane images lab lint fmt bench bench-engines bench-load bench-limits fuzz fuzz-smoke run clean

all: build

build:
	$(CARGO) build --locked

# The release binary, optimized with the profile of a training run on the review bodies of
# tests/data and, on x86_64, rewritten by BOLT from a second one (hack/release.sh;
# llvm-profdata of rustc's LLVM version: rustup component add llvm-tools, or apt-get install
# llvm-N; llvm-bolt: apt-get install bolt-N).
release:
	hack/release.sh

# Everything: unit, property and integration tests (the integration tests start the real
# TLS server on loopback), the end-to-end suites against a real control plane and on a
# real node (root), one quick pass of each benchmark in test mode, the chart checks, the
# alerts and dashboard checked and unit-tested with promtool, and the GitHub Actions
# workflows checked with actionlint, and a short run of each fuzz target.
test: controlplane helm images unit check-manifests check-monitoring check-workflows fuzz-smoke

unit:
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl
# (Kubernetes 1.37) built from their upstream Go modules into .cache/controlplane
# (CONTROLPLANE_CACHE_DIR moves it); a no-op when up to date.
controlplane:
	cluster/build.sh

# The end-to-end suite alone.
e2e: controlplane
	$(CARGO) test --locked --test e2e

# The node suite alone (root): Kubernetes with a kubelet, containerd and runc, the chart
# installed with helm from the webhook's own image, Go workloads under real memory limits.
e2e-node: controlplane helm images
	$(CARGO) test --locked --test e2e-node

# OCI images without a Docker engine (hack/build-image.sh) into .cache/images: the webhook
# from the release binary, the node suite's pause and Go workload images, and the lab's
# reference service; plus the lab's load generator, a static binary in .cache/bin.
images: release
	hack/build-image.sh webhook >/dev/null
	hack/build-image.sh go workloads/pause localhost/gomemlimit-e2e/pause:1 --user 65535 >/dev/null
	hack/build-image.sh go workloads/alloc localhost/gomemlimit-e2e/alloc:1 >/dev/null
	hack/build-image.sh go workloads/sales localhost/gomemlimit-lab/sales:1 >/dev/null
	mkdir -p .cache/bin
	cd workloads/load && GOWORK=off CGO_ENABLED=0 nice -n 19 go build -trimpath -o ../../.cache/bin/load .

# The lab (root, about 15 minutes): the published experiment on the node of e2e-node with
# the webhook installed by its chart; docs/lab.md. Results in target/lab (LAB_OUT=DIR);
# PUBLISH=1 also writes docs/lab.md and docs/lab.svg. Another service:
#   make lab IMAGE=registry/app:1 IMAGE_ARCHIVE=app.tar LOAD='GET /api/items?id={i}'
# and PORT, METRICS (expvar path, or none), ARGS, REQUESTS, CONCURRENCY, REPEATS, CPU.
lab: export LAB_IMAGE = $(IMAGE)
lab: export LAB_IMAGE_ARCHIVE = $(IMAGE_ARCHIVE)
lab: export LAB_LOAD = $(LOAD)
lab: export LAB_PORT = $(PORT)
lab: export LAB_METRICS = $(METRICS)
lab: export LAB_ARGS = $(ARGS)
lab: export LAB_REQUESTS = $(REQUESTS)
lab: export LAB_CONCURRENCY = $(CONCURRENCY)
lab: export LAB_REPEATS = $(REPEATS)
lab: export LAB_CPU = $(CPU)
lab: export LAB_PUBLISH = $(PUBLISH)
lab: controlplane helm images
	$(CARGO) bench --locked --bench lab

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	shellcheck -x cluster/*.sh hack/*.sh .ci/run

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --locked --bench review --bench server

# Pod creation through a real API server with no policy, the webhook and the native
# policies (benches/engines.rs): pods per second and p50/p99, as ratios in one run.
bench-engines: controlplane
	$(CARGO) bench --locked --bench engines

# Load on the release binary over loopback (h2load, from Debian's nghttp2-client): /mutate
# throughput per body as a ratio of GET /healthz, beside the same body read and refused
# (the transport alone), and p50/p99 latency at half that rate, in h2load's bursts and
# evenly spaced, over HTTP/2 and HTTP/1.1 (hack/bench-load.sh).
bench-load: release
	hack/bench-load.sh

# `serve` as a process against its bounds: start-up time, idle memory, peak memory per large
# review, latency beside large reviews, 2,000 slow or idle connections (benches/limits.rs),
# the release binary's.
bench-limits: release
	BENCH_BIN="$$(hack/release.sh --print-path)" $(CARGO) bench --locked --bench limits

# Coverage-guided fuzzing of the review handler (fuzz/, hack/fuzz.sh; cargo-fuzz is installed
# from crates.io when missing). fuzz-smoke, part of test: 20,000 inputs per target, at most
# 60 s each. fuzz: FUZZ_RUNS inputs per target, by default 5 million (10 million in all).
FUZZ_RUNS ?= 5000000

fuzz:
	FUZZ_RUNS=$(FUZZ_RUNS) hack/fuzz.sh

fuzz-smoke:
	hack/fuzz.sh

# The webhook on this machine with a self-signed certificate and the default policy.
run:
	$(CARGO) run --locked --release -- serve --self-signed

clean:
	$(CARGO) clean

# --- Install: Helm chart (deploy/chart) and the manifests rendered from it (deploy/manifests).
# helm is built from its Go module at the version pinned in hack/tools/go.mod (no
# downloaded binaries) into .cache/tools/bin/helm; HELM=... uses another one.

.PHONY: helm manifests helm-lint check-manifests

helm:
	hack/build-helm.sh

manifests:
	hack/render-manifests.sh

helm-lint:
	hack/helm-lint.sh

# helm lint --strict and helm template for every selection x mode x certificate source,
# then fail when deploy/manifests differs from what the chart renders.
check-manifests: helm-lint
	hack/check-manifests.sh

# --- Monitoring: the chart's alerts and dashboard (deploy/chart/.../files). promtool is
# built from its Go module at the version pinned in hack/tools/promtool/go.mod into
# .cache/tools/bin (a no-op when up to date); PROMTOOL=... uses another one.

.PHONY: promtool check-monitoring

promtool:
	hack/build-go-tool.sh promtool

# promtool check rules and test rules, the rendered PrometheusRule = the rule file, and
# every dashboard query parses as PromQL.
check-monitoring: promtool
	hack/check-monitoring.sh

# --- Release: the GitHub Actions workflows (.github/workflows) cannot run here; actionlint,
# built from its Go module (hack/tools/actionlint/go.mod), checks them, their expressions
# and, through shellcheck, their run steps. ACTIONLINT=... uses another one.

.PHONY: actionlint check-workflows

actionlint:
	hack/build-go-tool.sh actionlint

check-workflows: actionlint
	hack/check-workflows.sh
