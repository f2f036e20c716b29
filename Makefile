# Two commands for a fresh machine: `make demo` (main job on the built-in demo corpus), `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,torch,mindspore,dask]'
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0  # MTCNN weights (extra bench; pins an old torch)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/facedata demo -o demo_out

test: $(STAMP)
	$(BIN)/ruff check facedata tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_out
