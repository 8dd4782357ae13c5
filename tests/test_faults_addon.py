"""Fault class 5, the add-on gets stuck: a backend that cannot start (not executable, no backend installed,
crashing while importing) ends the job row with the real reason and a hint that fits, and the timer tick never
raises, whatever lands on the event queue. Real Blender (bpy), the real operator, the real queue."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "blender"))
import blender_env  # noqa: E402,F401  (first: points Blender at a temporary user folder before bpy loads)

import bpy  # noqa: E402
import pytest  # noqa: E402

from blender_env import ROOT, add_voice, prefs, runtime, wait_for  # noqa: E402
from blender_env import addon, scene  # noqa: E402,F401  (pytest fixtures)

pytestmark = [pytest.mark.blender, pytest.mark.timeout(300)]


def _script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def _not_executable(tmp):
    return _script(tmp / "python", f'exec "{sys.executable}" "$@"', mode=0o644)


def _no_backend(tmp):
    base = Path(sys.base_prefix) / "bin" / "python3"
    if subprocess.run([base, "-I", "-c", "import stableavatar"], capture_output=True).returncode == 0:
        pytest.skip(f"{base} has stableavatar installed")
    return _script(tmp / "python", f'exec "{base}" -I "$@"')  # a plain Python: no backend in it


def _crashes_at_import(tmp):
    """The real backend with one module damaged, as a half-finished update leaves it."""
    pkg = tmp / "site" / "stableavatar"
    shutil.copytree(ROOT / "backend" / "stableavatar", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "cli_args.py").write_text("def broken(:\n")
    return _script(tmp / "python", f'PYTHONPATH="{tmp / "site"}" exec "{sys.executable}" "$@"')


def _not_a_program(tmp):
    path = tmp / "python"
    path.write_bytes(b"\x7fELF\x02garbage")  # executable bits, but nothing the system can run
    path.chmod(0o755)
    return path


STARTS = {  # Backend Python -> the words the row's message must hold, and its hint's
    "not executable": (_not_executable, "permission denied (not executable)", "chmod +x"),
    "not a program": (_not_a_program, "is not a program", "Install Backend"),
    "exits at once": (lambda tmp: _script(tmp / "python", "exit 3"), "exited (code 3) before it was ready",
                      "Backend Python"),
    "no backend installed": (_no_backend, "no StableAvatar backend installed", "Install Backend"),
    "crashes at import": (_crashes_at_import, "crashed while starting (SyntaxError", "reinstall the backend"),
}


@pytest.mark.parametrize("case", list(STARTS))
def test_a_backend_that_cannot_start_ends_the_row_with_the_reason(case, scene, tmp_path):
    make, words, hint = STARTS[case]
    prefs().python = str(make(tmp_path))
    voice = add_voice(scene)
    scene.sequence_editor.active_strip = voice
    try:
        bpy.ops.stableavatar.animate()
    except RuntimeError as exc:  # the operator's ERROR report (headless Blender raises it): one line, no traceback
        assert "Traceback" not in str(exc) and words in str(exc), exc
    (job,) = scene.stableavatar.jobs
    wait_for(lambda: job.status == "ERROR", timeout=120, what="the row to end")
    assert words in job.message, (job.message, job.error_text[:1500])
    assert hint in job.error_text and "resume it from its last step" not in job.error_text
    runtime().stop_backend(settle=False)


def _row(scene, tmp: Path, job_id: str):
    job = scene.stableavatar.jobs.add()
    job.job_id, job.job_dir, job.source, job.status = job_id, str(tmp / job_id), "v", "RUNNING"
    return job


MALFORMED = [
    None, "not a dict", 42, [], {}, {"type": None}, {"type": 5}, {"type": ["progress"]},
    {"type": "progress", "id": "r1", "phase": ["x"], "fraction": "half", "step": "3", "steps": None, "window": {},
     "windows": -1, "eta_s": "inf", "frames_written": [], "frames_total": 1e999},
    {"type": "progress", "id": ["r1"]}, {"type": "progress", "id": 12}, {"type": "progress", "id": {"r1": 1}},
    {"type": "accepted", "id": "r1", "position": [1], "seed": "x", "resumed": "yes", "from_step": {}},
    {"type": "preview", "id": "r1", "path": 5, "frame": "x"},
    {"type": "error", "id": "r2", "category": 5, "message": {"a": 1}, "hint": ["x"], "traceback": 7},
    {"type": "error", "message": {"a": 1}, "hint": 3, "traceback": ["x"]},
    {"type": "done", "id": "r3", "frames_dir": ["x"], "frames": "many", "video": 5},
    {"type": "done", "id": "r5"}, {"type": "cancelled", "id": "r4", "resumable": "x", "reason": 5},
    {"type": "ready", "capabilities": [1], "versions": "x", "weights": 5, "gpu": "x", "memory_mode": []},
    {"type": "exit", "returncode": "x", "log_tail": 7}, {"type": "task", "message": {"x": 1}},
    {"type": "log", "message": None}, {"type": "status", "queue": 5}, {"type": "bye", "reason": None},
    {"type": "progress", "id": "r1", "_client": "someone else"},
]


def test_tick_never_raises_on_any_event(scene, tmp_path):
    rt = runtime()
    rt.stop_backend(settle=False)
    rows = {i: _row(scene, tmp_path, i) for i in ("r1", "r2", "r3", "r4", "r5")}
    for event in MALFORMED:
        rt.SESSION.events.put(event)
        assert isinstance(rt.tick(), float), event  # a timer that raises is unregistered by Blender
    statuses = {i: r.status for i, r in rows.items()}
    assert set(statuses.values()) <= {"QUEUED", "RUNNING", "ERROR", "CANCELLED", "IMPORTED"}, statuses
    assert statuses["r3"] == "ERROR" and statuses["r2"] == "ERROR"  # done without frames, error: both told
    assert isinstance(rt.tick(), float)
