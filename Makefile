# Two commands do all setup on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it first (once; re-run when pyproject.toml changes).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo
PIPELINE ?= zoo/pipeline_configs/demo.toml
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install test test-all demo bench bench-quick simd lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	# torch first, pinned to the wheels on local disk (a newer range would download a CUDA build)
	$(BIN)/pip install -q "torch>=2.13,<2.15" "torchvision<0.30"
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check bioscan_stream zoo jobs tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

# Every stage on the embedded default config (zoo/pipeline_configs/demo.toml; paths under demo/): a synthetic
# release -> Ray conversion -> classical crop -> small BarcodeBERT -> image / DNA / k-mer embeddings -> index ->
# retrieval + clustering -> demo/report/index.html. A rerun skips the finished stages (docs/pipeline.md).
demo: $(STAMP)
	$(BIN)/bioscan-stream pipeline $(PIPELINE)

# Every benchmark, then the dashboard (benchmarks/README.md); `make bench-quick`: the subset that takes minutes.
bench: $(STAMP)
	$(BIN)/bioscan-stream bench

bench-quick: $(STAMP)
	$(BIN)/bioscan-stream bench --quick

# pillow-simd: a drop-in PIL with a 4-5x faster resize. Needs libjpeg/zlib headers; installed last because
# anything that reinstalls `pillow` replaces it.
simd: $(STAMP)
	apt-get install -y -q libjpeg-dev zlib1g-dev libpng-dev libfreetype-dev
	$(BIN)/pip uninstall -y pillow pillow-simd
	CC="cc -mavx2" $(BIN)/pip install --no-cache-dir --no-binary :all: pillow-simd

clean:
	rm -rf $(DEMO) .pytest_cache
