# Two commands for a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
# pytest-xdist processes for make test (each test computes single-threaded: OMP_NUM_THREADS=1)
TEST_WORKERS ?= 2
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tuneforge-installed

.PHONY: setup demo test test-fast clean llama

$(STAMP): pyproject.toml constraints.txt requirements-offline.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-offline.txt
	scripts/ensure-wordnet.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/tuneforge quickstart

test: setup
	scripts/ensure-postgres.sh
	scripts/ensure-chromium.sh
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-fast: setup
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -m "not slow"

# optional: llama.cpp's quantizer and runtime (export --format gguf --quant q4_k_m; the slow GGUF test's llama.cpp
# checks). It builds from source (~10 minutes on 2 cores) once; the wheel is kept in ~/.cache/tuneforge/wheels.
LLAMA_WHEELS := $(HOME)/.cache/tuneforge/wheels
llama: setup
	ls $(LLAMA_WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/pip wheel -q llama-cpp-python==0.3.36 --no-deps -w $(LLAMA_WHEELS)
	$(BIN)/pip install -q --no-deps $(LLAMA_WHEELS)/llama_cpp_python-0.3.36-*.whl
	$(BIN)/pip install -q -c constraints.txt diskcache

clean:
	rm -rf $(VENV) runs .pytest_cache
