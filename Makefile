# Quick start: `make run` (set-up + the workflow on config/config.yaml) and
# `make test` (set-up + the test suite; `make test-fast` leaves out the slow tests). The set-up creates .venv with the exact
# versions of constraints.txt. `make run CONFIG=config/embedded.yaml` runs another config
# (checked first by `diffusion-regimes run`: a missing file or a YAML error is one line).
PYTHON ?= python3
CONFIG ?= config/config.yaml
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench report clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,slurm]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/diffusion-regimes run --configfile $(CONFIG)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples workflow/scripts
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/pytest

# the edit loop: everything but the tests marked slow (whole workflow runs, long trainings)
test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples workflow/scripts
	$(BIN)/pytest -m "not slow" -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,slurm,bench]'
	$(BIN)/python benchmarks/bench_cloning_nfe.py
	$(BIN)/python benchmarks/bench_empirical_kernel.py
	$(BIN)/python benchmarks/bench_train_unet.py --preset default --batch 64 --steps 20
	$(BIN)/python benchmarks/bench_train_unet.py --preset default --batch 64 --steps 40 --dropout 0 --speedups
	$(BIN)/python benchmarks/bench_sampler_bias.py
	$(BIN)/python benchmarks/bench_train_unet.py --preset paper32 --batch 16 --steps 5
	$(BIN)/python benchmarks/bench_train_unet.py --preset memo_celeba --batch 512 --flops
	$(BIN)/python benchmarks/bench_classifiers.py
	$(BIN)/python benchmarks/bench_solvable.py
	$(BIN)/python benchmarks/bench_workflow.py
	$(BIN)/python benchmarks/bench_threads.py --seconds 8
	$(BIN)/python benchmarks/bench_training_times.py

report: $(STAMP)
	$(BIN)/diffusion-regimes run --configfile $(CONFIG) --report report.html

clean:
	rm -rf results logs benchmarks/results .snakemake report.html
