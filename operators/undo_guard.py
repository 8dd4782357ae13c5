"""Job rows that undo cannot rewind.

The rows live in the .blend (so a saved file knows its jobs), and Blender's undo restores the whole file as it
was at the last undo step: a row would go back to "queued" while its job finished long ago, or vanish while its
job runs. So every tick keeps a copy of each row here, outside the undo system, and after an undo or redo the
rows are put back as they really are. An avatar strip that the undo (or a delete) took off the timeline is
reported on its row, whose Re-import brings it back.
"""
from __future__ import annotations

import time

import bpy

from ..blender_addon import compat, rows
from ..blender_addon.jobs import TAG_JOB

MIRROR: dict[str, tuple[str, dict]] = {}  # job id -> (scene name, the row's values)
_SKIP = ("rna_type", "name")
_CHECK_EVERY_S = 2.0
_last_check = [0.0]


def _values(job) -> dict:
    return {k: getattr(job, k) for k in job.bl_rna.properties.keys() if k not in _SKIP}


def _scenes_rows():
    for scene in bpy.data.scenes:
        settings = getattr(scene, "stableavatar", None)
        if settings is not None:
            yield scene, settings.jobs


def snapshot() -> None:
    """Remember every row as it is now (the tick calls this after handling events)."""
    for scene, job_rows in _scenes_rows():
        for job in job_rows:
            MIRROR[job.job_id] = (scene.name, _values(job))
    if time.monotonic() - _last_check[0] > _CHECK_EVERY_S:
        check_strips()


def forget(job_id: str) -> None:
    MIRROR.pop(job_id, None)


def clear() -> None:
    """Another file was loaded: its rows are the truth."""
    MIRROR.clear()


def restore() -> int:
    """After undo/redo: put every row back as it was before (re-adding rows the undo removed). Returns how many
    rows changed."""
    changed = 0
    for scene, job_rows in _scenes_rows():
        present = {job.job_id: job for job in job_rows}
        for job_id, (scene_name, values) in MIRROR.items():
            if scene_name != scene.name:
                continue
            job = present.get(job_id)
            if job is None:
                job = job_rows.add()
            if _values(job) != values:
                for k, v in values.items():
                    setattr(job, k, v)
                changed += 1
    check_strips()
    return changed


def check_strips() -> None:
    """Rows whose avatar strip is no longer on the timeline say so (and keep their Re-import)."""
    _last_check[0] = time.monotonic()
    for scene, job_rows in _scenes_rows():
        imported = [j for j in job_rows if j.status == rows.IMPORTED and j.result_strip]
        if not imported:
            continue
        se = scene.sequence_editor
        shown = {s.get(TAG_JOB) for s in compat.all_strips(se)} if se is not None else set()
        for job in imported:
            if job.job_id not in shown:
                rows.strip_missing(job)
                MIRROR[job.job_id] = (scene.name, _values(job))
