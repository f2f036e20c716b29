# Two commands for a fresh machine: `make demo` (main job on the built-in demo corpus), `make test`.
# Two environments: .venv is the core (current numpy and pyarrow) with PyTorch, Dask and the pretrained MTCNN
# weights, and runs every test but MindSpore's; .venv-mindspore has the `mindspore` extra (MindSpore 2.9 needs
# numpy < 2) and runs the tests marked `mindspore`. Each run requires its environment's frameworks: their tests
# fail, not skip, when missing (FACEDATA_REQUIRE_FRAMEWORKS, tests/conftest.py).
PYTHON ?= python3.11
VENV ?= .venv
MINDSPORE_VENV ?= .venv-mindspore
BIN := $(VENV)/bin
MINDSPORE_BIN := $(MINDSPORE_VENV)/bin
STAMP := $(VENV)/.installed
MINDSPORE_STAMP := $(MINDSPORE_VENV)/.installed

.PHONY: demo test test-core test-mindspore lint bench clean

# --clear: a rebuilt environment holds only what pyproject.toml asks for now (no package left from an old pin)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,torch,dask]'
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0  # MTCNN weights (extra bench; pins an old torch)
	touch $(STAMP)

$(MINDSPORE_STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(MINDSPORE_VENV)
	$(MINDSPORE_BIN)/python -m pip install -q --upgrade pip
	$(MINDSPORE_BIN)/python -m pip install -q -e '.[test,mindspore]'
	touch $(MINDSPORE_STAMP)

demo: $(STAMP)
	$(BIN)/facedata demo -o demo_out

# MindSpore's few tests first, so that pytest's closing line is the whole suite's
test: lint test-mindspore test-core

lint: $(STAMP)
	$(BIN)/ruff check facedata tests benchmarks

test-core: $(STAMP)
	FACEDATA_REQUIRE_FRAMEWORKS=torch,facenet_pytorch,distributed FACEDATA_REQUIRE_CURRENT_DEPS=1 $(BIN)/python -m pytest -q

test-mindspore: $(MINDSPORE_STAMP)
	FACEDATA_REQUIRE_FRAMEWORKS=mindspore $(MINDSPORE_BIN)/python -m pytest -q -m mindspore

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(MINDSPORE_VENV) demo_out
