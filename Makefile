# The two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
DEMO_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint typecheck pytest node-test bench serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/sheet-bridge demo

test: $(STAMP) lint typecheck node-test pytest

lint: $(STAMP)
	$(BIN)/ruff check sheet_bridge tests bench
	$(BIN)/ruff format --check sheet_bridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy sheet_bridge

# The Apps Script tests under Node, and Code.gs type-checked against @types/google-apps-script
# (TypeScript and the typings pinned in package.json / package-lock.json, installed by npm ci).
node-test:
	@if command -v node >/dev/null 2>&1 && [ -n "$$(ls tests/sidebar/*.test.js 2>/dev/null)" ]; then \
		$(MAKE) --no-print-directory $(NODE_STAMP) && \
		PATH="$(CURDIR)/$(BIN):$$PATH" node --test tests/sidebar/; \
	else echo "node-test: node not installed; .ci/run installs it"; fi

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

pytest: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/sync_scale.py
	$(BIN)/python bench/edit_latency.py

clean:
	rm -rf $(VENV) node_modules demo-data .pytest_cache .mypy_cache .ruff_cache
