"""Headless Blender (bpy from PyPI) with the extension installed the way Blender installs it.

Not a conftest.py: tests/conftest.py (the backend's) is imported as module `conftest` too, and the test
modules import these helpers and fixtures by name.

The repository root is linked into a throw-away user resources folder as the extension
`bl_ext.user_default.stableavatar` and enabled with addon_utils. Timers never fire headless: tests
drive `runtime.tick()` themselves, blocking on the backend's event queue (`wait_for`), never sleeping.
The backend is the real `python -m stableavatar serve --stdio` on the tiny parity checkpoints.
"""
import atexit
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / "tests" / "data" / "media"
CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
BACKEND_PYTHON = os.environ.get("STABLEAVATAR_BACKEND_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
PKG = "bl_ext.user_default.stableavatar"

if "bpy" in sys.modules:
    raise RuntimeError("import blender_env before bpy: Blender reads BLENDER_USER_RESOURCES when bpy loads")
_RES = tempfile.mkdtemp(prefix="stableavatar-blender-user-")
atexit.register(shutil.rmtree, _RES, True)
os.environ["BLENDER_USER_RESOURCES"] = _RES  # must be set before bpy is imported
os.environ["STABLEAVATAR_HOME"] = os.path.join(_RES, "stableavatar-data")  # the data folder outside Blender's
(Path(_RES) / "extensions" / "user_default").mkdir(parents=True)
os.symlink(ROOT, Path(_RES) / "extensions" / "user_default" / "stableavatar")

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402  (only importable after bpy)

sys.path.insert(0, str(ROOT))  # the bpy-free core as plain `blender_addon`
from blender_addon import compat  # noqa: E402


def enable():
    mod = addon_utils.enable(PKG, default_set=True, handle_error=_raise)
    assert mod is not None, "the extension failed to enable"
    return mod


def disable():
    addon_utils.disable(PKG, default_set=True, handle_error=_raise)


def _raise(exc):
    raise exc


def runtime():
    return sys.modules[PKG + ".operators.runtime"]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


def wait_for(cond, timeout=240.0, what="condition"):
    """Drive the tick until cond() holds; block on backend events in between (no blind sleeps)."""
    rt = runtime()
    deadline = time.monotonic() + timeout
    while True:
        rt.tick()
        if cond():
            return
        if time.monotonic() > deadline:
            jobs = [(j.source, j.status, j.message, j.error_text[:2000]) for _, j in rt.iter_jobs()]
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; jobs: {jobs}")
        rt.SESSION.wait(0.25)


@pytest.fixture(scope="session")
def addon():
    """The enabled extension (each test module imports this fixture, so enabling is idempotent)."""
    if PKG not in bpy.context.preferences.addons:
        enable()
    return sys.modules[PKG]


def _disable_at_exit():
    if PKG in bpy.context.preferences.addons:
        disable()  # stops the backend


atexit.register(_disable_at_exit)


@pytest.fixture
def scene(addon, tmp_path):
    """An empty file with one scene, the preferences pointing at the real backend and tiny settings."""
    bpy.ops.wm.read_homefile(use_empty=True)
    p = prefs()
    p.python = BACKEND_PYTHON
    p.checkpoints = str(CHECKPOINTS)
    p.device = "cpu"
    p.jobs_dir = str(tmp_path / "jobs")
    sc = bpy.context.scene
    sc.render.fps, sc.render.fps_base = 25, 1.0
    sc.sequence_editor_create()
    st = sc.stableavatar
    st.still_source = "FILE"
    st.image_path = str(MEDIA / "case-1-reference.png")
    st.resolution = "CUSTOM"
    st.width = st.height = 32
    st.steps = 1
    st.fit = "crop"
    return sc


def add_voice(sc, name="voice", channel=1, start=10, trim_start=12, length=None, offset=0.0, volume=1.0):
    """A sound strip of the real speech recording, trimmed/offset, `length` frames long (default ~1 s)."""
    s = compat.top_strips(sc.sequence_editor).new_sound(name, str(MEDIA / "case-2-speech.wav"), channel, start)
    fps = sc.render.fps / sc.render.fps_base
    length = length or round(fps)
    s.frame_offset_start = trim_start
    s.frame_offset_end = s.frame_duration - trim_start - length
    s.sound_offset = offset
    s.volume = volume
    return s


def strips_snapshot(sc):
    """Everything about existing strips that the add-on must never change."""
    return sorted((s.name, s.type, s.channel, s.frame_final_start, s.frame_final_end, s.mute,
                   round(getattr(s, "volume", 1.0), 6)) for s in compat.all_strips(sc.sequence_editor))


def add_cube_and_camera(sc, name):
    """A cube in front of a new camera, rendered with Workbench at 64x64: a quick, non-blank still."""
    mesh = bpy.data.meshes.new(name + "-mesh")
    mesh.from_pydata([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    cube = bpy.data.objects.new(name + "-cube", mesh)
    cam = bpy.data.objects.new(name + "-camera", bpy.data.cameras.new(name + "-camera"))
    cam.location = (0, -6, 0)
    cam.rotation_euler = (math.pi / 2, 0, 0)
    sc.collection.objects.link(cube)
    sc.collection.objects.link(cam)
    sc.render.engine = compat.engine_id(sc, "WORKBENCH")
    sc.render.resolution_x = sc.render.resolution_y = 64
    sc.render.resolution_percentage = 100
    return cam
