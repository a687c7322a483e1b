# Two entry points for a fresh machine:  make demo  (main job)  and  make test  (test suite).
# Both create .venv, install torch (CPU build by default) and this package with its
# test extras. GPU users: install your CUDA torch into .venv first, then pass TORCH=
# (empty) so the existing torch is kept.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kernelattn-installed

.PHONY: setup demo kernels test bench bench-docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH)"; fi
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kernelattn reproduce --preset quick --tasks copy,mqmtar,lm --out runs/demo

kernels: $(STAMP)
	$(BIN)/kernelattn kernels --out runs/kernels

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the benchmarks print their tables; `make bench-docs` also rewrites the committed docs/ tables
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mappings.py
	$(BIN)/python benchmarks/bench_attention.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_hf.py

bench-docs: $(STAMP)
	$(BIN)/python benchmarks/bench_mappings.py --write-docs
	$(BIN)/python benchmarks/bench_attention.py --write-docs
	$(BIN)/python benchmarks/bench_training.py --write-docs

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
