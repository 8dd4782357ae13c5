# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs).
# Both create or update the local venvs first; re-running is cheap when nothing changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Blender 4.5 LTS as a module, for the add-on's compatibility run. No torch in it: the add-on never imports
# torch; the backend it starts runs from $(VENV).
BPY45  := .venv-bpy45
# Blender 5.3 (Python 3.13) runs the add-on suite; Blender 4.2 LTS (no audio in its wheel) the install/register
# smoke and the strip API of 4.2/4.3. Both talk to the backend in $(VENV).
BPY53  := .venv-bpy53
BPY42  := .venv-bpy42
PYTHON313 ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || \
	PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep '^3\.13' | tail -1) python3.13 -c 'import sys; print(sys.executable)')
BLENDER_EXT = $(VENV)/lib/python3.11/site-packages/bpy/5.0/scripts/addons_core/bl_pkg/cli/blender_ext.py
WHEEL_DIR := backend_wheel
SMOKE_42 := tests/blender/test_blender_extension.py tests/blender/test_blender_strip_api.py \
	tests/blender/test_blender_survives.py::test_blenders_own_uninstall_and_update_lose_nothing

.PHONY: demo test test-backend test-blender extension wheel venv clean-demo

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

# bpy 5.3 pins numpy>=2.2 (4.x/5.0 pin numpy<2)
$(BPY53)/.installed:
	test -x $(BPY53)/bin/python || $(PYTHON313) -m venv $(BPY53)
	$(BPY53)/bin/python -m pip install --quiet bpy==5.3.0 pytest pytest-timeout 'numpy>=2.2,<3'
	touch $@

$(BPY42)/.installed:
	test -x $(BPY42)/bin/python || $(PYTHON) -m venv $(BPY42)
	$(BPY42)/bin/python -m pip install --quiet bpy==4.2.0 pytest pytest-timeout 'numpy<2'
	touch $@

# the backend wheel Install Backend installs, shipped inside the extension zip (built fresh: stale build/ files
# would leak into it)
wheel: $(STAMP)
	rm -rf build $(WHEEL_DIR)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_DIR) .

# With real weights ($$STABLEAVATAR_CHECKPOINTS) both demos use them; otherwise the tiny random tree, loudly.
demo: $(STAMP)
	$(PY) -m stableavatar demo --out demo-output --image tests/data/media/case-1-reference.png \
	  --audio tests/data/media/case-2-speech.wav --fallback-checkpoints tests/data/parity/checkpoints
	$(PY) demo/blender_demo.py --out demo-output/blender \
	  $(if $(STABLEAVATAR_CHECKPOINTS),--checkpoints $(STABLEAVATAR_CHECKPOINTS) --size 512 --steps 50 --device cuda,)

test: test-backend test-blender extension

# everything under tests/ (backend, service, and the add-on on bpy 5.0)
test-backend: $(STAMP) wheel
	$(PY) -m pytest -q

test-blender: $(STAMP) $(BPY45)/.installed $(BPY53)/.installed $(BPY42)/.installed wheel
	$(BPY45)/bin/python -m pytest tests/blender -q
	$(BPY53)/bin/python -m pytest tests/blender -q -p no:cacheprovider
	$(BPY42)/bin/python -m pytest $(SMOKE_42) -q -p no:cacheprovider

# Blender's own manifest validation and an installable zip (with the backend wheel) without tests/dev files
extension: $(STAMP) wheel
	mkdir -p dist
	$(PY) $(BLENDER_EXT) validate .
	$(PY) $(BLENDER_EXT) build --source-dir . --output-dir dist

clean-demo:
	rm -rf demo-output
