# gomemlimit-injector developer targets. `make test` runs every test.
CARGO ?= cargo

.PHONY: all build release test lint fmt bench run clean

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

# Unit, property and integration tests (the integration tests start the real TLS server on
# loopback), plus one quick pass of each benchmark in test mode so that they keep working.
test:
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --locked --bench review

# The webhook on this machine with a self-signed certificate and the default policy.
run:
	$(CARGO) run --locked --release -- serve --self-signed

clean:
	$(CARGO) clean
