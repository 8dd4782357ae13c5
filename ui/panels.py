"""Sequencer sidebar tab "Avatar": settings for the active sound strip, the buttons, and the job list."""
from __future__ import annotations

import bpy

from ..blender_addon import compat, rows
from ..blender_addon.install_state import STATE
from ..operators import feedback, runtime
from .layout import multiline, progress
from .presets import draw_presets
from .props import PANEL_PARAMS

STATUS_ICON = {rows.PREPARING: "TIME", rows.QUEUED: "TIME", rows.RUNNING: "PLAY", rows.CANCELLING: "CANCEL",
               rows.IMPORTED: "CHECKMARK", rows.CANCELLED: "X", rows.ERROR: "ERROR"}


def _params(layout, settings, group: str):
    """The contract's parameters of one panel group, in the contract's order."""
    for name, spec in PANEL_PARAMS.items():
        if spec.panel == group and name != "seed":  # the seed is drawn with its per-take switch
            layout.prop(settings, name)


class _AvatarPanel:
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Avatar"

    @classmethod
    def poll(cls, context):
        scene = compat.sequencer_scene(context)
        return scene is not None and hasattr(scene, "stableavatar")


class STABLEAVATAR_PT_animate(_AvatarPanel, bpy.types.Panel):
    bl_label = "Animate Avatar"

    def draw(self, context):
        layout = self.layout
        scene = compat.sequencer_scene(context)
        st = scene.stableavatar
        se = scene.sequence_editor
        strip = se.active_strip if se else None
        if strip is not None and strip.type == "SOUND":
            layout.label(text=f"{strip.name}: frames {int(compat.left(strip))}-{int(compat.right(strip))}",
                         icon="SOUND")
        else:
            layout.label(text="Select a sound strip", icon="INFO")

        col = layout.column()
        col.prop(st, "still_source")
        if st.still_source == "FILE":
            col.prop(st, "image_path")
        elif st.still_source == "STRIP" and se is not None:
            col.prop(st, "image_strip_pick")
        else:
            col.prop(st, "camera")
        draw_presets(col)
        col.prop(st, "steps")
        col.prop(st, "resolution")
        if st.resolution == "CUSTOM":
            row = col.row(align=True)
            row.prop(st, "width")
            row.prop(st, "height")
        _params(col, st, "main")
        row = col.row(align=True)
        row.prop(st, "new_seed_per_take")
        if not st.new_seed_per_take:
            row.prop(st, "seed", text="")
        col.prop(st, "audio_source")
        col.prop(st, "replace_previous")
        layout.operator("stableavatar.animate", icon="PLAY")
        row = layout.row(align=True)
        row.operator("stableavatar.animate_selected")
        row.operator("stableavatar.animate_shots")
        layout.prop(st, "shots_from")


class STABLEAVATAR_PT_advanced(_AvatarPanel, bpy.types.Panel):
    bl_label = "Guidance"
    bl_parent_id = "STABLEAVATAR_PT_animate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        _params(self.layout.column(), compat.sequencer_scene(context).stableavatar, "guidance")


class STABLEAVATAR_PT_jobs(_AvatarPanel, bpy.types.Panel):
    bl_label = "Avatar Jobs"

    def draw(self, context):
        layout = self.layout
        client = runtime.SESSION.client
        alive = client is not None and client.alive
        row = layout.row(align=True)
        row.label(text="Backend: " + (("models loaded" if runtime.SESSION.models_loaded else "running, GPU free")
                                      if alive else "stopped"), icon="LINKED" if alive else "UNLINKED")
        if alive:
            row.operator("stableavatar.release_gpu", text="", icon="TRASH")
            row.operator("stableavatar.stop_backend", text="", icon="CANCEL")
        if STATE["update_needed"]:
            layout.label(text="Backend version differs: Preferences > Update Backend", icon="ERROR")
        jobs = compat.sequencer_scene(context).stableavatar.jobs
        if not len(jobs):
            layout.label(text="No jobs yet")
        for job in reversed(jobs):
            box = layout.box()
            row = box.row(align=True)
            row.label(text=f"{job.source}  (take {job.take})", icon=STATUS_ICON.get(job.status, "DOT"))
            if job.status in rows.ACTIVE:
                row.operator("stableavatar.cancel_job", text="", icon="CANCEL").job_id = job.job_id
            else:
                if job.status in (rows.ERROR, rows.CANCELLED):
                    row.operator("stableavatar.retry_job", text="", icon="FILE_REFRESH").job_id = job.job_id
                if job.status in (rows.IMPORTED, rows.CANCELLED):
                    row.operator("stableavatar.reimport_job", text="", icon="IMPORT").job_id = job.job_id
                row.operator("stableavatar.remove_job", text="", icon="X").job_id = job.job_id
            row.operator("stableavatar.open_job_folder", text="", icon="FILE_FOLDER").job_id = job.job_id
            if job.status in (rows.RUNNING, rows.QUEUED, rows.CANCELLING):
                progress(box, job.fraction, job.message)
                icon = feedback.preview_icon(job)
                if job.preview and job.status == rows.RUNNING:
                    box.template_icon(icon_value=icon, scale=6.0)
            elif job.status == rows.ERROR:
                multiline(box, job.error_text or job.message)
                box.operator("stableavatar.copy_error", icon="COPYDOWN").job_id = job.job_id
            else:
                box.label(text=job.message)
            if job.warning:
                multiline(box, "warning: " + job.warning)


classes = (STABLEAVATAR_PT_animate, STABLEAVATAR_PT_advanced, STABLEAVATAR_PT_jobs)
