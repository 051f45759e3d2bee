# Two commands on a fresh machine: `make run` and `make test`. Each bootstraps .venv on first use;
# the stamp file makes a second call skip the install unless pyproject.toml or constraints.txt
# changed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WHEELS := $(VENV)/wheelhouse
# pytest workers: most slow tests wait on servers and subprocesses, not on a core. A module's
# tests stay on one worker (tests/conftest.py: pytest_xdist_make_scheduler). WORKERS= runs the
# suite in one process.
WORKERS ?= -n 2 --no-loadscope-reorder
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true

.DEFAULT_GOAL := help
.PHONY: help install install-gpu wheelhouse deps synth run repro pull test test-fast lint format benchmark benchmark-container serve server server-down mlflow-ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,encrypted]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (once)

# privacy.mode: synthetic runs SmartNoise's MST in its own environment (trustflow/privacy/
# mst_worker.py, as a subprocess): smartnoise-synth cannot share .venv's opendp, pandas and Opacus.
SYNTH := .venv-synth
$(SYNTH)/.installed: constraints-synth.txt
	$(PYTHON) -m venv $(SYNTH)
	$(SYNTH)/bin/python -m pip install --quiet --upgrade pip
	$(SYNTH)/bin/python -m pip install --quiet -c constraints-synth.txt smartnoise-synth pyarrow
	$(SYNTH)/bin/python -m pip check
	touch $@

synth: $(SYNTH)/.installed ## the synthesizer environment for privacy.mode: synthetic (once)

# The inference server's wheels, downloaded once while an index is reachable. `make test` vendors
# them into image bundles from here (PIP_NO_INDEX), so the suite itself needs no network.
$(WHEELS)/.complete: $(STAMP)
	$(BIN)/python -c "import sys, pathlib, trustflow.deploy.bundle as b; \
	print(b.fill_wheelhouse(pathlib.Path(sys.argv[1])), 'wheels in', sys.argv[1])" $(WHEELS)
	touch $@

wheelhouse: $(WHEELS)/.complete ## download the server's wheels once (offline image builds)

deps: ## everything `make test` needs, the two environments installed side by side (CI)
	$(MAKE) -j3 $(STAMP) $(SYNTH)/.installed $(WHEELS)/.complete

# onnxruntime-gpu installs the same `onnxruntime` module as onnxruntime, so it replaces it (same
# version, from constraints.txt; its other dependencies are onnxruntime's). CUDA 13 and cuDNN 9
# must be on the machine. Back to the CPU build: pip uninstall onnxruntime-gpu, rm $(STAMP), make.
install-gpu: $(STAMP) ## swap onnxruntime for onnxruntime-gpu, the same version (CUDA serving)
	$(BIN)/python -m pip uninstall --quiet -y onnxruntime
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt onnxruntime-gpu
	$(BIN)/python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

run: $(STAMP) ## run train-tabular on the bundled data (workspace: this directory)
	$(BIN)/trustflow run $(ARGS)

repro: $(STAMP) ## reproduce the data stages with DVC (dvc.yaml)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# --allow-missing: a stage whose outputs were never pushed (no dvc.lock yet) is not an error.
pull: $(STAMP) ## fetch the DVC-tracked data versions from the remote in .dvc/config
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc pull --allow-missing

test: $(STAMP) $(WHEELS)/.complete $(SYNTH)/.installed ## run the whole test suite, as CI does (no network)
	PIP_NO_INDEX=1 PIP_FIND_LINKS=$(CURDIR)/$(WHEELS) $(BIN)/pytest $(WORKERS) $(PYTEST_ARGS)

# The fast tier: core and task tests, and train-tabular's first run, cached rerun and workspace
# isolation under Prefect's test harness on 3,000 rows (tiny candidates). No network.
FAST_FLOWS := $(addprefix tests/flows/test_train_tabular.py::,\
  test_first_run_registers_a_champion_with_lineage \
  test_rerun_with_unchanged_inputs_is_served_from_cache test_a_second_workspace_shares_no_state)
test-fast: $(STAMP) ## the core, task and a few flow tests (about a minute): run them while you work
	$(BIN)/pytest -q $(WORKERS) tests/unit tests/tasks $(FAST_FLOWS) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmark: $(STAMP) $(SYNTH)/.installed ## measure overhead, fairness, privacy-utility, networks, transfer, ONNX latency, serving, encryption
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/prefect_overhead.py
	$(BIN)/python benchmarks/fairness.py
	$(BIN)/python benchmarks/privacy_utility.py
	$(BIN)/python benchmarks/neural.py
	$(BIN)/python benchmarks/transfer.py
	$(BIN)/python benchmarks/onnx_latency.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/encrypted.py

benchmark-container: $(STAMP) ## the champion's image vs the same server run directly (needs Docker)
	$(BIN)/python benchmarks/container_serving.py $(ARGS)

serve: $(STAMP) ## serve the workspace's champion on http://127.0.0.1:8000 (after make run)
	$(BIN)/trustflow serve --model models:/adult-income@champion $(ARGS)

server: $(STAMP) ## start Prefect (:4200) and MLflow (:5000) servers and a worker in the background
	$(BIN)/trustflow server up $(ARGS)

server-down: $(STAMP) ## stop what `make server` started
	$(BIN)/trustflow server down

mlflow-ui: $(STAMP) ## browse the workspace's runs and models on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove the workspace state made by `make run` (keeps .venv)
	rm -rf mlflow.db mlartifacts .trustflow tensorboard data/adult.parquet data/adult.parquet.dvc \
	  data/digits.parquet data/digits.parquet.dvc
