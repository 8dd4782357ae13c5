"""Registration hygiene, the manifest (Blender's own validator) and the built zip."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import subprocess
import sys
import zipfile
from pathlib import Path

import bpy
import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS, PKG, ROOT, disable, enable, prefs, runtime, wait_for

from blender_env import addon  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.blender

BLENDER_EXT = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _ours():
    return sorted(n for n in dir(bpy.types) if n.startswith("STABLEAVATAR"))


def test_register_unregister_leaves_nothing_behind(addon):
    disable()
    classes, handlers = _ours(), list(bpy.app.handlers.load_post)
    others = {n: list(getattr(bpy.app.handlers, n)) for n in ("save_pre", "undo_post", "redo_post")}
    assert classes == [] and not hasattr(bpy.types.Scene, "stableavatar")
    try:
        enable()
        rt = runtime()
        assert len(_ours()) >= 15
        assert bpy.app.timers.is_registered(rt.tick)
        assert len(bpy.app.handlers.load_post) == len(handlers) + 1
        # a running backend must go with the extension
        prefs().python, prefs().checkpoints, prefs().device = BACKEND_PYTHON, str(CHECKPOINTS), "cpu"
        assert bpy.ops.stableavatar.check_backend() == {"FINISHED"}
        wait_for(lambda: rt.SESSION.info is not None, 120, "the backend's ready message")
        assert "torch" in prefs().backend_report and "weights load from" in prefs().backend_report
        proc = rt.SESSION.client.proc
        tick = rt.tick
        disable()
        assert proc.poll() is not None, "backend still running after unregister"
        assert _ours() == [] and not hasattr(bpy.types.Scene, "stableavatar")
        assert list(bpy.app.handlers.load_post) == handlers
        assert {n: list(getattr(bpy.app.handlers, n)) for n in others} == others
        assert not bpy.app.timers.is_registered(tick)
    finally:
        enable()


def test_download_buttons_refuse_when_offline(addon):
    assert not bpy.app.online_access  # bpy from PyPI starts offline, like Blender's default
    for op in (bpy.ops.stableavatar.install_backend, bpy.ops.stableavatar.download_weights):
        try:
            result = op()
        except RuntimeError as exc:  # reports of level ERROR raise in background mode
            assert "online access is disabled" in str(exc)
        else:
            assert result == {"CANCELLED"}


def test_manifest_validates():
    out = subprocess.run([sys.executable, str(BLENDER_EXT), "validate", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_build_makes_an_installable_zip_without_dev_files(tmp_path):
    out = subprocess.run([sys.executable, str(BLENDER_EXT), "build", "--source-dir", str(ROOT),
                          "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    (zip_path,) = tmp_path.glob("stableavatar-*.zip")
    names = zipfile.ZipFile(zip_path).namelist()
    for needed in ("blender_manifest.toml", "__init__.py", "blender_addon/client.py", "operators/runtime.py",
                   "ui/panels.py", "pyproject.toml", "backend/stableavatar/__init__.py", "preferences.py", "LICENSE",
                   "backend/stableavatar/contract/__init__.py", "backend/stableavatar/contract/messages.py"):
        assert needed in names
    for n in names:
        assert not n.startswith(("tests/", ".venv", "docs/", "demo/", "bench/", ".ci/", "backend/tests/", "dist/",
                                 "demo-output/")), n
        assert "__pycache__" not in n and ".egg-info" not in n, n
    out = subprocess.run([sys.executable, str(BLENDER_EXT), "validate", str(zip_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_addon_never_imports_torch():
    # a fresh interpreter: in this one the backend tests may already have imported torch
    code = ("import sys, blender_env\n"
            "blender_env.enable()\n"
            f"assert {PKG!r} in sys.modules\n"
            "print('torch' in sys.modules, 'diffusers' in sys.modules, flush=True)\n"
            # bpy 4.2 can crash in its C++ destructors at exit (as tests/conftest.py says): leave without them
            "import atexit, os; atexit._run_exitfuncs(); os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).parent), timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip().splitlines()[-1] == "False False"
