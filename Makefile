# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs).
# Both create or update the local venvs first; re-running is cheap when nothing changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Blender 4.5 LTS as a module, for the add-on's compatibility run. No torch in it: the add-on never imports
# torch; the backend it starts runs from $(VENV).
BPY45  := .venv-bpy45
BLENDER_EXT = $(VENV)/lib/python3.11/site-packages/bpy/5.0/scripts/addons_core/bl_pkg/cli/blender_ext.py

.PHONY: demo test test-backend test-blender extension venv clean-demo

venv: $(STAMP)

# torch is pinned in the same pip command as everything that depends on it (constraints/cpu.txt): a
# separate `pip install accelerate` would pull a multi-GB CUDA build on a CPU-only machine.
$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[test,farm]' bpy==5.0.1
	touch $@

$(BPY45)/.installed:
	test -x $(BPY45)/bin/python || $(PYTHON) -m venv $(BPY45)
	$(BPY45)/bin/python -m pip install --quiet bpy==4.5.15 pytest pytest-timeout 'numpy<2'
	touch $@

# With real weights ($$STABLEAVATAR_CHECKPOINTS) both demos use them; otherwise the tiny random tree, loudly.
demo: $(STAMP)
	$(PY) -m stableavatar demo --out demo-output --image tests/data/media/case-1-reference.png \
	  --audio tests/data/media/case-2-speech.wav --fallback-checkpoints tests/data/parity/checkpoints
	$(PY) demo/blender_demo.py --out demo-output/blender \
	  $(if $(STABLEAVATAR_CHECKPOINTS),--checkpoints $(STABLEAVATAR_CHECKPOINTS) --size 512 --steps 50 --device cuda,)

test: test-backend test-blender extension

# everything under tests/ (backend, service, and the add-on on bpy 5.0)
test-backend: $(STAMP)
	$(PY) -m pytest -q

test-blender: $(STAMP) $(BPY45)/.installed
	$(BPY45)/bin/python -m pytest tests/blender -q

# Blender's own manifest validation and an installable zip without tests/dev files
extension: $(STAMP)
	mkdir -p dist
	$(PY) $(BLENDER_EXT) validate .
	$(PY) $(BLENDER_EXT) build --source-dir . --output-dir dist

clean-demo:
	rm -rf demo-output
