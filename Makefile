# gomemlimit-injector developer targets. `make test` runs every test.
CARGO ?= cargo

.PHONY: all build release test unit e2e e2e-node controlplane images lint fmt bench bench-engines run clean

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

# Everything: unit, property and integration tests (the integration tests start the real
# TLS server on loopback), the end-to-end suites against a real control plane and on a
# real node (root), one quick pass of each benchmark in test mode, and the chart checks.
test: controlplane helm images unit check-manifests

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
# from the release binary, and the node suite's pause and Go workload images.
images: release
	hack/build-image.sh webhook >/dev/null
	hack/build-image.sh go workloads/pause localhost/gomemlimit-e2e/pause:1 --user 65535 >/dev/null
	hack/build-image.sh go workloads/alloc localhost/gomemlimit-e2e/alloc:1 >/dev/null

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
