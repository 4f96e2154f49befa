# DermBridge: `make run` starts the server on the embedded default, `make test` runs lint and every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# fhir-package-loader (the FSH team's FHIR package loader, npm): tests/interop load the IG package with it
FPL_VERSION := 2.2.4
FPL_STAMP := $(VENV)/node/.fhir-package-loader-$(FPL_VERSION)
# axe-core (Deque's accessibility engine, npm): the reviewer app's browser tests audit each page with it
AXE_VERSION := 4.10.2
AXE_STAMP := $(VENV)/node/.axe-core-$(AXE_VERSION)

.PHONY: run test lint typecheck pytest install system-deps clean bench bench-dicom bench-engines bench-inference \
	bench-workflow bench-app soak docs-images

install: $(STAMP) $(FPL_STAMP) $(AXE_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(FPL_STAMP): $(STAMP) | system-deps
	npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error fhir-package-loader@$(FPL_VERSION)
	touch $(FPL_STAMP)

$(AXE_STAMP): $(FPL_STAMP)
	npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION)
	touch $(AXE_STAMP)

run: $(STAMP)
	$(BIN)/dermbridge serve

# Debian packages the tests drive (dcmtk, PostgreSQL, Orthanc, HAProxy): tools/system_deps.sh lists them.
system-deps:
	@bash tools/system_deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps $(FPL_STAMP) $(AXE_STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Benchmarks run from a clone of the last commit, with this venv: editing the working tree while
# one runs (several minutes) cannot change what it measures. ARGS are passed on, e.g.
# `make bench ARGS="--modes secure,open"`.
BENCH_TREE := /tmp/dermbridge-benchtree
SOAK_TREE := /tmp/dermbridge-soaktree
# $(call bench_clone,DIR) clones into DIR instead (the soak's own, so a bench can run beside it)
define bench_clone
	rm -rf $(or $(1),$(BENCH_TREE)) && git clone -q . $(or $(1),$(BENCH_TREE)) && \
		ln -s $(abspath $(VENV)) $(or $(1),$(BENCH_TREE))/.venv
endef

bench: $(STAMP)
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/fhir_bench.py $(ARGS)

bench-dicom: $(STAMP)
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/dicom_bench.py $(ARGS)

# Issue 16's figures in one run (about 25 minutes, see bench/README.md): SQLite vs PostgreSQL (bundle ingest, the
# FHIR workload at 8 and 32 clients, two API processes behind HAProxy vs one), then C-STORE ingest on both engines
# vs Orthanc. ARGS go to engines_bench.py, DICOM_ARGS to dicom_bench.py.
bench-engines: $(STAMP) system-deps
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/engines_bench.py $(ARGS)
	cd $(BENCH_TREE) && .venv/bin/python bench/dicom_bench.py --storage postgresql --skip-web $(DICOM_ARGS)

bench-inference: $(STAMP)
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/inference_bench.py $(ARGS)

bench-workflow: $(STAMP)
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/workflow_bench.py $(ARGS)

bench-app: $(STAMP) $(AXE_STAMP)
	$(bench_clone)
	cd $(BENCH_TREE) && .venv/bin/python bench/app_bench.py $(ARGS)

# 30 minutes of mixed load with a kill -9 every minute or so, then: nothing acknowledged lost,
# every write audited, the audit trail intact. E.g. `make soak ARGS="--minutes 3 --kill-every 40"`.
soak: $(STAMP)
	$(call bench_clone,$(SOAK_TREE))
	cd $(SOAK_TREE) && .venv/bin/python bench/soak.py $(ARGS)

# The README's pictures of the reviewer app: the browser test's screenshots of a synthetic case.
docs-images: $(STAMP) $(AXE_STAMP)
	.venv/bin/python -m pytest -q -p no:cacheprovider tests/interop/test_reviewer_app.py -k claims_views
	.venv/bin/python tools/docs_images.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
