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

.PHONY: help venv templates test lint lock clean

help: ## Show this help
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "moodle-cfn needs Python >= 3.10")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

venv: $(STAMP) ## Create .venv and install the package with its test tools

templates: $(STAMP) ## Regenerate templates/ (and params/*.json for taskcat) and lint them with cfn-lint
	$(BIN)/moodle-cfn build --out $(TEMPLATES)
	for params in params/*.yaml; do $(BIN)/moodle-cfn params "$$params" --out "$${params%.yaml}.json" || exit 1; done
	$(CFN_LINT) '$(TEMPLATES)/*.yaml'

test: $(STAMP) ## Run the whole test suite (golden, cfn-lint, checkov, params, moto rehearsal)
	$(BIN)/pytest

lint: $(STAMP) ## ruff on the code, cfn-lint and checkov on templates/
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(CFN_LINT) '$(TEMPLATES)/*.yaml'
	$(CHECKOV)

lock: $(STAMP) ## Rewrite constraints.txt from the current virtualenv
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
