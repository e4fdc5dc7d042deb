# Development and CI entry points. `make test` takes a fresh Debian 12 machine to a
# finished test run: system packages, virtualenv, then the whole suite.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# Touched after a successful install; older than pyproject.toml means reinstall.
VENV_STAMP := $(VENV)/.installed
PIP_EXTRAS := agent,test

# Debian packages the code and the test suite use. libvirt-daemon-system-sysv
# satisfies libvirt-daemon-system without pulling in systemd units.
SYSTEM_PACKAGES := \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system \
	libvirt-daemon-system-sysv libvirt-clients libvirt-dev pkg-config \
	qemu-system-x86 qemu-utils qemu-block-extra \
	nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind \
	mariadb-server mariadb-client galera-4 rsync socat haproxy \
	iproute2 iputils-ping bridge-utils procps dnsmasq-base \
	python3-venv python3-dev gcc supervisor \
	linux-image-cloud-amd64 busybox-static syslinux syslinux-common mtools dosfstools \
	novnc chromium

# Per-test limit in seconds; a hung test fails instead of eating CI's budget.
TEST_TIMEOUT ?= 300
PYTEST_FLAGS := -ra --timeout=$(TEST_TIMEOUT) --durations=15
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k mariadb -x'
PYTEST_ARGS ?=

.PHONY: test unit lint sanity venv system-deps clean cloud cloud-down molecule collection bench faults

# The molecule scenarios run in a pytest session of their own, after the rest: they bring
# up nfs-ganesha on 127.0.0.1:2049 like the NFS fixture does, and only one can hold it.
# Then the collection's own checks: ansible-test sanity and the linters; any finding fails.
test: venv collection
	$(VENV_PYTHON) -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS) tests --ignore=tests/molecule
	$(VENV_PYTHON) -m pytest $(PYTEST_FLAGS) --timeout=$(MOLECULE_TIMEOUT) $(PYTEST_ARGS) tests/molecule
	@$(MAKE) --no-print-directory sanity lint

# Benchmarks (bench/) and fault tests (tests/faults/): each records its figures in its own
# section of docs/benchmarks.md or docs/reliability.md. Both are bounded; see those files.
bench: venv collection
	$(VENV_PYTHON) bench/run_all.py $(BENCH_ARGS)

faults: venv collection
	STACKWRIGHT_RECORD=1 $(VENV_PYTHON) -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS) tests/faults

unit: venv
	$(VENV_PYTHON) -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS) tests/unit

# ansible-lint reads .ansible-lint and lints every Ansible file of the repository: roles,
# playbooks, inventories, molecule, the integration targets, galaxy.yml, meta/ and changelogs/.
lint: venv collection
	$(VENV)/bin/ruff check src plugins tests bench docs
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-lint --profile production

# ansible-test sanity on a scratch copy of the collection (see scripts/sanity.sh).
# Extra ansible-test arguments, e.g. make sanity SANITY_ARGS='--test pep8 --test pylint'
SANITY_ARGS ?=

sanity: venv
	VENV=$(abspath $(VENV)) bash scripts/sanity.sh $(SANITY_ARGS)

# The collection as Ansible looks for it: ansible_collections/stackwright/cloudstack.
COLLECTIONS_DIR := .ansible/collections
ANSIBLE_ENV := PATH="$(abspath $(VENV))/bin:$$PATH" ANSIBLE_COLLECTIONS_PATH="$(abspath $(COLLECTIONS_DIR))" \
	ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0
# Seconds one molecule scenario may take (converge, idempotence, verify, destroy).
MOLECULE_TIMEOUT ?= 1800

collection:
	@mkdir -p $(COLLECTIONS_DIR)/ansible_collections/stackwright
	@ln -sfn ../../../.. $(COLLECTIONS_DIR)/ansible_collections/stackwright/cloudstack

# The whole cloud on this machine (inventories/local). Running it again changes nothing.
cloud: venv collection
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i inventories/local playbooks/site.yml $(ANSIBLE_ARGS)
	@echo
	@echo "API:  http://127.0.0.1:8080/client/api"
	@echo "Keys: /etc/cloudstack/management/cloudstack.ini (mode 0600, section [cloudstack]);"
	@echo "      CLOUDSTACK_CONFIG=/etc/cloudstack/management/cloudstack.ini $(VENV)/bin/cs listHosts"
	@echo "VM:   template stackwright-boot is ready; deploy with the cs deployVirtualMachine line printed above,"
	@echo "      then cs createConsoleEndpoint virtualmachineid=ID and open its url for the console"
	@echo "Stop: make cloud-down"

# Removes what `make cloud` built and stops its daemons; PURGE=1 also deletes its data.
cloud-down: venv collection
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i inventories/local playbooks/teardown.yml \
		$(if $(PURGE),-e teardown_purge=true) $(ANSIBLE_ARGS)

venv: $(VENV_STAMP)

system-deps:
	bash scripts/install-system-deps.sh $(SYSTEM_PACKAGES)

# The system packages come first: building libvirt-python needs libvirt-dev,
# pkg-config and a compiler, and Debian's python3 needs python3-venv.
$(VENV_STAMP): pyproject.toml | system-deps
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is older than 3.11; run make with PYTHON=/path/to/python3.11" >&2; \
		exit 1; }
	@if ! $(VENV_PYTHON) -c '' 2>/dev/null; then \
		echo "creating $(VENV) with $$($(PYTHON) -c 'import sys; print(sys.executable, sys.version.split()[0])')"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --progress-bar off -q -e '.[$(PIP_EXTRAS)]'
	touch $@

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis
	find . -name '*.egg-info' -prune -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +
