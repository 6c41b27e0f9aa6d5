# mammokit front door: `make demo` and `make test` set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo
# test files run on this many processes (pytest-xdist; a module's tests stay on one, sharing its fixtures)
TEST_WORKERS ?= 2
# the gpu extra (nvImageCodec's GPU codecs) where nvidia-smi lists a GPU
EXTRAS ?= dev$(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo ,gpu)

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mammokit demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

bench: $(STAMP)
	$(PY) bench/decode.py
	$(PY) bench/preprocess.py
	$(PY) bench/models.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
