# reporun: `make run` starts the embedded service, `make test` runs the tests.
# Both set up what they need: Debian packages (when root), a virtualenv and the Python packages.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSDEPS_STAMP := $(VENV)/.sysdeps
# The tools the sandbox, the tests' git server, PostgreSQL, the OIDC provider, the browser
# tests (chromium, driven by playwright), image runtimes (skopeo, umoci) and network mode `open`
# (slirp4netns) need, each with the Debian package that brings it.
# Only missing ones are installed: a machine's nodejs may come from elsewhere with its own npm,
# and Debian's npm would conflict with it.
DEB_TOOLS := bwrap:bubblewrap git:git prlimit:util-linux setpriv:util-linux curl:curl \
             psql:postgresql node:nodejs npm:npm ip:iproute2 \
             podman:podman docker-compose:docker-compose debootstrap:debootstrap iptables:iptables \
             chromium:chromium skopeo:skopeo umoci:umoci \
             slirp4netns:slirp4netns
# Checked by name: podman's runtime and network stack (not on PATH, or podman would pick crun
# and CNI instead). Everything comes without Recommends (docker-compose would pull in docker.io).
DEB_PACKAGES := runc netavark aardvark-dns catatonit

.DEFAULT_GOAL := help
.PHONY: help run test lint format bench sysdeps clean

help:
	@echo "make run     start the embedded service on 127.0.0.1:8000"
	@echo "make test    run the test suite (installs what it needs)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks (not part of the tests); BENCH_ARGS='--only cli' for the CLI's start-up"

$(SYSDEPS_STAMP):
	@missing=""; \
	for pair in $(DEB_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	for package in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$package"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	missing=$$(echo $$missing | xargs -n1 | sort -u | xargs); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    (apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && \
	      apt-get install -y -q --no-install-recommends $$missing >/dev/null)) || exit 1; \
	  else \
	    echo "missing Debian packages: $$missing - install them: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $@

sysdeps: $(SYSDEPS_STAMP)

$(STAMP): pyproject.toml
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres,kafka]'
	@touch $@

run: $(SYSDEPS_STAMP) $(STAMP)
	$(BIN)/reporun serve $(RUN_ARGS)

# Three processes share the tests on two cores, a test file each at a time: most tests wait on
# subprocesses, sockets and timers, not on a core (measured: 475 s against 526 s with two).
# PYTEST_WORKERS=0 runs them in this one.
PYTEST_WORKERS ?= 3

test: $(SYSDEPS_STAMP) $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(SYSDEPS_STAMP) $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
