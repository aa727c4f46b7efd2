# Two commands do all the set-up on a fresh machine:  `make quickstart`  and  `make test`.
PY ?= python3
STAMP := .setup.stamp

.PHONY: setup quickstart test test-integration test-slow gpu-check lint-imports

# torch first: an existing torch (e.g. a GPU user's CUDA build) is left alone; without one we pin the
# release whose CPU wheel lies on this machine's disk instead of letting pip resolve a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(PY) -m harness.cli run quickstart --results results/quickstart.db

# Three tiers. `make test`: the default tier (every registry entry on every mask/direction/phase it claims, in
# this process or one shared process group; a few minutes on 2 cores). With LCBENCH_ALL_TIERS=1 (what CI sets)
# it goes on to the integration tier (real Ray, process groups, subprocesses, the CLI end to end) and the slow one.
test: setup
	$(PY) -m pytest -q
	@if [ "$${LCBENCH_ALL_TIERS:-0}" = "1" ]; then $(MAKE) --no-print-directory test-integration test-slow; fi

test-integration: setup
	$(PY) -m pytest -q -m "integration and not slow" -o addopts="-p no:cacheprovider"

test-slow: setup
	$(PY) -m pytest -q -m slow -o addopts="-p no:cacheprovider"

# On a CUDA machine (torch + triton; Ray, flash-attn and internet not needed): the gpu-marked tests and a short
# inline GPU suite, < 8 minutes; summary on stdout and in results/gpu_check.txt. Without CUDA: nothing to check.
gpu-check:
	$(PY) -m harness.gpu_check

# The layering contracts of pyproject.toml ([tool.importlinter]); what the `lint-imports` command runs, called
# through the interpreter so that no console-script shim needs to be on PATH.
lint-imports: setup
	$(PY) -c "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
