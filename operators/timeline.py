"""Putting a finished job's frames on the timeline as an image-sequence strip.

The frame maths (which 25 fps frame each scene frame shows) is `blender_addon/timing.py`; where the strip goes
comes from the job folder's placement record (`blender_addon/jobs.py`).
"""
from __future__ import annotations

import os

import bpy

from ..blender_addon import compat, jobs, rows, timing

TAG_JOB = "stableavatar_job"
TAG_SOURCE = "stableavatar_source"


def free_channel(se, start: int, end: int, above: int) -> int:
    """Lowest channel above `above` with nothing in [start, end)."""
    strips = list(compat.top_strips(se))
    for ch in range(above + 1, 129):
        if not any(s.channel == ch and compat.left(s) < end and compat.right(s) > start for s in strips):
            return ch
    raise RuntimeError("no free channel above %d for frames %d-%d" % (above, start, end))


def import_result(scene, job, done_event: dict | None = None):
    """Add the result as a new image-sequence strip. Existing strips are only removed when the user asked
    to replace this source's previous take, and then only strips this add-on made for that source."""
    try:
        pl = jobs.read_placement(job.job_dir)
        frames_dir = (done_event or {}).get("frames_dir") or jobs.path(job.job_dir, "frames")
        names = jobs.frame_files(frames_dir)
        if not names:
            raise RuntimeError(f"the backend reported done but {frames_dir} holds no PNG frames")
        target = bpy.data.scenes.get(pl.scene) or scene
        se = target.sequence_editor or target.sequence_editor_create()
        fps = timing.scene_fps(pl.fps, pl.fps_base)
        indices = timing.element_indices(pl.n_scene_frames, len(names), fps)
        start, end = pl.frame_start, pl.frame_start + len(indices)

        old = []
        if pl.replace_previous:
            old = [s for s in compat.all_strips(se)
                   if s.get(TAG_SOURCE) == pl.source and s.get(TAG_JOB) not in (None, job.job_id)]
        prefetch = getattr(se, "use_prefetch", None)
        if prefetch:
            se.use_prefetch = False  # the prefetch thread may read strips while we add/remove them
        try:
            for s in old:
                compat.remove_strip(se, s)
            channel = free_channel(se, start, end, pl.channel_above)
            name = f"{pl.source} avatar" + (f" take {pl.take}" if pl.take > 1 else "")
            strip = compat.new_image_strip(se, name, os.path.join(frames_dir, names[indices[0]]), channel, start)
            for i in indices[1:]:
                strip.elements.append(names[i])
            strip[TAG_JOB] = job.job_id
            strip[TAG_SOURCE] = pl.source
        finally:
            if prefetch:
                se.use_prefetch = True
        job.result_strip = strip.name
        rows.imported(job, strip.name, channel, len(indices))
    except Exception as exc:  # noqa: BLE001 - any failure must land in the row, not the console
        import traceback
        rows.set_error(job, f"import failed: {exc}", log_tail=traceback.format_exc())
