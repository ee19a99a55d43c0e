# The two commands of the README. Each makes its own virtual environment
# (.venv) with python3 and installs the project into it first.
PYTHON ?= python3
VENV := .venv
# pyproject.toml and the version (damdjax/__init__.py) name the install: either changed, reinstall
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml damdjax/__init__.py | cksum | cut -d' ' -f1)
ARGS ?=

.PHONY: run compare test bench clean

$(STAMP): pyproject.toml damdjax/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,ecosystem,workflows,optimal,docs]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)  ## the main job: train the DQN dispatcher on 4096 vmapped envs
	$(VENV)/bin/python -m train.dqn --num-envs 4096 $(ARGS)

compare: $(STAMP)  ## the paper's heuristics side by side
	$(VENV)/bin/python -m eval.compare $(ARGS)

test: $(STAMP)  ## the test suite, as two workers (a test file stays in one: tests/conftest.py)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/python -m eval.bench $(ARGS)

clean:
	rm -rf $(VENV)
