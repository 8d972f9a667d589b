# moodle-cfn: every target bootstraps its own virtualenv, so any of them can be the first command run.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The stamp changes whenever a dependency declaration changes, forcing a reinstall.
STAMP := $(VENV)/.installed
TEMPLATES := templates
CFN_LINT := $(BIN)/cfn-lint --include-checks I --
CHECKOV := $(BIN)/checkov -d $(TEMPLATES) --framework cloudformation --skip-download --compact --quiet

# The node rehearsal's machine: Debian's web stack and caches, and the AWS CLI the node setup calls.
# Debian's default PHP (8.2 on Debian 12, 8.4 on Debian 13) through its version-less packages.
RIG_PACKAGES := apache2 php-fpm php-cli php-pgsql php-intl php-mbstring php-gd php-soap \
	php-xml php-zip php-curl php-memcached php-redis php-apcu memcached redis-server \
	postgresql-client jq git unzip openssl ca-certificates util-linux procps nftables logrotate
# make bench-node also needs a load generator, FUSE (the EFS latency model runs on libfuse3 through mfusepy) and
# Excimer, the sampling profiler its profile loads into PHP-FPM (only then: disabled for every other use).
BENCH_PACKAGES := wrk fuse3 libfuse3-3 php-excimer
BENCH_FUSE := .rig/fuse
MFUSEPY_VERSION := 3.1.1
RIG_AWSCLI := .rig/awscli
AWSCLI_VERSION := 1.46.3
# The offline IAM evaluator (npm @cloud-copilot/iam-simulate, AGPL-3.0: a test-time tool, never shipped),
# pinned with its dependencies by tests/iam/package-lock.json. The tests check the nodes' AWS calls with it.
IAM_SIMULATE := .rig/iam-simulate
IAM_SIMULATE_STAMP := $(IAM_SIMULATE)/.installed

.PHONY: help venv templates readme test lint lock clean rig-machine rehearse-database-role rehearse-node rehearse-faults bench-node package-check iam-simulate

help: ## Show this help
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "moodle-cfn needs Python >= 3.10")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

venv: $(STAMP) ## Create .venv and install the package with its test tools

$(IAM_SIMULATE_STAMP): tests/iam/package.json tests/iam/package-lock.json
	@command -v npm > /dev/null || { echo "the IAM checks need Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	mkdir -p $(IAM_SIMULATE)
	cp tests/iam/package.json tests/iam/package-lock.json $(IAM_SIMULATE)/
	cd $(IAM_SIMULATE) && npm ci --silent --no-audit --no-fund
	@touch $@

iam-simulate: $(IAM_SIMULATE_STAMP) ## Install the offline IAM evaluator the tests use (.rig/iam-simulate, from npm)

templates: $(STAMP) ## Regenerate templates/ (and params/*.json for taskcat) and lint them with cfn-lint
	$(BIN)/moodle-cfn build --out $(TEMPLATES)
	for params in params/*.yaml; do $(BIN)/moodle-cfn params "$$params" --out "$${params%.yaml}.json" || exit 1; done
	$(CFN_LINT) '$(TEMPLATES)/*.yaml'

readme: $(STAMP) ## Write the README's generated blocks again (the cost tables, from moodle-cfn cost)
	$(BIN)/python -m tests.docs_commands

test: $(STAMP) ## Run the whole test suite (golden, cfn-lint, checkov, params, moto rehearsal)
	@# The IAM checks' evaluator comes from npm: without Node.js they skip, saying so (.ci/run requires them).
	@if command -v npm > /dev/null; then $(MAKE) --no-print-directory $(IAM_SIMULATE_STAMP); \
	else echo "npm not found: the IAM checks will skip (apt-get install nodejs npm, then make test again)"; fi
	$(BIN)/pytest

rig-machine: ## Install what the node rehearsal runs on (Debian packages, the AWS CLI; needs root)
	@missing=$$(for p in $(RIG_PACKAGES) $(BENCH_PACKAGES); do dpkg -s $$p > /dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Excimer is loaded only by make bench-node's profile (its own ini), never by the rehearsals' nodes.
	-phpdismod -s ALL excimer 2> /dev/null
	@# Debian starts the services it installs; the rig runs its own, on its own ports.
	-apache2ctl stop > /dev/null 2>&1; pkill -x memcached; pkill -x redis-server; true
	@[ -x $(RIG_AWSCLI)/bin/aws ] || { $(PYTHON) -m venv $(RIG_AWSCLI) && \
	  $(RIG_AWSCLI)/bin/pip install --quiet awscli==$(AWSCLI_VERSION); }
	@[ -x $(BENCH_FUSE)/bin/python ] && $(BENCH_FUSE)/bin/python -c 'import mfusepy' 2> /dev/null || { \
	  $(PYTHON) -m venv $(BENCH_FUSE) && $(BENCH_FUSE)/bin/pip install --quiet mfusepy==$(MFUSEPY_VERSION); }

rehearse-database-role: $(STAMP) rig-machine ## Run the database-role function's own code against real PostgreSQL 17 and 16 (roles, rotation, takeover; needs root)
	$(BIN)/pytest -p no:cacheprovider -v tests/node_rig/rehearse_database_role.py $(RIG_PYTEST_ARGS)

rehearse-node: $(STAMP) $(IAM_SIMULATE_STAMP) rig-machine ## Boot two real Moodle nodes from the templates' node files, on each cache engine and PostgreSQL 17/16
	rm -f .rig/timings.json
	$(BIN)/pytest -p no:cacheprovider -v tests/node_rig/rehearse_node.py $(RIG_PYTEST_ARGS)
	@cat .rig/timings.json

rehearse-faults: $(STAMP) $(IAM_SIMULATE_STAMP) rig-machine ## Inject faults into the rig's two-node site (database outage, failed and interrupted upgrades and installs, rollback, stale warmed node)
	rm -f .rig/faults.json
	$(BIN)/pytest -p no:cacheprovider -v tests/node_rig/rehearse_faults.py $(RIG_PYTEST_ARGS)
	@cat .rig/faults.json

bench-node: $(STAMP) rig-machine ## Pages per second of the rig's two nodes behind an EFS latency model: reference architecture vs shipped node files
	$(BIN)/python -m tests.node_rig.bench_node

package-check: $(STAMP) ## Build the wheel, install it in a fresh virtualenv (not editable) and rebuild templates/ from it
	@# setuptools reuses build/lib: a file left there by an earlier build would hide one missing from the wheel.
	rm -rf build/package-check build/lib build/bdist.* && mkdir -p build/package-check
	$(BIN)/python -m pip wheel --quiet --no-deps -w build/package-check/dist .
	$(PYTHON) -m venv build/package-check/venv
	build/package-check/venv/bin/python -m pip install --quiet -c constraints.txt build/package-check/dist/moodle_cfn-*.whl
	cd build/package-check && venv/bin/moodle-cfn build --out templates > /dev/null
	diff -r build/package-check/templates $(TEMPLATES)
	cd build/package-check && venv/bin/moodle-cfn diagram --out docs --dot-only > /dev/null
	for dot in architecture.dot architecture-details.dot; do diff build/package-check/docs/$$dot docs/$$dot || exit 1; done
	@echo "the installed package rebuilds templates/ and the figures' sources byte for byte"

lint: $(STAMP) ## ruff on the code, cfn-lint and checkov on templates/
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(CFN_LINT) '$(TEMPLATES)/*.yaml'
	$(CHECKOV)

lock: $(STAMP) ## Rewrite constraints.txt from the current virtualenv
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info .rig
