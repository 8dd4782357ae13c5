"""Takes: every run of a source strip is a take with its own seed and job folder. Switch which take is on the
timeline, stack one above to compare, or delete a take with its files."""
from __future__ import annotations

import os
import shutil

import bpy
from bpy.props import StringProperty

from ..blender_addon import compat, contract, jobs, rows
from ..blender_addon.jobs import TAG_SOURCE_ID
from . import paths, runtime, timeline, undo_guard


def takes_of(scene, strip) -> list:
    """The finished job rows made from `strip` (by its tag, else by name), newest first."""
    sid = strip.get(TAG_SOURCE_ID) if strip is not None else None
    out = [j for j in scene.stableavatar.jobs if strip is not None and j.status in (rows.IMPORTED, rows.CANCELLED)
           and (j.source_id == sid if sid and j.source_id else j.source == strip.name)]
    return sorted(out, key=lambda j: j.take, reverse=True)


def on_timeline(scene, job) -> bool:
    se = scene.sequence_editor
    return se is not None and bool(timeline.result_strips(se, job_id=job.job_id))


class _TakeOp:
    job_id: StringProperty()

    def execute(self, context):
        scene, job = runtime.find_job(self.job_id)
        if job is None or not jobs.finished_result(paths.job_path(job)):
            self.report({"ERROR"}, f"take {self.job_id} has no finished frames")
            return {"CANCELLED"}
        return self.run(scene, job)


class STABLEAVATAR_OT_take_switch(_TakeOp, bpy.types.Operator):
    """Show this take on the timeline in place of the source's other takes"""
    bl_idname = "stableavatar.take_switch"
    bl_label = "Use This Take"

    def run(self, scene, job):
        se = scene.sequence_editor
        others = [s for s in timeline.result_strips(se, job.source, job.source_id)
                  if s.get(jobs.TAG_JOB) != job.job_id]
        if on_timeline(scene, job):
            for s in others:
                compat.remove_strip(se, s)
            timeline._undo_step(f"Use take {job.take}")
            return {"FINISHED"}
        return {"FINISHED"} if timeline.import_result(scene, job, replace=others) else {"CANCELLED"}


class STABLEAVATAR_OT_take_compare(_TakeOp, bpy.types.Operator):
    """Add this take above the source's other takes (mute or unmute it to compare)"""
    bl_idname = "stableavatar.take_compare"
    bl_label = "Compare Take"

    def run(self, scene, job):
        return {"FINISHED"} if timeline.import_result(scene, job, replace=[], stack=True) else {"CANCELLED"}


class STABLEAVATAR_OT_take_delete(_TakeOp, bpy.types.Operator):
    """Delete this take: its strips, its row and its job folder (only the files the add-on and backend made)"""
    bl_idname = "stableavatar.take_delete"
    bl_label = "Delete Take"

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def run(self, scene, job):
        se = scene.sequence_editor
        for s in timeline.result_strips(se, job_id=job.job_id) if se is not None else []:
            compat.remove_strip(se, s)
        left = delete_job_files(paths.job_path(job))
        undo_guard.forget(job.job_id)
        job_rows = scene.stableavatar.jobs
        job_rows.remove(next(i for i, j in enumerate(job_rows) if j.job_id == self.job_id))
        if left:
            self.report({"WARNING"}, f"kept files the add-on did not make: {', '.join(left[:5])}")
        timeline._undo_step("Delete take")
        return {"FINISHED"}


def delete_job_files(job_dir: str) -> list[str]:
    """Remove what a job folder holds by its known names (contract.JOB_FILES) and the folder if that empties
    it. Anything else is kept and returned: never delete a file we did not create."""
    if not os.path.isdir(job_dir) or not os.path.isfile(jobs.path(job_dir, "request")):
        return [job_dir] if os.path.isdir(job_dir) else []
    for name in contract.JOB_FILES.values():
        p = os.path.join(job_dir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)
    left = sorted(os.listdir(job_dir))
    if not left:
        os.rmdir(job_dir)
    return left


classes = (STABLEAVATAR_OT_take_switch, STABLEAVATAR_OT_take_compare, STABLEAVATAR_OT_take_delete)


class STABLEAVATAR_OT_reuse_seed(bpy.types.Operator):
    """Use this take's seed for the next run (switches off New seed per take), to redo it exactly"""
    bl_idname = "stableavatar.reuse_seed"
    bl_label = "Reuse Seed"

    job_id: StringProperty()

    def execute(self, context):
        scene, job = runtime.find_job(self.job_id)
        if job is None or job.seed < 0:
            self.report({"ERROR"}, "this take's seed is not known")
            return {"CANCELLED"}
        st = scene.stableavatar
        st.new_seed_per_take, st.seed = False, job.seed
        return {"FINISHED"}


classes += (STABLEAVATAR_OT_reuse_seed,)
