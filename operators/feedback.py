"""Feedback while jobs run: the live preview image, progress in the status bar, a notice when a job ends.

The worker writes JOB_DIR/preview.jpg (replaced atomically) and sends `preview`; the tick loads it into a
preview collection that the panel draws. The status bar gets a progress bar for the running job (drawn from the
rows, no state of its own). Notices go through an operator's report, so they show in the status bar and the Info
log like Blender's own messages.
"""
from __future__ import annotations

import bpy
import bpy.utils.previews
from bpy.props import StringProperty

from ..blender_addon import rows
from . import still_render

NOTICES: list[str] = []     # the latest notices (newest last), also shown in the panel
_PREVIEWS = {"collection": None}


def notify(text: str) -> None:
    NOTICES.append(text)
    del NOTICES[:-20]
    try:
        bpy.ops.stableavatar.notify(message=text)
    except (RuntimeError, AttributeError):  # no context to report in (the add-on is being disabled)
        pass


def job_ended(job) -> None:
    if job.status == rows.IMPORTED:
        notify(f"Avatar ready: {job.message}" + (f" ({job.warning})" if job.warning else ""))
    elif job.status == rows.ERROR:
        notify(f"Avatar job '{job.source}' failed: {job.message}")
    elif job.status == rows.CANCELLED:
        notify(f"Avatar job '{job.source}' {job.message}")


def _collection():
    if _PREVIEWS["collection"] is None:
        _PREVIEWS["collection"] = bpy.utils.previews.new()
    return _PREVIEWS["collection"]


def load_preview(job) -> None:
    """(Re)load the job's preview.jpg: the worker replaced it with the newest decoded frame."""
    if not job.preview:
        return
    pc = _collection()
    if job.job_id in pc:
        pc[job.job_id].reload()
    else:
        pc.load(job.job_id, job.preview, "IMAGE")


def preview_icon(job) -> int:
    """The icon id of the job's live preview (0 when there is none)."""
    pc = _PREVIEWS["collection"]
    return pc[job.job_id].icon_id if pc is not None and job.job_id in pc else 0


def running_job():
    for scene in bpy.data.scenes:
        for job in getattr(getattr(scene, "stableavatar", None), "jobs", ()):
            if job.status in (rows.RUNNING, rows.CANCELLING):
                return job
    return None


def draw_status(self, context):
    """Appended to the status bar: the running avatar job's progress."""
    job = running_job()
    if job is None:
        return
    from ..ui.layout import progress
    row = self.layout.row(align=True)
    row.label(text=f"Avatar: {job.source}", icon="SOUND")
    progress(row, job.fraction, f"{int(job.fraction * 100)}% {job.phase or ''}")


def poll_tasks() -> None:
    still_render.poll()


class STABLEAVATAR_OT_notify(bpy.types.Operator):
    """Show a StableAvatar notice in the status bar and the Info log"""
    bl_idname = "stableavatar.notify"
    bl_label = "StableAvatar Notice"
    bl_options = {"INTERNAL"}

    message: StringProperty()

    def execute(self, context):
        self.report({"INFO"}, self.message)
        return {"FINISHED"}


def register():
    bpy.types.STATUSBAR_HT_header.append(draw_status)


def unregister():
    bpy.types.STATUSBAR_HT_header.remove(draw_status)
    if _PREVIEWS["collection"] is not None:
        bpy.utils.previews.remove(_PREVIEWS["collection"])
        _PREVIEWS["collection"] = None


classes = (STABLEAVATAR_OT_notify,)
