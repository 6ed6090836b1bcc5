# The two commands of the README:
#   make run    -- create .venv, install, run the default benchmark (snakemake --cores 2)
#   make test   -- create .venv, install with test extras, run the test suite
# Variables: PYTHON (a Python 3.11), CORES, ARGS (extra snakemake arguments, e.g.
# ARGS="--config profile=smoke"), TORCH_SPEC (pip arguments that install the CPU build of torch).
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= 2
ARGS ?=
TORCH_SPEC ?= torch==2.13.0

BIN := $(VENV)/bin

.PHONY: run test install clean-results publish-leaderboard check-leaderboard

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) $(ARGS)

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q $(ARGS)

# The published leaderboard (reports/leaderboard.*) from the records committed under reports/records,
# and the CI check that the committed leaderboard is what those records give (python -m prunebench.report.published).
publish-leaderboard: install
	$(BIN)/python -m prunebench leaderboard --records reports/records --markdown reports/leaderboard.md --csv reports/leaderboard.csv

check-leaderboard: install
	$(BIN)/python -m prunebench.report.published --records reports/records --published reports --render-report

clean-results:
	rm -rf results .snakemake
