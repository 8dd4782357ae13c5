"""One place for the VSE API differences between Blender 4.2 LTS and 5.x.

- 4.4 added `strips`/`strips_all`, `active_strip`, `selected_strips`; 5.0 removed `sequences*`.
- 5.1 deprecated `frame_final_start/end`, `frame_start` for `left_handle`, `right_handle`, `content_start`.
- EEVEE's engine id is BLENDER_EEVEE_NEXT in 4.2-4.5 and BLENDER_EEVEE in 5.0+.
- 5.0 needs `image_settings.media_type = 'VIDEO'` before choosing FFMPEG output.
Takes bpy objects as arguments; never imports bpy itself.
"""
from __future__ import annotations

import os

from .audio_range import StripTiming


def sequencer_scene(context):
    """5.0+: the scene the sequencer shows may differ from the window's scene."""
    return getattr(context, "sequencer_scene", None) or context.scene


def top_strips(se):
    """The editable top-level strip collection (has new_image/new_sound/remove)."""
    strips = getattr(se, "strips", None)
    return strips if strips is not None else se.sequences


def all_strips(se):
    """Every strip, including those inside meta strips."""
    strips = getattr(se, "strips_all", None)
    return strips if strips is not None else se.sequences_all


def active_strip(se):
    return se.active_strip


def left(strip) -> float:
    v = getattr(strip, "left_handle", None)
    return v if v is not None else strip.frame_final_start


def right(strip) -> float:
    v = getattr(strip, "right_handle", None)
    return v if v is not None else strip.frame_final_end


def content_start(strip) -> float:
    v = getattr(strip, "content_start", None)
    return v if v is not None else strip.frame_start


def channel_muted(se, channel: int) -> bool:
    channels = getattr(se, "channels", None)
    try:
        return bool(channels[channel].mute) if channels is not None else False
    except (IndexError, KeyError):
        return False


def audible(se, strip) -> bool:
    return strip.type == "SOUND" and not strip.mute and not channel_muted(se, strip.channel) \
        and strip.sound is not None and strip.volume > 0.0


def sound_path(strip) -> str:
    import bpy  # bpy.path only: resolves '//' relative to the open .blend and the sound's library
    return os.path.normpath(bpy.path.abspath(strip.sound.filepath, library=strip.sound.library))


def strip_timing(strip) -> StripTiming:
    return StripTiming(name=strip.name, filepath=sound_path(strip), left=left(strip), right=right(strip),
                       content_start=content_start(strip), sound_offset=float(strip.sound_offset),
                       volume=float(strip.volume))


def volume_animated(scene, strip) -> bool:
    ad = scene.animation_data
    if not ad or not ad.action:
        return False
    needle = f'["{strip.name}"].volume'
    try:
        fcurves = ad.action.fcurves
    except AttributeError:  # 5.0 layered actions: channelbags
        fcurves = [fc for layer in ad.action.layers for st in layer.strips
                   for cb in st.channelbags for fc in cb.fcurves]
    return any(needle in fc.data_path for fc in fcurves)


def new_image_strip(se, name: str, filepath: str, channel: int, frame_start: int):
    return top_strips(se).new_image(name=name, filepath=filepath, channel=channel, frame_start=frame_start,
                                    fit_method="FIT")


def remove_strip(se, strip):
    top_strips(se).remove(strip)


def engine_id(scene, wanted: str) -> str:
    """Map 'EEVEE' / 'CYCLES' / 'WORKBENCH' to this Blender's engine id."""
    items = scene.render.bl_rna.properties["engine"].enum_items.keys()
    candidates = {"EEVEE": ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"), "WORKBENCH": ("BLENDER_WORKBENCH",),
                  "CYCLES": ("CYCLES",)}[wanted]
    for c in candidates:
        if c in items:
            return c
    return candidates[-1]  # engines registered by add-ons (Cycles) may be missing from the enum list


def set_video_output(scene):
    """FFmpeg MPEG-4/H.264 with AAC audio, for the demo render."""
    s = scene.render.image_settings
    if hasattr(s, "media_type"):
        s.media_type = "VIDEO"
    s.file_format = "FFMPEG"
    ff = scene.render.ffmpeg
    ff.format = "MPEG4"
    ff.codec = "H264"
    ff.audio_codec = "AAC"
    ff.audio_channels = "STEREO"
    ff.audio_mixrate = 48000


def new_effect_strip(se, name: str, kind: str, channel: int, frame_start: int, frame_end: int):
    """new_effect took `frame_end` up to 4.5 and takes `length` from 5.0."""
    fn = top_strips(se).new_effect
    try:
        return fn(name=name, type=kind, channel=channel, frame_start=frame_start, length=frame_end - frame_start)
    except TypeError:
        return fn(name=name, type=kind, channel=channel, frame_start=frame_start, frame_end=frame_end)
