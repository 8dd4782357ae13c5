"""Putting a finished job's frames on the timeline as an image-sequence strip.

The frame maths (which 25 fps frame each scene frame shows) is `blender_addon/timing.py`; where the strip goes
comes from the job folder's placement record (`blender_addon/jobs.py`), moved with the source strip if the edit
moved it while the job ran. Each import is its own undo step.
"""
from __future__ import annotations

import os

import bpy

from ..blender_addon import compat, jobs, rows, timing
from ..blender_addon.jobs import TAG_JOB, TAG_SEED, TAG_SOURCE, TAG_SOURCE_ID, TAG_TAKE
from . import paths


def free_channel(se, start: int, end: int, above: int) -> int:
    """Lowest channel above `above` with nothing in [start, end)."""
    strips = list(compat.top_strips(se))
    for ch in range(above + 1, 129):
        if not any(s.channel == ch and compat.left(s) < end and compat.right(s) > start for s in strips):
            return ch
    raise RuntimeError("no free channel above %d for frames %d-%d" % (above, start, end))


def find_source(se, pl: jobs.Placement):
    """The strip the job was made from, as it is now: by its tag (same name first, a duplicate carries the tag
    too), else by name. None when it was deleted (or the job came from camera markers)."""
    strips = list(compat.all_strips(se))
    if pl.source_id:
        tagged = [s for s in strips if s.get(TAG_SOURCE_ID) == pl.source_id]
        return next((s for s in tagged if s.name == pl.source), tagged[0] if tagged else None)
    return None


def same_source(strip, source: str, source_id: str) -> bool:
    """Whether `strip` (one this add-on made) shows a take of this source: by the source's tag when both have
    one, else by the source's name."""
    sid = strip.get(TAG_SOURCE_ID)
    return sid == source_id if source_id and sid is not None else strip.get(TAG_SOURCE) == source


def result_strips(se, source: str = "", source_id: str = "", job_id: str = ""):
    """Strips this add-on made: of one job, or of one source."""
    return [s for s in compat.all_strips(se) if s.get(TAG_JOB) is not None and
            (s.get(TAG_JOB) == job_id if job_id else same_source(s, source, source_id))]


def _placement_now(se, pl: jobs.Placement) -> tuple[jobs.Placement, str]:
    """Where the result goes now: moved with its source; a warning when that is not where it belongs."""
    if not pl.source_id:
        return pl, ""
    src = find_source(se, pl)
    if src is None:
        return pl, (f"the strip '{pl.source}' was deleted while the job ran: the avatar is placed where it was "
                    f"(frames {pl.frame_start}-{pl.frame_start + pl.n_scene_frames})")
    left, right = compat.heard_range(src)
    moved, warning = pl.follow(int(left), int(right))
    return jobs.Placement(**{**moved.__dict__, "channel_above": compat.top_channel(src)}), warning


def import_result(scene, job, done_event: dict | None = None, replace: list | None = None, stack: bool = False):
    """Add the result as a new image-sequence strip; returns it (None on failure: the row says why).
    Existing strips are removed only when asked: `replace` (strips to swap out), or the placement's "Replace
    previous take", which removes this source's most recent earlier take and nothing else.
    stack: place it above the source's other takes (to compare) even when their channel is free."""
    try:
        job_dir = paths.job_path(job)
        pl = jobs.read_placement(job_dir)
        frames_dir = (done_event or {}).get("frames_dir") or jobs.path(job_dir, "frames")
        names = jobs.frame_files(frames_dir)
        if not names:
            raise RuntimeError(f"the backend reported done but {frames_dir} holds no PNG frames")
        target = bpy.data.scenes.get(pl.scene) or scene
        se = target.sequence_editor or target.sequence_editor_create()
        pl, warning = _placement_now(se, pl)
        fps = timing.scene_fps(pl.fps, pl.fps_base)
        indices = timing.element_indices(pl.n_scene_frames, len(names), fps)
        start, end = pl.frame_start, pl.frame_start + len(indices)
        ours = result_strips(se, pl.source, pl.source_id)
        old = list(replace or [])
        if replace is None and pl.replace_previous:
            earlier = [s for s in ours if s.get(TAG_JOB) != job.job_id]
            old = sorted(earlier, key=lambda s: (int(s.get(TAG_TAKE, 0)), s.name))[-1:]
        above = max([pl.channel_above] + ([s.channel for s in ours if s not in old] if stack else []))
        prefetch = getattr(se, "use_prefetch", None)
        if prefetch:
            se.use_prefetch = False  # the prefetch thread may read strips while we add/remove them
        try:
            for s in old:
                compat.remove_strip(se, s)
            channel = free_channel(se, start, end, above)
            name = f"{pl.source} avatar" + (f" take {pl.take}" if pl.take > 1 else "")
            strip = compat.new_image_strip(se, name, os.path.join(frames_dir, names[indices[0]]), channel, start)
            for i in indices[1:]:
                strip.elements.append(names[i])
            strip.directory = paths.stored(os.path.join(os.path.abspath(frames_dir), ""))
            strip[TAG_JOB], strip[TAG_SOURCE], strip[TAG_TAKE] = job.job_id, pl.source, int(pl.take)
            if pl.source_id:
                strip[TAG_SOURCE_ID] = pl.source_id
            if job.seed >= 0:
                strip[TAG_SEED] = int(job.seed)
        finally:
            if prefetch:
                se.use_prefetch = True
        job.result_strip = strip.name
        rows.imported(job, strip.name, channel, len(indices), warning=warning)
        _undo_step(f"Import {strip.name}")
        return strip
    except Exception as exc:  # noqa: BLE001 - any failure must land in the row, not the console
        import traceback
        rows.set_error(job, f"import failed: {exc}", log_tail=traceback.format_exc())
        return None


def _undo_step(message: str) -> None:
    """Make the import its own undo step, so undoing a later edit does not take the avatar with it."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:  # no undo stack (some background contexts): nothing to separate
        pass
