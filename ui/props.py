"""Data the add-on keeps: machine settings (preferences), per-scene settings and the job list (in the .blend)."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from ..blender_addon import jobs as jobmodel

ADDON_ID = __package__.rpartition(".")[0]  # "bl_ext.<repo>.stableavatar" when installed as an extension

PRESET_STEPS = {"DRAFT": 10, "FINAL": 50}
RESOLUTIONS = {"512x512": (512, 512), "480x832": (480, 832), "832x480": (832, 480)}


def prefs():
    return bpy.context.preferences.addons[ADDON_ID].preferences


class STABLEAVATAR_PG_job(bpy.types.PropertyGroup):
    job_id: StringProperty(name="Job id")
    job_dir: StringProperty(name="Job folder", subtype="DIR_PATH")
    source: StringProperty(name="Source strip")
    status: EnumProperty(name="Status", items=[(s, s.title(), "") for s in (
        jobmodel.PREPARING, jobmodel.QUEUED, jobmodel.RUNNING, jobmodel.CANCELLING, jobmodel.IMPORTED,
        jobmodel.CANCELLED, jobmodel.ERROR)], default=jobmodel.PREPARING)
    phase: StringProperty(name="Phase")
    fraction: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    step: IntProperty()
    steps: IntProperty()
    window: IntProperty()
    windows: IntProperty()
    eta_s: FloatProperty(default=-1.0)
    take: IntProperty(default=1)
    result_strip: StringProperty(name="Result strip")
    message: StringProperty(name="Message")
    error_text: StringProperty(name="Error report")


class STABLEAVATAR_PG_settings(bpy.types.PropertyGroup):
    still_source: EnumProperty(name="Still", items=[
        ("FILE", "Image File", "Use an image file as the character still"),
        ("STRIP", "Image Strip", "Use the image of an image strip"),
        ("CAMERA", "Camera Render", "Render the scene from a camera at the sound strip's first frame"),
    ], default="FILE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH")
    image_strip: StringProperty(name="Image strip")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=lambda self, ob: ob.type == "CAMERA")
    prompt: StringProperty(name="Prompt", default="The protagonist is talking")
    preset: EnumProperty(name="Preset", items=[
        ("DRAFT", "Draft", "10 denoising steps: quick look"),
        ("FINAL", "Final", "The official 50 denoising steps"),
        ("CUSTOM", "Custom", "Choose the step count"),
    ], default="DRAFT")
    steps: IntProperty(name="Steps", default=25, min=1, max=1000)
    resolution: EnumProperty(name="Resolution", items=[
        ("512x512", "512 x 512", "Square"), ("480x832", "480 x 832", "Portrait"),
        ("832x480", "832 x 480", "Landscape"), ("CUSTOM", "Custom", "Any multiple of 16"),
    ], default="512x512")
    width: IntProperty(name="Width", default=512, min=16, max=2048, step=16)
    height: IntProperty(name="Height", default=512, min=16, max=2048, step=16)
    fit: EnumProperty(name="Fit", items=[
        ("squash", "Squash", "Stretch the still to the resolution"),
        ("crop", "Crop", "Fill the resolution, cutting the overflow"),
        ("pad", "Pad", "Fit inside the resolution, padding the rest"),
    ], default="crop")
    seed: IntProperty(name="Seed", default=42, min=0)
    guidance: EnumProperty(name="Guidance", items=[
        ("official", "Official", "Guidance as in the official StableAvatar code"),
        ("audio-native", "Audio Native", "Separate text and audio guidance"),
    ], default="official")
    text_scale: FloatProperty(name="Text scale", default=3.0, min=-100, max=100)
    audio_scale: FloatProperty(name="Audio scale", default=5.0, min=-100, max=100)
    overlap: IntProperty(name="Overlap", description="Latent frames shared by neighbouring windows",
                         default=5, min=2, max=20)
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
        steps = PRESET_STEPS.get(self.preset, self.steps)
        w, h = RESOLUTIONS.get(self.resolution, (self.width, self.height))
        return {"width": w, "height": h, "steps": steps, "seed": self.seed, "prompt": self.prompt,
                "fit": self.fit, "guidance": self.guidance, "text_scale": round(self.text_scale, 4),
                "audio_scale": round(self.audio_scale, 4), "overlap": self.overlap}


class STABLEAVATAR_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python: StringProperty(name="Backend Python", subtype="FILE_PATH",
                           description="Python of the environment that has the stableavatar backend installed "
                                       "(empty: the one made by Install Backend)")
    checkpoints: StringProperty(name="Checkpoints", subtype="DIR_PATH",
                                description="Folder with the StableAvatar, Wan2.1-Fun and wav2vec2 weights")
    device: EnumProperty(name="Device", items=[("cuda", "CUDA GPU", ""), ("cpu", "CPU (very slow)", "")],
                         default="cuda")
    dtype: EnumProperty(name="Precision", items=[("AUTO", "Auto", "The backend's default"),
                                                  ("bfloat16", "bfloat16", ""), ("float32", "float32", "")],
                        default="AUTO")
    memory_mode: EnumProperty(name="Memory mode", items=[
        ("auto", "Auto", "The fastest mode that fits the GPU's free memory"),
        ("full", "Full", "Everything on the GPU: fastest, needs the most memory"),
        ("model_offload", "Model Offload", "Move models to the GPU only while they run"),
        ("sequential_offload", "Sequential Offload", "Layer by layer: slowest, least GPU memory"),
        ("fp8", "FP8", "8-bit transformer weights (approximate)"),
    ], default="auto")
    jobs_dir: StringProperty(name="Jobs folder", subtype="DIR_PATH",
                             description="Where job folders (audio, still, frames) go "
                                         "(empty: the extension's user folder)")
    backend_report: StringProperty(name="Backend report")

    def draw(self, context):
        from . import panels
        panels.draw_preferences(self, context, self.layout)


classes = (STABLEAVATAR_PG_job, STABLEAVATAR_PG_settings, STABLEAVATAR_AP_preferences)
