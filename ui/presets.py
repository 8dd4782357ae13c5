"""Generation presets through Blender's preset system: Draft and Final ship with the extension, Add Preset saves
your own (Blender's presets folder, `scripts/presets/stableavatar/`), the menu lists both."""
import os

import bpy
from bl_operators.presets import AddPresetBase

from .props import PANEL_PARAMS

SUBDIR = "stableavatar"
BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets", SUBDIR)
# what a preset sets: quality and look, not the content of a take (prompt, seed) nor its inputs
VALUES = ["settings.steps", "settings.resolution", "settings.width", "settings.height"] + [
    f"settings.{n}" for n in PANEL_PARAMS if n not in ("prompt", "seed", "allow_silent")]


class STABLEAVATAR_MT_presets(bpy.types.Menu):
    bl_label = "Avatar Presets"
    preset_subdir = SUBDIR
    preset_operator = "script.execute_preset"

    def draw(self, context):
        # the bundled presets and the user's own (Menu.draw_preset lists only Blender's preset folders)
        self.path_menu([BUNDLED] + bpy.utils.preset_paths(SUBDIR), self.preset_operator,
                       props_default={"menu_idname": self.bl_idname}, filter_ext=lambda ext: ext.lower() == ".py")


class STABLEAVATAR_OT_preset_add(AddPresetBase, bpy.types.Operator):
    """Save the current settings as a preset, or remove one"""
    bl_idname = "stableavatar.preset_add"
    bl_label = "Add Avatar Preset"
    preset_menu = "STABLEAVATAR_MT_presets"
    preset_subdir = SUBDIR
    preset_defines = ["settings = (getattr(bpy.context, 'sequencer_scene', None) or bpy.context.scene).stableavatar"]
    preset_values = VALUES


def draw_presets(layout):
    row = layout.row(align=True)
    row.menu("STABLEAVATAR_MT_presets", text=STABLEAVATAR_MT_presets.bl_label)
    row.operator("stableavatar.preset_add", text="", icon="ADD")
    row.operator("stableavatar.preset_add", text="", icon="REMOVE").remove_active = True


classes = (STABLEAVATAR_MT_presets, STABLEAVATAR_OT_preset_add)
