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
PANEL_PARAMS = {n: s for n, s in contract.PARAMS.items() if s.panel}
DRAFT_STEPS = 10  # the panel's default: a quick look (the Final preset sets the official count)
_STRIP_ITEMS: list = []  # Blender needs the dynamic enum's items kept alive by Python


def _image_strip_items(self, context):
    """The image strips of the scene, for the still picker (a sound strip is no still)."""
    from ..blender_addon import compat
    se = getattr(self.id_data, "sequence_editor", None)
    names = sorted(s.name for s in compat.all_strips(se) if s.type == "IMAGE") if se is not None else []
    _STRIP_ITEMS[:] = [("NONE", "(choose an image strip)", "", 0)] + [(n, n, "", i + 1) for i, n in enumerate(names)]
    return _STRIP_ITEMS


def _get_image_strip(self) -> int:
    items = _image_strip_items(self, None)
    return next((i[3] for i in items if i[0] == self.image_strip), 0)


def _set_image_strip(self, value: int) -> None:
    items = _image_strip_items(self, None)
    self.image_strip = next((i[0] for i in items if i[3] == value and i[0] != "NONE"), "")


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
    job_dir: StringProperty(name="Job folder", description="The job's folder (// = relative to the .blend, when "
                                                           "it is beside it)")
    source: StringProperty(name="Source strip")
    source_id: StringProperty(name="Source tag", description="The tag on the source strip (the result follows it)")
    warning: StringProperty(name="Warning", description="Why the result may not sit where you expect")
    preview: StringProperty(name="Preview", subtype="FILE_PATH", description="The newest decoded frame")
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
    image_strip_pick: EnumProperty(name="Image strip", items=_image_strip_items, get=_get_image_strip,
                                   set=_set_image_strip, description="The image strip whose image is the still")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=lambda self, ob: ob.type == "CAMERA")
    steps: IntProperty(name="Steps", default=DRAFT_STEPS, min=int(contract.PARAMS["steps"].min),
                       max=int(contract.PARAMS["steps"].max), description=contract.PARAMS["steps"].help)
    new_seed_per_take: BoolProperty(name="New seed per take", default=True,
                                    description="Every run draws its own seed (recorded on the job and its strip); "
                                                "off: use the seed below, to redo a take exactly")
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
                                   description="Remove this strip's last avatar take when the new one arrives "
                                               "(earlier takes stay in the take list)")
    shots_from: EnumProperty(name="Shots", items=[
        ("SCENE_STRIPS", "Scene Strips", "Each scene strip (selected ones, or all) is a shot"),
        ("CAMERA_MARKERS", "Camera Markers", "Each marker bound to a camera starts a shot"),
    ], default="SCENE_STRIPS")
    jobs: CollectionProperty(type=STABLEAVATAR_PG_job)
    active_job: IntProperty()

    def params(self) -> dict:
        """The generation parameters this panel sets, validated by the contract (a ContractError names the bad one)."""
        w, h = contract.RESOLUTION_PRESETS.get(self.resolution, (self.width, self.height))
        values = {"width": w, "height": h, "steps": self.steps}
        for name, spec in PANEL_PARAMS.items():
            value = getattr(self, name)
            values[name] = round(value, 4) if spec.type is float else value  # a float32 property reads 2.9999..
        values["seed"] = contract.RANDOM_SEED if self.new_seed_per_take else max(0, self.seed)
        contract.GenerationParams.from_dict(values)
        return values


# generated from the contract (Blender reads the annotations when the class is registered)
STABLEAVATAR_PG_settings.__annotations__.update({n: param_property(s) for n, s in PANEL_PARAMS.items()})

classes = (STABLEAVATAR_PG_job, STABLEAVATAR_PG_settings)
