# Analytical decomposition of vLLM step time — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
# Your own traces: make report DATA=/path/to/ground_truth OUT=/some/dir
DATA   ?=
OUT    ?=
# GPU: make data HARDWARE=h200-sxm PRECISION=fp8 replays on it (default: the calibrated fit);
# make report HARDWARE=h200-sxm analyses on it (rooflines, bounds, floors), data unchanged.
HARDWARE  ?=
PRECISION ?=
# make data SCALE=10: a synthetic 10x set (each experiment and 9 copies) in data/raw-x10, not data/raw
SCALE  ?= 1
# make data ENGINE_LOOP=sync replays vLLM's synchronous engine loop (default: async, what the study ran);
# make report ENGINE_LOOP=sync|async makes the step targets assume it (default: detected per experiment)
ENGINE_LOOP ?=
# make data STEP_MODEL=reports/blis/defaults.yaml prices the forward pass with fitted BLIS coefficients
STEP_MODEL ?=
# make report DASK=local (a LocalCluster of 2 processes) or DASK=tcp://host:8786 (a running
# scheduler) runs the per-experiment stages on Dask; default: in process (or env STEPDECOMP_DASK)
DASK   ?=
# make report SITE=0 skips the offline site (OUT/site/) it builds as its last step.
SITE   ?= 1
SITE_DIR = $(if $(OUT),$(OUT),reports)/site
SITE_ARGS = $(if $(OUT),--out "$(OUT)") $(if $(DATA),--data "$(DATA)")
# The report notebooks, in the order they run (each reads what the previous ones wrote): the one
# list is stepdecomp.core.params.ALL_NOTEBOOKS, read when a recipe needs it (after setup).
NOTEBOOK_FILES = $(shell $(PY) -m stepdecomp.run.notebooks --list)
BUNDLED := data/raw
# The bundled dataset is complete when its generator wrote this stamp last.
BUNDLED_STAMP := $(BUNDLED)/.complete
SANITIZE := tests/nbval-sanitize.cfg

export TQDM_DISABLE ?= 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: FORCE help setup data calibrate validate stepmodel-check report sensitivity export-blis site site-check test test-fast pytest pytest-rest nbval lab bench notebooks clean distclean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: DATA=<ground-truth root> OUT=<report dir> (report), VENV=$(VENV)"

$(VENV)/.installed: pyproject.toml environment.yml
	@if command -v conda >/dev/null 2>&1 && [ -z "$$NO_CONDA" ]; then \
		echo "creating conda environment in $(VENV) from environment.yml"; \
		conda env create --yes -p $(VENV) -f environment.yml; \
	else \
		echo "creating virtualenv in $(VENV) (pip, from pyproject.toml)"; \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip && \
		$(PY) -m pip install --quiet -e .; \
	fi
	@touch $@

setup: $(VENV)/.installed ## Create the environment (conda if present, else a pip venv)

REFDATA_SOURCES := $(wildcard lib/stepdecomp/refdata/*.py) lib/stepdecomp/hw/kernels.py $(wildcard data/workloads/*/*.yaml) \
	$(wildcard data/workloads/*/results/config.yaml) $(wildcard data/hardware/*.json)

# `make data HARDWARE=… PRECISION=…` always regenerates; `make report HARDWARE=…` does not.
# The generator's arguments; the stamp records those of the data in data/raw, so `make data`
# regenerates whenever they differ (back to the default too). `make report HARDWARE=…` does not.
DATA_ARGS := $(strip $(if $(HARDWARE),--hardware $(HARDWARE)) $(if $(PRECISION),--precision $(PRECISION)) \
	$(if $(ENGINE_LOOP),--engine-loop $(ENGINE_LOOP)) $(if $(STEP_MODEL),--step-model $(STEP_MODEL)))
STAMP_ARGS := $(strip $(shell cat $(BUNDLED_STAMP) 2>/dev/null))
DATA_STALE := $(if $(filter-out $(DATA_ARGS),$(STAMP_ARGS))$(filter-out $(STAMP_ARGS),$(DATA_ARGS)),FORCE)

$(BUNDLED_STAMP): $(REFDATA_SOURCES) $(if $(filter data,$(MAKECMDGOALS)),$(DATA_STALE)) | $(VENV)/.installed
	rm -f $@
	$(PY) -m stepdecomp.refdata --out $(BUNDLED) $(DATA_ARGS)
	@echo "$(DATA_ARGS)" > $@

data/raw-x%/.complete: $(REFDATA_SOURCES) | $(VENV)/.installed
	rm -f $@
	$(PY) -m stepdecomp.refdata --out $(@D) --scale $* $(if $(HARDWARE),--hardware $(HARDWARE)) \
		$(if $(PRECISION),--precision $(PRECISION)) $(if $(ENGINE_LOOP),--engine-loop $(ENGINE_LOOP))
	@touch $@

data: $(if $(filter-out 1,$(SCALE)),data/raw-x$(SCALE)/.complete,$(BUNDLED_STAMP)) ## Generate the bundled reference dataset in data/raw (HARDWARE=, PRECISION=, ENGINE_LOOP=, STEP_MODEL=, SCALE=)

calibrate: setup ## Fit hardware, weight precision, engine loop and host constants to the 12 published runs (whole run and per stage)
	$(PY) -m stepdecomp.refdata.calibrate

stepmodel-check: setup ## Replay the 12 published runs with the step model fitted without each run's model (after make report)
	$(PY) -m stepdecomp.run.stepmodel_client $(if $(OUT),--out "$(OUT)")

validate: $(BUNDLED_STAMP) ## Published vs replayed client metrics of data/raw -> data/README.md tables
	$(PY) -m stepdecomp.run.validate

report: setup $(if $(DATA),,$(BUNDLED_STAMP)) ## Run notebooks 01-07 -> reports/ + figures/ (or DATA=... OUT=... HARDWARE=...)
	@echo "running $(words $(NOTEBOOK_FILES)) notebooks on $(if $(DATA),$(DATA),the bundled dataset)"
	$(PY) -m stepdecomp.run.notebooks $(NOTEBOOK_FILES) $(if $(DATA),--data "$(DATA)") $(if $(OUT),--out "$(OUT)") \
		$(if $(HARDWARE),--hardware "$(HARDWARE)") $(if $(DASK),--dask "$(DASK)") \
		$(if $(ENGINE_LOOP),--engine-loop "$(ENGINE_LOOP)")
	@echo "findings: $(if $(OUT),$(OUT),reports)/FINDINGS.md"
	$(if $(filter 1,$(SITE)),$(PY) -m stepdecomp.site.build $(SITE_ARGS))

# Not part of `make report`: about 15 minutes on 2 cores; the lead commits its table, which
# FINDINGS reads (reports/tables/sensitivity.csv) when it is there.
sensitivity: setup ## Replay with perturbed kernel costs and other seeds, rerun the statistics -> reports/tables/sensitivity.csv (after make report)
	$(PY) -m stepdecomp.run.sensitivity

export-blis: setup ## BLIS defaults file of the fitted step-time model -> reports/blis/ (after make report; OUT=, HARDWARE=)
	$(PY) -m stepdecomp.run.stepmodel_tables $(if $(OUT),--out "$(OUT)") $(if $(HARDWARE),--hardware "$(HARDWARE)")

site: setup ## Offline site of the report: FINDINGS + one page per notebook -> reports/site/ (OUT=)
	$(PY) -m stepdecomp.site.build $(SITE_ARGS)

site-check: site ## Open every site page in headless chromium: no error, no external request, all images
	$(PY) -m stepdecomp.site.check "$(SITE_DIR)"

notebooks: report ## Refresh the committed notebooks' outputs from the default report
	$(PY) -m stepdecomp.run.notebooks --refresh-committed $(NOTEBOOK_FILES)

# Tiers (pyproject.toml, tests/conftest.py): unit, integration, slow; tests/<subpackage>/ mirrors lib.
# Tests run on two processes (pytest-xdist; CI has two cores): TEST_JOBS=0 runs them in one.
TEST_JOBS ?= 2
PYTEST = $(PY) -m pytest tests -q -n $(TEST_JOBS)
test-fast: setup ## The unit tier only (pytest -m unit: under a minute on two cores)
	time $(PYTEST) -m unit

pytest-rest: setup ## The integration and slow tiers (what test-fast leaves out)
	time $(PYTEST) -m "not unit"

pytest: setup ## Every pytest tier: unit, integration and slow
	$(PYTEST)

# The notebooks are given in ALL_NOTEBOOKS order (not the directory's): 06_report must run after
# 07_model, whose tables it reads, as in make report.
nbval: setup $(BUNDLED_STAMP) ## Re-execute the committed notebooks and compare outputs (nbval)
	@tmp=$$(mktemp -d) && STEPDECOMP_OUT=$$tmp/nbval-out $(PY) -m pytest --nbval $(NOTEBOOK_FILES) \
		--nbval-sanitize-with $(SANITIZE) -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 0 ] && [ -n "$(NBVAL_SITE)" ]; then \
		$(PY) -m stepdecomp.site.build --out $$tmp/nbval-out --notebooks notebooks && \
		$(PY) -m stepdecomp.site.check --no-screenshots $$tmp/nbval-out/site; rc=$$?; fi; \
	rm -rf $$tmp; exit $$rc

# make test checks the site of the nbval run in the browser: its FINDINGS.md and figures, and the
# committed notebooks nbval has just compared with a fresh run (no second report run).
test: NBVAL_SITE := 1
test: test-fast pytest-rest nbval ## Everything CI runs: the unit tier (timed), the other tiers, nbval on the notebooks, the browser check of their site

# JupyterLab refuses to start as root without --allow-root (containers run as root): the flag
# is passed then, and only then.
lab: setup ## Open JupyterLab on notebooks/ with the library importable
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: setup ## Loader speed (vs a json.loads loop, cold load of all files, parser ceilings; MB/s); pipeline, statistics and step-model speed
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_stats.py
	$(PY) bench/bench_stepmodel.py

clean: ## Prune trace caches of vanished files; remove scratch output (keeps data/raw, live caches)
	@$(PY) -m stepdecomp.traces.load --prune-cache 2>/dev/null || rm -rf data/interim/traces
	rm -rf reports/interim .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove the environment and the generated dataset
	rm -rf $(VENV) $(filter-out $(BUNDLED)/.gitkeep,$(wildcard $(BUNDLED)/*)) $(BUNDLED_STAMP)

FORCE:
