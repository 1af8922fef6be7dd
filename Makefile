# llmrec: `make demo` runs the main job on the embedded model and data; `make test` runs the tests.
# Both set up a virtual environment first. torch is installed first and pinned to the CPU build on
# disk here (a plain `torch` requirement would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.llmrec-installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[kernels,retrieval,test]"
	touch $@

install: $(STAMP)

# Zero-shot vs 64-shot AUC on the TALLRec movie test set (about 6 minutes on 2 CPU cores after the install).
# Scores in bf16 autocast for speed (AUC within ~0.003 of fp32); drop --dtype for strict fp32 numbers.
demo: install
	$(PY) eval/tallrec_auc.py --shots 64 --seeds 0 --dtype bfloat16 --out results/demo.json

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not integration and not slow"

clean:
	rm -rf $(VENV) results build *.egg-info
