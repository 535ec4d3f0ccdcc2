# Two commands for a fresh Debian/Ubuntu machine, as root (see README.md):
#   make demo   converge and validate a simulated RHEL 8 GPU node (a real node: see README)
#   make test   the whole test suite
# Each installs what it needs first (apt packages, .venv with pinned pip packages).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Real programs the simulated node runs: Podman, dnf/rpm module streams, an image
# registry, SELinux policy tooling, and what builds the stand-in RPMs and images;
# python3-dev and gcc build Salt's timelib, which PyPI has only as source; chromium renders
# the fleet report's HTML page in tests/integration/test_fleet.py; strace counts the
# processes a run starts (tests/functional/test_validate_when.py, make bench).
APT_PACKAGES := podman runc conmon uidmap slirp4netns catatonit fuse-overlayfs \
	dnf rpm createrepo-c libmodulemd-tools python3-libdnf docker-registry \
	checkpolicy semodule-utils policycoreutils selinux-policy-default \
	gnupg busybox-static util-linux procps passwd strace python3-venv python3-dev make gcc libc6-dev \
	chromium

.PHONY: deps apt venv demo test test-gpu bench lint clean

deps: apt venv

apt:
	@command -v apt-get >/dev/null || { echo "make deps/demo/test need a Debian or Ubuntu machine (they build a simulated node from Debian's packages); on a real RHEL node install Salt's packages and the extension: README.md, 'Install next to Salt'" >&2; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

demo: deps
	$(PY) -m tests.node.demo

# Lint first (seconds): every Python file and SLS, so CI lints what it tests.
test: deps lint
	$(PY) -m pytest -p no:cacheprovider -ra

# What nvgpu costs on the simulated node, side by side (writes docs/benchmarks.md, Node section);
# strace (in APT_PACKAGES) counts the processes a run starts.
bench: deps
	$(PY) bench/node_bench.py

# On a machine with an NVIDIA GPU and driver (see docs/gpu.md).
test-gpu: deps
	$(PY) -m pytest -p no:cacheprovider -ra -m gpu tests/gpu

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/salt-lint $$(find salt -name '*.sls')

clean:
	rm -rf $(VENV) build *.egg-info
