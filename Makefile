# Two entry points for a fresh machine (Python 3.11, pip, make):
#   make demo   set up .venv and run the local demo
#   make test   set up .venv and run every test (including the import-linter layering check)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test proto bench clean

$(STAMP): pyproject.toml setup.py queueproxy/_fasthead.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m kdp demo

test: setup
	$(PY) -m pytest -q

proto: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/stat.proto proto/kdp.proto
	rm -f proto/stat_pb2_grpc.py

bench: setup
	$(PY) -m bench.proxy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench/out
