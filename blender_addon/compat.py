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


def channel_muted(owner, channel: int) -> bool:
    """Whether channel `channel` of `owner` (the sequence editor, or a meta strip's inside) is muted."""
    channels = getattr(owner, "channels", None)
    try:
        return bool(channels[channel].mute) if channels is not None else False
    except (IndexError, KeyError):
        return False


def parent_metas(strip) -> list:
    """The meta strips around `strip`, innermost first (empty for a top-level strip)."""
    chain = []
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    while parent is not None and len(chain) < 64:
        chain.append(parent)
        parent = parent.parent_meta() if hasattr(parent, "parent_meta") else None
    return chain


def heard_range(strip) -> tuple[float, float]:
    """The frames where `strip` is heard: its own handles, clipped by the handles of every meta around it
    (inner strips keep timeline coordinates; a meta plays its content only between its own handles)."""
    a, b = left(strip), right(strip)
    for meta in parent_metas(strip):
        a, b = max(a, left(meta)), min(b, right(meta))
    return a, max(a, b)


def top_channel(strip) -> int:
    """The channel of `strip` on the top level: its outermost meta's channel when it sits in one."""
    chain = parent_metas(strip)
    return (chain[-1] if chain else strip).channel


def mute_reason(se, strip) -> str:
    """Why `strip` is silent in the edit ("" when it is heard): the strip, its channel, or a meta around it."""
    if strip.mute:
        return f"'{strip.name}' is muted"
    chain = parent_metas(strip)  # innermost first; the innermost meta holds the strip's own channel
    if channel_muted(chain[0] if chain else se, strip.channel):
        return f"channel {strip.channel} of '{strip.name}' is muted"
    for meta in chain:
        if meta.mute:
            return f"the meta strip '{meta.name}' around '{strip.name}' is muted"
    for inner, outer in zip(chain, chain[1:] + [None]):
        if channel_muted(outer if outer is not None else se, inner.channel):
            return f"channel {inner.channel} of the meta strip '{inner.name}' is muted"
    return ""


def retimed(strip) -> bool:
    """Whether the strip has retiming keys (a speed change; the API does not say how fast each part plays)."""
    return len(getattr(strip, "retiming_keys", None) or ()) > 0


def audible(se, strip) -> bool:
    a, b = heard_range(strip)
    return strip.type == "SOUND" and not mute_reason(se, strip) and strip.sound is not None \
        and strip.volume > 0.0 and b > a


def sound_path(strip) -> str:
    import bpy  # bpy.path only: resolves '//' relative to the open .blend and the sound's library
    return os.path.normpath(bpy.path.abspath(strip.sound.filepath, library=strip.sound.library))


def strip_timing(strip) -> StripTiming:
    """What the edit plays of a sound strip (inside meta strips: only the part the metas let through)."""
    a, b = heard_range(strip)
    return StripTiming(name=strip.name, filepath=sound_path(strip), left=a, right=b,
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
