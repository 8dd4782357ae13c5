"""Per-job buttons: cancel, retry, re-import, open folder, copy error, remove row."""

import os

import bpy
from bpy.props import StringProperty

from ..blender_addon import jobs, rows
from . import paths, runtime, timeline, undo_guard


class _JobOp:
    """An operator on one job row: `run(context, scene, job)` returns True when it did something."""
    job_id: StringProperty()

    def execute(self, context):
        scene, job = runtime.find_job(self.job_id)
        if job is None:
            self.report({"ERROR"}, f"no job {self.job_id}")
            return {"CANCELLED"}
        return {"FINISHED"} if self.run(context, scene, job) else {"CANCELLED"}


class STABLEAVATAR_OT_cancel_job(_JobOp, bpy.types.Operator):
    """Stop this job (the backend stops within one denoising step)"""
    bl_idname = "stableavatar.cancel_job"
    bl_label = "Cancel Job"

    def run(self, context, scene, job):
        runtime.cancel(job)
        return True


class STABLEAVATAR_OT_retry_job(_JobOp, bpy.types.Operator):
    """Run this job again from its folder (it resumes from its last finished step)"""
    bl_idname = "stableavatar.retry_job"
    bl_label = "Retry Job"

    def run(self, context, scene, job):
        if job.status in rows.ACTIVE:
            return False
        job.error_text = ""
        runtime.submit(job)
        return True


class STABLEAVATAR_OT_reimport_job(_JobOp, bpy.types.Operator):
    """Add this job's frames to the timeline again as a new strip (nothing existing is changed)"""
    bl_idname = "stableavatar.reimport_job"
    bl_label = "Re-import Result"

    def run(self, context, scene, job):
        if not jobs.finished_result(paths.job_path(job)):
            self.report({"ERROR"}, f"job {job.job_id} has no finished frames in {paths.job_path(job)}")
            return False
        timeline.import_result(scene, job)
        if job.status == rows.ERROR:
            self.report({"ERROR"}, job.message)
            return False
        return True


class STABLEAVATAR_OT_open_job_folder(_JobOp, bpy.types.Operator):
    """Open the job's folder (audio, still, frames, log) in the file browser"""
    bl_idname = "stableavatar.open_job_folder"
    bl_label = "Open Job Folder"

    def run(self, context, scene, job):
        if not os.path.isdir(paths.job_path(job)):
            return False
        bpy.ops.wm.path_open(filepath=paths.job_path(job))
        return True


class STABLEAVATAR_OT_copy_error(_JobOp, bpy.types.Operator):
    """Copy the full error report of this job (message, hint, traceback, log) to the clipboard"""
    bl_idname = "stableavatar.copy_error"
    bl_label = "Copy Error"

    def run(self, context, scene, job):
        context.window_manager.clipboard = job.error_text or job.message
        self.report({"INFO"}, "error report copied")
        return True


class STABLEAVATAR_OT_remove_job(_JobOp, bpy.types.Operator):
    """Remove this row from the list (its folder and any imported strip stay)"""
    bl_idname = "stableavatar.remove_job"
    bl_label = "Remove Job Row"

    def run(self, context, scene, job):
        if job.status in rows.ACTIVE:
            runtime.cancel(job)
        job_rows = scene.stableavatar.jobs
        job_rows.remove(next(i for i, j in enumerate(job_rows) if j.job_id == self.job_id))
        undo_guard.forget(self.job_id)  # removed on purpose: an undo brings it back, not the guard
        return True


classes = (STABLEAVATAR_OT_cancel_job, STABLEAVATAR_OT_retry_job, STABLEAVATAR_OT_reimport_job,
           STABLEAVATAR_OT_open_job_folder, STABLEAVATAR_OT_copy_error, STABLEAVATAR_OT_remove_job)
