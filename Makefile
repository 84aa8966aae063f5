# Two commands from a fresh clone, each doing its own set-up (idempotent: a second call reuses the venv):
#   make run    the default benchmark end to end (embedded corpus, CPU, minutes)
#   make test   the test suite (unit tests + end-to-end workflow runs on tiny configs)
#
# TORCH_SPEC picks the torch build. The default pin takes a local CPU wheel where one is on disk and,
# on a Linux GPU machine, PyPI's CUDA build of the same version. Override it for a specific CUDA:
#   make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run ablations sweeps test test-fast slurm-test lint report clean-results

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

ablations: setup
	$(VENV)/bin/snakemake --cores $(CORES) results/tables/table4_ablation.md --configfile config/config.yaml config/ablations.yaml $(SNAKEMAKE_ARGS)

sweeps: setup
	$(VENV)/bin/snakemake --cores $(CORES) results/tables/sweep_scjepa_loss.md --configfile config/config.yaml config/sweeps.yaml $(SNAKEMAKE_ARGS)

report: run
	$(VENV)/bin/snakemake --cores 1 --report results/report.html

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

slurm-test: setup
	$(PY) -m pytest -m slurm tests/slurm $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results logs .snakemake/incomplete
