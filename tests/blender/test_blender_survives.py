"""Work that survives: job folders beside the saved .blend with blend-relative strips, an unsaved file's jobs
moved beside it on save, a project folder that moves as a whole, and Blender's own uninstall, reinstall and
update of the extension losing nothing (run in a fresh Blender with the built zip, as a user installs it)."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import bpy
import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS, PKG, ROOT, add_voice, compat, prefs, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender
BLENDER_EXT = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _animate(sc, name="voice"):
    voice = add_voice(sc, name=name, length=12)
    sc.sequence_editor.active_strip = voice
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = sc.stableavatar.jobs[-1]
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the job")
    assert job.status == "IMPORTED", job.error_text
    return job


def test_jobs_beside_the_saved_blend_and_a_project_that_moves(scene, tmp_path):
    prefs().jobs_dir = ""  # the default
    project = tmp_path / "project"
    project.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "edit.blend"))
    sc = bpy.context.scene
    job = _animate(sc)
    assert job.job_dir.startswith("//stableavatar_jobs/"), job.job_dir
    strip = compat.all_strips(sc.sequence_editor)[job.result_strip]
    assert strip.directory.startswith("//stableavatar_jobs/") and strip.directory.endswith("/frames/")
    bpy.ops.wm.save_mainfile()

    moved = tmp_path / "other-disk" / "project"
    shutil.move(str(project), str(moved))  # the project moves as a whole (another disk, a farm)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "edit.blend"))
    sc = bpy.context.scene
    (job,) = sc.stableavatar.jobs
    strip = compat.all_strips(sc.sequence_editor)[job.result_strip]
    frames = Path(bpy.path.abspath(strip.directory))
    assert frames.is_dir() and str(frames).startswith(str(moved)) and (frames / strip.elements[0].filename).is_file()
    assert bpy.ops.stableavatar.reimport_job(job_id=job.job_id) == {"FINISHED"}  # the folder is found, moved


def test_unsaved_file_jobs_move_beside_it_on_save(scene, tmp_path):
    prefs().jobs_dir = ""
    locations = sys.modules[PKG + ".blender_addon.locations"]
    sc = scene
    job = _animate(sc)
    unsaved = Path(job.job_dir)
    assert locations.within(str(unsaved), locations.unsaved_jobs_dir())  # not in the extension's folders
    assert not locations.within(str(unsaved), bpy.utils.extension_path_user(PKG, create=False))
    target = tmp_path / "shot" / "edit.blend"
    target.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(target))
    sc = bpy.context.scene
    (job,) = sc.stableavatar.jobs
    assert job.job_dir == "//stableavatar_jobs/" + unsaved.name and not unsaved.exists()
    here = Path(bpy.path.abspath(job.job_dir))
    assert (here / "frames").is_dir() and (here / "job.json").is_file()
    strip = compat.all_strips(sc.sequence_editor)[job.result_strip]
    assert Path(bpy.path.abspath(strip.directory)).resolve() == (here / "frames").resolve()
    name = job.result_strip
    bpy.ops.wm.open_mainfile(filepath=str(target))  # what was written to disk points at the moved folder
    strip = compat.all_strips(bpy.context.scene.sequence_editor)[name]
    assert Path(bpy.path.abspath(strip.directory)).resolve() == (here / "frames").resolve()


CHILD = r"""
import faulthandler; faulthandler.enable()
import json, os, shutil, sys, time
args = json.loads(sys.argv[1])
os.environ["BLENDER_USER_RESOURCES"] = args["res"]
os.environ["STABLEAVATAR_HOME"] = args["data"]
import bpy, addon_utils
PKG = "bl_ext.user_default.stableavatar"
out = {}
def step(name):
    out["step"] = name
    print(json.dumps(out), flush=True)
def repo_index():
    return [i for i, r in enumerate(bpy.context.preferences.extensions.repos) if r.module == "user_default"][0]
def install(zip_path):
    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    assert PKG in bpy.context.preferences.addons, "not enabled after install"
    p = bpy.context.preferences.addons[PKG].preferences
    p.python, p.device = args["python"], "cpu"   # checkpoints: empty = the data folder's (the "downloaded" ones)
    return sys.modules[PKG + ".operators.runtime"]
def drive(rt, cond, timeout=300):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        rt.tick(); rt.SESSION.wait(0.25)
    rt.tick()

rt = install(args["zip"])
step("installed")
out["ext_dir"] = os.path.dirname(sys.modules[PKG].__file__)
out["user_dir"] = bpy.utils.extension_path_user(PKG, create=True)
if args["audio"]:
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
    sc = bpy.context.scene
    sc.render.fps = 25
    se = sc.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences
    v = strips.new_sound("voice", args["wav"], 1, 1)
    v.frame_offset_end = v.frame_duration - 12
    se.active_strip = v
    st = sc.stableavatar
    st.image_path, st.resolution, st.width, st.height, st.steps, st.fit = args["png"], "CUSTOM", 32, 32, 1, "crop"
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = st.jobs[0]
    drive(rt, lambda: job.status in ("IMPORTED", "ERROR"))
    assert job.status == "IMPORTED", job.error_text
    bpy.ops.wm.save_mainfile()
    out["job_dir"] = bpy.path.abspath(job.job_dir)
    out["strip"] = job.result_strip
rt.stop_backend(settle=False)
step("animated")
assert bpy.ops.extensions.package_uninstall(repo_index=repo_index(), pkg_id="stableavatar") == {"FINISHED"}
out["ext_gone"] = not os.path.exists(out["ext_dir"])
out["user_dir_gone"] = not os.path.exists(out["user_dir"])
step("uninstalled")
rt = install(args["update_zip"])  # a newer version of the extension
step("reinstalled")
if args["audio"]:
    bpy.ops.wm.open_mainfile(filepath=args["blend"])
    sc = bpy.context.scene
    se = sc.sequence_editor
    s = (se.strips_all if hasattr(se, "strips_all") else se.sequences_all)[out["strip"]]
    frames = bpy.path.abspath(s.directory)
    out["frames_after"] = len([e for e in s.elements if os.path.isfile(os.path.join(frames, e.filename))])
    out["elements"] = len(s.elements)
    assert bpy.ops.stableavatar.check_backend() == {"FINISHED"}
    drive(rt, lambda: rt.SESSION.info is not None)
    out["report"] = bpy.context.preferences.addons[PKG].preferences.backend_report
    rt.stop_backend(settle=False)
step("done")
os._exit(0)  # bpy 4.2.0 can crash in its own interpreter shutdown after extension operations
"""


def _zip_with_version(tmp: Path, version: str) -> Path:
    """The extension as users get it (the built zip, backend wheel inside), at `version`."""
    src = tmp / f"src-{version}"
    built = tmp / f"built-{version}"
    built.mkdir()
    if not list((ROOT / "backend_wheel").glob("*.whl")):
        subprocess.run([BACKEND_PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                        str(ROOT / "backend_wheel"), str(ROOT)], check=True)
    first = tmp / "first"
    if not first.is_dir():
        first.mkdir()
        subprocess.run([sys.executable, str(BLENDER_EXT), "build", "--source-dir", str(ROOT), "--output-dir",
                        str(first)], check=True, capture_output=True)
    (zip_path,) = first.glob("*.zip")
    zipfile.ZipFile(zip_path).extractall(src)
    manifest = src / "blender_manifest.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', f'version = "{version}"'))
    subprocess.run([sys.executable, str(BLENDER_EXT), "build", "--source-dir", str(src), "--output-dir",
                    str(built)], check=True, capture_output=True)
    (out,) = built.glob("*.zip")
    return out


def test_blenders_own_uninstall_and_update_lose_nothing(tmp_path):
    audio = bpy.app.version >= (4, 4, 0)  # the 4.2 wheel has no audio: install/enable/uninstall smoke only
    data = tmp_path / "data"
    shutil.copytree(CHECKPOINTS, data / "checkpoints")  # "downloaded weights" in their default place
    zip_path = _zip_with_version(tmp_path, "0.1.0")
    update = _zip_with_version(tmp_path, "0.1.1")
    assert (ROOT / "backend_wheel").is_dir() and zip_path.stat().st_size < 2 * 2**20  # wheel inside, still small
    args = {"res": str(tmp_path / "res"), "data": str(data), "zip": str(zip_path), "update_zip": str(update),
            "python": BACKEND_PYTHON, "audio": audio, "blend": str(tmp_path / "project" / "edit.blend"),
            "wav": str(ROOT / "tests/data/media/case-2-speech.wav"),
            "png": str(ROOT / "tests/data/media/case-1-reference.png")}
    (tmp_path / "project").mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path))
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines and lines[-1]["step"] == "done", (proc.stdout[-3000:], proc.stderr[-3000:])
    out = lines[-1]
    assert out["ext_gone"] and out["user_dir_gone"]  # Blender really removed the extension and its user folder
    weights = sorted(p.relative_to(CHECKPOINTS) for p in CHECKPOINTS.rglob("*") if p.is_file())
    assert sorted(p.relative_to(data / "checkpoints") for p in (data / "checkpoints").rglob("*") if p.is_file()) \
        == weights
    if audio:
        job_dir = Path(out["job_dir"])
        assert job_dir.is_relative_to(tmp_path / "project") and (job_dir / "manifest.json").is_file()
        assert out["frames_after"] == out["elements"] > 0  # every frame the saved strip shows is still there
        assert "weights load from" in out["report"] and str(data / "checkpoints") in out["report"]
        assert "press Update Backend" in out["report"] and "extension 0.1.1" in out["report"], out["report"]
