# Codex developer entry points. `make demo` and `make test` both set up first.
#
# torch is installed on its own, pinned, before everything else: on this kind of machine the pin
# resolves to a CPU wheel already on disk; on a user's Linux box the same pin from PyPI is the
# CUDA build. Override with e.g. `make setup TORCH_SPEC="torch==2.13.0" TORCH_INDEX=<index url>`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(VENV)/bin/python -m pip
# every package under plugins/ except the engine template (placeholders, not a package until rendered)
PLUGIN_DIRS := $(filter-out plugins/_template,$(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.codex-setup

.PHONY: setup browser demo test test-fast test-orders test-random bench check-wheels docs clean

setup: $(STAMP)

$(STAMP): Makefile pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q --disable-pip-version-check hatchling editables
	$(PIP) install -q --disable-pip-version-check --no-build-isolation -e ".[dev]" $(addprefix -e ,$(PLUGIN_DIRS))
	touch $@

demo: setup
	$(VENV)/bin/codex run sd15 txt2img --model tiny \
	  --json '{"prompt": "a lighthouse on a cliff at dawn, oil painting"}'

# The UI's browser tests drive Chromium (/usr/bin/chromium, or CODEX_CHROMIUM): installed with apt if missing.
browser:
	bash tests/install_chromium.sh

test: setup browser
	$(VENV)/bin/python -m pytest

# The inner loop: the unmarked tier (no slow, browser, wheels or distributed tests; pyproject.toml lists the
# markers). `make test` runs everything and is what CI runs.
FAST := not slow and not browser and not wheels and not distributed
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "$(FAST)"

# The suite again in a random order (pytest-randomly; the seed is fixed and printed: rerun a failure
# with the same RANDOM_SEED) and in the reverse order: no test may depend on what ran before it.
RANDOM_SEED ?= 20261130
test-orders: test-random
	$(VENV)/bin/python -m pytest -q --reverse

# CI's second pass: the random order only (both orders would not fit CI's time with every engine's suite).
test-random: setup browser
	$(VENV)/bin/python -m pytest -q -p randomly --randomly-seed=$(RANDOM_SEED)

bench: setup
	$(PIP) install -q --disable-pip-version-check -r bench/requirements.txt
	$(VENV)/bin/python bench/overhead.py
	$(VENV)/bin/python bench/serve.py
	$(VENV)/bin/python bench/speed.py
	$(VENV)/bin/python bench/batch.py
	$(VENV)/bin/python bench/preview.py
	$(VENV)/bin/python bench/engines.py

# Wheels (not editable) in a fresh environment: codex-core alone, then each plugin alone with it.
check-wheels: setup
	bash tests/check_wheels.sh

clean:
	rm -rf $(VENV) artifacts build dist
