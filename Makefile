# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs).
# Both create or update the local venv first; re-running is cheap when nothing changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean-demo

venv: $(STAMP)

# torch is pinned in the same pip command as everything that depends on it (constraints/cpu.txt): a
# separate `pip install accelerate` would pull a multi-GB CUDA build on a CPU-only machine.
$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[test]' bpy==5.0.1
	touch $@

demo: $(STAMP)
	$(PY) -m stableavatar demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf demo-output
