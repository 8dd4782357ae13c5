"""Data kept in the .blend: per-scene settings and the job list.

The generation parameters shown in the panel are built from the contract's specs (type, default, range,
choices, help), so a parameter added there appears here without editing this file.
"""
import json

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from ..blender_addon import contract, rows

INT_MAX = 2**31 - 1  # Blender's IntProperty is 32-bit
PRESET_STEPS = {"DRAFT": 10, "FINAL": contract.PARAMS["steps"].default}
PANEL_PARAMS = {n: s for n, s in contract.PARAMS.items() if s.panel}


def param_property(spec: contract.Spec):
    """The bpy property for a contract spec."""
    kw = {"name": spec.ui_label, "description": spec.help, "default": spec.ui_default}
    if spec.choices:
        items = list(spec.choice_help) or [(c, c.replace("-", " ").title(), "") for c in spec.choices]
        return EnumProperty(items=items, **kw)
    if spec.type is bool:
        return BoolProperty(**kw)
    if spec.type is int:
        return IntProperty(min=int(spec.min), max=min(int(spec.max), INT_MAX), **kw)
    if spec.type is float:
        return FloatProperty(min=spec.min, max=spec.max, **kw)
    return StringProperty(**kw)


class STABLEAVATAR_PG_job(bpy.types.PropertyGroup):
    job_id: StringProperty(name="Job id")
    job_dir: StringProperty(name="Job folder", subtype="DIR_PATH")
    source: StringProperty(name="Source strip")
    status: EnumProperty(name="Status", items=[(s, s.title(), "") for s in rows.STATUSES], default=rows.PREPARING)
    phase: StringProperty(name="Phase")
    fraction: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    step: IntProperty()
    steps: IntProperty()
    window: IntProperty()
    windows: IntProperty()
    eta_s: FloatProperty(default=-1.0)
    seed: IntProperty(name="Seed", default=-1, description="The seed the job ran with (-1: not known yet)")
    take: IntProperty(default=1)
    result_strip: StringProperty(name="Result strip")
    message: StringProperty(name="Message")
    error_text: StringProperty(name="Error report")
    farm_batch: StringProperty(name="Farm batch", description="The farm batch the job went out with (empty: the "
                                                              "local backend)")
    request: StringProperty(name="Request", description="The submit request, kept until the backend accepts it "
                                                        "(then the job folder's job.json is the record)")

    def pending_request(self) -> dict | None:
        try:
            return json.loads(self.request) if self.request else None
        except ValueError:
            return None


class STABLEAVATAR_PG_settings(bpy.types.PropertyGroup):
    still_source: EnumProperty(name="Still", items=[
        ("FILE", "Image File", "Use an image file as the character still"),
        ("STRIP", "Image Strip", "Use the image of an image strip"),
        ("CAMERA", "Camera Render", "Render the scene from a camera at the sound strip's first frame"),
    ], default="FILE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH")
    image_strip: StringProperty(name="Image strip")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=lambda self, ob: ob.type == "CAMERA")
    preset: EnumProperty(name="Preset", items=[
        ("DRAFT", "Draft", f"{PRESET_STEPS['DRAFT']} denoising steps: quick look"),
        ("FINAL", "Final", f"The official {PRESET_STEPS['FINAL']} denoising steps"),
        ("CUSTOM", "Custom", "Choose the step count"),
    ], default="DRAFT")
    steps: IntProperty(name="Steps", default=25, min=int(contract.PARAMS["steps"].min),
                       max=int(contract.PARAMS["steps"].max))
    resolution: EnumProperty(name="Resolution", items=[
        ("512x512", "512 x 512", "Square"), ("480x832", "480 x 832", "Portrait"),
        ("832x480", "832 x 480", "Landscape"), ("CUSTOM", "Custom", "Any multiple of 16"),
    ], default="512x512")
    width: IntProperty(name="Width", default=contract.PARAMS["width"].default, min=int(contract.PARAMS["width"].min),
                       max=int(contract.PARAMS["width"].max), step=contract.RESOLUTION_MULTIPLE)
    height: IntProperty(name="Height", default=contract.PARAMS["height"].default,
                        min=int(contract.PARAMS["height"].min), max=int(contract.PARAMS["height"].max),
                        step=contract.RESOLUTION_MULTIPLE)
    audio_source: EnumProperty(name="Audio", items=[
        ("STRIP", "Strip Only", "Exactly what the sound strip plays (trims, offset, volume)"),
        ("MIXDOWN", "Mixdown", "Everything audible over the strip's range"),
    ], default="STRIP")
    replace_previous: BoolProperty(name="Replace previous take",
                                   description="Remove this strip's earlier avatar take when the new one arrives")
    shots_from: EnumProperty(name="Shots", items=[
        ("SCENE_STRIPS", "Scene Strips", "Each scene strip (selected ones, or all) is a shot"),
        ("CAMERA_MARKERS", "Camera Markers", "Each marker bound to a camera starts a shot"),
    ], default="SCENE_STRIPS")
    jobs: CollectionProperty(type=STABLEAVATAR_PG_job)
    active_job: IntProperty()

    def params(self) -> dict:
        """The generation parameters this panel sets, validated by the contract (a ContractError names the bad one)."""
        w, h = contract.RESOLUTION_PRESETS.get(self.resolution, (self.width, self.height))
        values = {"width": w, "height": h, "steps": PRESET_STEPS.get(self.preset, self.steps)}
        for name, spec in PANEL_PARAMS.items():
            value = getattr(self, name)
            values[name] = round(value, 4) if spec.type is float else value  # a float32 property reads 2.9999..
        contract.GenerationParams.from_dict(values)
        return values


# generated from the contract (Blender reads the annotations when the class is registered)
STABLEAVATAR_PG_settings.__annotations__.update({n: param_property(s) for n, s in PANEL_PARAMS.items()})

classes = (STABLEAVATAR_PG_job, STABLEAVATAR_PG_settings)
