# One-command set-up and entry points. The CPU build of torch is installed before anything else:
# a package that asks for "torch" on a machine without it would otherwise pull a CUDA build of
# several GB. On a GPU machine use the Dockerfile (it keeps the container's torch).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= runs/demo

.PHONY: setup demo test test-quick

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

# Without the end-to-end runs marked slow (the demo, the micro reproduction, the copy task).
test-quick: setup
	$(VENV)/bin/python -m pytest tests -m "not slow"
