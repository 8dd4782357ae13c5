"""The take list of the active sound strip: every run with its seed; use, compare, delete; reuse a seed."""
import bpy

from ..blender_addon import compat
from ..operators import takes
from .panels import _AvatarPanel


class STABLEAVATAR_PT_takes(_AvatarPanel, bpy.types.Panel):
    bl_label = "Takes"
    bl_parent_id = "STABLEAVATAR_PT_animate"

    def draw(self, context):
        scene = compat.sequencer_scene(context)
        se = scene.sequence_editor
        strip = se.active_strip if se else None
        found = takes.takes_of(scene, strip)
        if not found:
            self.layout.label(text="No takes of the active strip yet")
        for job in found:
            row = self.layout.row(align=True)
            shown = takes.on_timeline(scene, job)
            row.label(text=f"take {job.take}  seed {job.seed if job.seed >= 0 else '?'}",
                      icon="HIDE_OFF" if shown else "HIDE_ON")
            row.operator("stableavatar.take_switch", text="", icon="CHECKMARK").job_id = job.job_id
            row.operator("stableavatar.take_compare", text="", icon="DUPLICATE").job_id = job.job_id
            row.operator("stableavatar.reuse_seed", text="", icon="RECOVER_LAST").job_id = job.job_id
            row.operator("stableavatar.take_delete", text="", icon="TRASH").job_id = job.job_id


classes = (STABLEAVATAR_PT_takes,)
