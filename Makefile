# One-command set-up and entry points. The CPU build of torch is installed before anything else:
# a package that asks for "torch" on a machine without it would otherwise pull a CUDA build of
# several GB. On a GPU machine use the Dockerfile (it keeps the container's torch).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= runs/demo

.PHONY: setup demo test

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/seqpt demo --output-dir $(DEMO_DIR)

test: setup
	$(VENV)/bin/python -m pytest tests
