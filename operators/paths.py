"""Where job folders go and how the .blend refers to them (blend-relative when the file is saved).

Defaults (`blender_addon/locations.py`): beside the saved .blend in `//stableavatar_jobs/`, or the data folder's
`jobs/unsaved/` for a file never saved. On save, the idle job folders of an unsaved file move beside it and
every reference (job rows, result strips) is re-pathed; running ones follow on a later save. A Jobs folder
set in the preferences is used as given (`//` relative paths are resolved against the .blend).
"""
from __future__ import annotations

import os
import shutil

import bpy

from ..blender_addon import compat, locations, rows
from ..blender_addon.jobs import TAG_JOB
from ..preferences import prefs

SAVING_COPY = [False]  # a copy of the file is being saved (for a background render): nothing to relocate




def _setting() -> str:
    return prefs().jobs_dir.strip()


def wants_relative() -> bool:
    """Project-relative job folders: the default, or a `//` setting (an absolute setting stays absolute)."""
    s = _setting()
    return not s or s.startswith("//")


def jobs_root(blend_path: str | None = None) -> str:
    """The folder new job folders go into for the file at `blend_path` (default: the open file)."""
    blend = bpy.data.filepath if blend_path is None else blend_path
    s = _setting() or locations.JOBS_BESIDE_BLEND
    if s.startswith("//"):
        if not blend:
            return locations.unsaved_jobs_dir()
        return os.path.normpath(os.path.join(os.path.dirname(blend), s[2:]))
    return os.path.normpath(os.path.abspath(os.path.expanduser(s)))


def job_path(job) -> str:
    """The job's folder as an absolute path (rows may hold a blend-relative one)."""
    return os.path.normpath(bpy.path.abspath(job.job_dir)) if job.job_dir else ""


def stored(path: str, blend_path: str | None = None) -> str:
    """How the .blend should refer to `path`: blend-relative for project job folders of a saved file
    (a trailing separator, as strip directories have, is kept)."""
    blend = bpy.data.filepath if blend_path is None else blend_path
    if not blend or not wants_relative() or locations.within(path, locations.unsaved_jobs_dir()):
        return path
    try:
        rel = os.path.relpath(path, os.path.dirname(blend)).replace(os.sep, "/")
    except ValueError:  # another drive on Windows
        return path
    return "//" + rel + ("/" if path.endswith(("/", os.sep)) else "")


def _strips_of(scene, job_id: str):
    se = scene.sequence_editor
    if se is None:
        return []
    return [s for s in compat.all_strips(se) if s.get(TAG_JOB) == job_id and s.type == "IMAGE"]


def relocate_for_save(target: str) -> list[str]:
    """Before the file is written to `target`: move the idle job folders of an unsaved file beside it and point
    rows and strips at where the folders are now. Returns a line per folder that could not be moved."""
    same_file = bool(bpy.data.filepath) and os.path.normpath(bpy.data.filepath) == os.path.normpath(target)
    problems = []
    for scene in bpy.data.scenes:
        settings = getattr(scene, "stableavatar", None)
        for job in (settings.jobs if settings is not None else ()):
            here = job_path(job)
            if not here:
                continue
            if locations.within(here, locations.unsaved_jobs_dir()) and wants_relative():
                if job.status in rows.ACTIVE:
                    continue  # the backend writes there now: it moves on a later save
                dest = os.path.join(jobs_root(target), os.path.basename(here))
                try:
                    if os.path.isdir(here) and not os.path.exists(dest):
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        shutil.move(here, dest)
                except OSError as exc:
                    problems.append(f"job {job.job_id}: could not move {here} to {dest}: {exc}")
                    continue
                for strip in _strips_of(scene, job.job_id):
                    frames = os.path.join(dest, os.path.relpath(bpy.path.abspath(strip.directory), here), "")
                    # a Save As remaps relative paths itself, so give it absolute ones to make relative
                    strip.directory = stored(frames, target) if same_file else frames
                here = dest
            job.job_dir = stored(here, target)
    return problems
