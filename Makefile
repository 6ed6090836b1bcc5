# The two commands of the README:
#   make run    -- create .venv, install, run the default benchmark (snakemake --cores 2)
#   make test   -- create .venv, install with test extras, run the test suite
# Variables: PYTHON (a Python 3.11), CORES, ARGS (extra snakemake or pytest arguments, e.g.
# ARGS="--config profile=smoke"), TORCH_SPEC (pip arguments that install the CPU build of torch).
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= 2
ARGS ?=
TORCH_SPEC ?= torch==2.13.0

BIN := $(VENV)/bin

.PHONY: run test test-cluster lint install deepsparse-env clean-results publish-leaderboard check-leaderboard

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# the opt-in DeepSparse timing backend's own environment (its onnx/numpy pins conflict with the project's):
# measure setting `deepsparse: true` then runs prunebench/measure/deepsparse_worker.py in it
DEEPSPARSE_VENV ?= .venv-deepsparse
$(DEEPSPARSE_VENV)/.installed: environments/deepsparse.txt
	$(PYTHON) -m venv $(DEEPSPARSE_VENV)
	$(DEEPSPARSE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEEPSPARSE_VENV)/bin/python -m pip install --quiet -r environments/deepsparse.txt
	touch $@

deepsparse-env: $(DEEPSPARSE_VENV)/.installed

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) $(ARGS)

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q $(ARGS)

# the workflow through the SLURM profile on a one-node cluster started here (scripts/slurm_local.sh)
test-cluster: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m cluster tests/test_cluster_live.py $(ARGS)

# ruff's lint and format check, and the import contracts (runner -> methods -> core, no cycles)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# publish-leaderboard: the published leaderboard (reports/leaderboard.*), the README's results block and its
# headline figure (reports/figures/), all rendered from the records committed under reports/records, and the
# result tables of docs/results.md (python -m prunebench.report.docs_tables), rendered from the records under reports/.
# check-leaderboard (CI): the committed files are what those records give.
DOCS_WITH_TABLES = docs/results.md

publish-leaderboard: install
	$(BIN)/python -m prunebench.report.published --regenerate --records reports/records --published reports --readme README.md
	$(BIN)/python -m prunebench.report.docs_tables --regenerate $(DOCS_WITH_TABLES)

check-leaderboard: install
	$(BIN)/python -m prunebench.report.published --records reports/records --published reports --render-report --readme README.md
	$(BIN)/python -m prunebench.report.docs_tables $(DOCS_WITH_TABLES)

clean-results:
	rm -rf results .snakemake
