"""Camera-render stills without blocking Blender: a copy of the file is rendered by a background Blender.

The copy is saved with the file as it is when Animate is pressed (`save_as_mainfile(copy=True)`: the open file
keeps its name and unsaved state), into the job's inputs. A real Blender renders it with its own binary
(`blender -b copy.blend --python-expr ...`); Blender as a Python module (tests) with its own Python. One render
runs at a time (they compete for the same CPU/GPU); the tick polls them and queues the job when the still is
there. The background Blender ends with this one (killed at exit and on unregister).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import bpy

from ..blender_addon import contract, rows
from ..blender_addon.client import tail
from . import paths

CHILD_ENV = "STABLEAVATAR_RENDER_CHILD"  # set in the background Blender: the extension stays passive there

# run inside the background Blender; argv after "--": scene camera frame out
_SCRIPT = """
import sys, bpy
scene_name, camera_name, frame, out = sys.argv[sys.argv.index("--") + 1:][:4]
scene = bpy.data.scenes[scene_name]
scene.camera = bpy.data.objects[camera_name]
scene.frame_set(int(frame))
r = scene.render
r.filepath, r.use_sequencer, r.use_compositing = out, False, False
r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
bpy.ops.render.render(write_still=True, scene=scene.name)
"""

_TASKS: list[dict] = []  # FIFO; the first one runs


def start(job, scene, camera, frame: int, out_path: str, on_done) -> None:
    """Queue a background render of `scene` from `camera` at `frame` into `out_path`; `on_done(job)` runs in the
    tick when the still is there. The copy of the file is saved now, so later edits do not change the still."""
    if camera is None:
        raise ValueError(f"no camera to render scene '{scene.name}' from: choose one in the panel")
    inputs = os.path.dirname(out_path)
    copy = os.path.join(inputs, "render-source.blend")
    paths.SAVING_COPY[0] = True
    try:
        bpy.ops.wm.save_as_mainfile(filepath=copy, copy=True, relative_remap=True, compress=False)
    finally:
        paths.SAVING_COPY[0] = False
    argv = ["--", scene.name, camera.name, str(int(frame)), out_path]
    if bpy.app.binary_path:
        cmd = [bpy.app.binary_path, "-b", copy, "--python-expr", _SCRIPT, *argv]
    else:  # Blender as a Python module: the same render in a fresh interpreter
        cmd = [sys.executable, "-c", f"import bpy; bpy.ops.wm.open_mainfile(filepath={copy!r})\n" + _SCRIPT, *argv]
    _TASKS.append({"job_id": job.job_id, "cmd": cmd, "out": out_path, "log": os.path.join(inputs, "render.log"),
                   "copy": copy, "proc": None, "on_done": on_done, "t0": 0.0})
    job.message = "rendering the still in a background Blender"
    poll()


def poll() -> bool:
    """Start the next render, finish the one that ended. Never waits. Returns whether anything changed."""
    if not _TASKS:
        return False
    task = _TASKS[0]
    if task["proc"] is None:
        env = contract.clean_env()
        env[CHILD_ENV] = "1"
        with open(task["log"], "ab") as log:
            try:
                task["proc"] = subprocess.Popen(task["cmd"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                stdin=subprocess.DEVNULL, **contract.detached())
            except OSError as exc:
                _finish(task, f"could not start a background Blender: {exc}")
                return True
        task["t0"] = time.monotonic()
        return True
    code = task["proc"].poll()
    if code is None:
        return False
    ok = code == 0 and os.path.isfile(task["out"])
    _finish(task, None if ok else f"the background render exited with code {code} and wrote no image")
    return True


def _finish(task: dict, error: str | None) -> None:
    _TASKS.remove(task)
    # ours, and not part of the job: the backend takes only its own files and the inputs in the job folder
    _remove(task["copy"])
    if not error:
        _remove(task["log"])  # a failed render keeps its log for the row's Open Log
    job = next((j for sc in bpy.data.scenes for j in getattr(getattr(sc, "stableavatar", None), "jobs", ())
                if j.job_id == task["job_id"]), None)
    if job is None or job.status != rows.PREPARING:
        return  # the row went away (or was cancelled) meanwhile
    if error:
        rows.set_error(job, error, log_path=task["log"], log_tail=tail(task["log"], 1500))
    else:
        task["on_done"](job)


def _remove(*paths: str) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def cancel(job_id: str) -> None:
    for task in list(_TASKS):
        if task["job_id"] == job_id:
            if task["proc"] is not None and task["proc"].poll() is None:
                task["proc"].kill()
                task["proc"].wait()
            _TASKS.remove(task)
            _remove(task["copy"], task["log"])


def stop_all() -> None:
    """At exit and unregister: no background Blender outlives this one."""
    for task in list(_TASKS):
        if task["proc"] is not None and task["proc"].poll() is None:
            task["proc"].kill()
    _TASKS.clear()


def pending(job_id: str) -> bool:
    return any(t["job_id"] == job_id for t in _TASKS)
