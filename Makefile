# Two commands do all the set-up on a fresh machine:  `make quickstart`  and  `make test`.
PY ?= python3
STAMP := .setup.stamp

.PHONY: setup quickstart test test-slow

# torch first: an existing torch (e.g. a GPU user's CUDA build) is left alone; without one we pin the
# release whose CPU wheel lies on this machine's disk instead of letting pip resolve a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(PY) -m harness.cli run quickstart --results results/quickstart.db

test: setup
	$(PY) -m pytest -q
	@if [ "$${LCBENCH_RUN_SLOW:-0}" = "1" ]; then $(MAKE) --no-print-directory test-slow; fi

test-slow: setup
	$(PY) -m pytest -q -m slow -o addopts="-p no:cacheprovider"
