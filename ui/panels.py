"""Sequencer sidebar tab "Avatar": settings for the active sound strip, the buttons, and the job list."""
from __future__ import annotations

import bpy

from ..blender_addon import compat, rows
from ..operators import runtime
from .layout import multiline, progress
from .props import PANEL_PARAMS

STATUS_ICON = {rows.PREPARING: "TIME", rows.QUEUED: "TIME", rows.RUNNING: "PLAY", rows.CANCELLING: "CANCEL",
               rows.IMPORTED: "CHECKMARK", rows.CANCELLED: "X", rows.ERROR: "ERROR"}


def _params(layout, settings, group: str):
    """The contract's parameters of one panel group, in the contract's order."""
    for name, spec in PANEL_PARAMS.items():
        if spec.panel == group:
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
            col.prop_search(st, "image_strip", se, "strips_all" if hasattr(se, "strips_all") else "sequences_all")
        else:
            col.prop(st, "camera")
        col.prop(st, "preset")
        if st.preset == "CUSTOM":
            col.prop(st, "steps")
        col.prop(st, "resolution")
        if st.resolution == "CUSTOM":
            row = col.row(align=True)
            row.prop(st, "width")
            row.prop(st, "height")
        _params(col, st, "main")
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
        layout.label(text="Backend: " + ("running" if client and client.alive else "stopped"),
                     icon="LINKED" if client and client.alive else "UNLINKED")
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
            elif job.status == rows.ERROR:
                multiline(box, job.error_text or job.message)
                box.operator("stableavatar.copy_error", icon="COPYDOWN").job_id = job.job_id
            else:
                box.label(text=job.message)


classes = (STABLEAVATAR_PT_animate, STABLEAVATAR_PT_advanced, STABLEAVATAR_PT_jobs)
