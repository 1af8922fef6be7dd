# llmrec: `make demo` runs the main job on the embedded model and data; `make test` runs the tests.
# Both set up a virtual environment first, with the exact versions of constraints.txt (the lock CI tested).
# torch is installed first and pinned to the CPU build on disk here (a plain `torch` requirement would pull a
# multi-GB CUDA build). pyproject.toml keeps compatible ranges for library users.
#
#   make lock         regenerate constraints.txt from the newest releases the ranges allow (then run make test)
#   make test-latest  the suite against the newest releases, in .venv-latest (may fail: it shows drift early)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EXTRAS := .[kernels,retrieval,serve,test]
LOCK   := constraints.txt
PIPQ   := -m pip install -q --disable-pip-version-check
STAMP  := $(VENV)/.llmrec-installed

.PHONY: install demo test test-fast test-latest lock clean

# pip, setuptools and wheel come from the lock too; the package builds without isolation so that its build
# backend is the locked setuptools, not whatever is newest on the day.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIPQ) -c $(LOCK) pip setuptools wheel
	$(PY) $(PIPQ) "$(TORCH)"
	$(PY) $(PIPQ) -c $(LOCK) --no-build-isolation -e "$(EXTRAS)"
	touch $@

install: $(STAMP)

# Zero-shot vs 64-shot AUC and UAUC on the TALLRec movie test set with the default recipe (llmrec.recipe.DEFAULT_TEMPLATE:
# collaborative tokens + one taste token). Its collaborative model (SASRec, no rating and no valid/test user seen) is
# fitted on the first run into the llmrec cache ($LLMREC_CACHE/collab, ~2 min) and reused after; the zero-shot row
# uses the text template (no trained projector yet). Precision is `auto` (llmrec.precision): bf16 autocast where the
# CPU/GPU runs it natively, fp32 elsewhere (bf16 is emulated, ~50x slower, on AVX2-only CPUs).
demo: install
	$(PY) eval/tallrec_auc.py --shots 64 --seeds 0 --out results/demo.json

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not integration and not slow"

# The newest releases the ranges of pyproject.toml allow, without the lock.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python $(PIPQ) --upgrade pip setuptools wheel
	.venv-latest/bin/python $(PIPQ) "$(TORCH)"
	.venv-latest/bin/python $(PIPQ) --upgrade --upgrade-strategy eager -e "$(EXTRAS)"
	.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q

# Resolve the newest releases into a scratch venv and write every installed version (direct and transitive,
# pip/setuptools/wheel included) to constraints.txt. Commit it once `make test` passes with it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python $(PIPQ) --upgrade pip setuptools wheel
	.venv-lock/bin/python $(PIPQ) "$(TORCH)"
	.venv-lock/bin/python $(PIPQ) -e "$(EXTRAS)"
	{ echo "# Exact versions \`make install\` uses (CI-tested). Regenerate: make lock && make test."; \
	  echo "# Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())'), $$(uname -m), torch CPU build."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-latest .venv-lock results build *.egg-info
