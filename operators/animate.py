"""Animate Avatar, Animate Selected Strips, Animate Shots: turn strips into queued backend jobs.

Each job gets its own folder; the exact audio (16 kHz mono WAV of what the timeline plays) and the character
still are written straight into its `inputs/`, where the backend uses them in place. Where the result goes
travels with the request and is stored by the backend in the folder's job.json. Nothing in the scene changes
until the frames come back.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass

import bpy

from ..blender_addon import audio, audio_range, compat, contract, jobs, rows, timing
from ..blender_addon.jobs import TAG_SOURCE_ID
from . import paths, runtime, still_render


class JobInputError(Exception):
    pass


@dataclass
class Shot:
    """One job's worth of timeline: a range, what is heard there, where the still comes from."""
    source: str                 # name shown on the job row and on the result strip
    left: int
    right: int
    channel_above: int
    sound_strip: object = None  # for STRIP audio: the strip whose audio alone is sent
    render_scene: object = None  # for camera stills
    render_camera: object = None
    render_frame: int = 0
    source_id: str = ""         # the tag on the source strip (the result follows that strip)


# ---------------------------------------------------------------- audio

def audible_strips(scene, exclude=None):
    se = scene.sequence_editor
    return [s for s in compat.all_strips(se) if compat.audible(se, s) and s != exclude]


def overlapping_audible(scene, strip) -> list[str]:
    target = compat.strip_timing(strip)
    others = [compat.strip_timing(s) for s in audible_strips(scene, exclude=strip)]
    return [s.name for s in audio_range.overlapping(target, others)]


def write_shot_audio(scene, shot: Shot, mode: str, out_path: str) -> int:
    fps = timing.scene_fps(scene.render.fps, scene.render.fps_base)
    n = audio_range.range_samples(shot.left, shot.right, fps)
    if mode == "STRIP" and shot.sound_strip is not None:
        sources = [shot.sound_strip]
    else:
        sources = audible_strips(scene)
    heard = [(s, audio_range.contribution(compat.strip_timing(s), shot.left, shot.right, fps)) for s in sources]
    heard = [(s, c) for s, c in heard if c is not None]
    retimed = [s.name for s, _ in heard if compat.retimed(s)]
    if retimed:
        raise JobInputError(f"'{retimed[0]}' is retimed (it has retiming keys): its sound plays at another speed "
                            "than its file, which this add-on does not read. Reset its retiming (Strip > Retiming "
                            "> Reset), or render the audio to a file (Render > Render Audio) and use that")
    contributions = [c for _, c in heard]
    if not contributions:
        raise JobInputError(f"nothing audible under '{shot.source}' (frames {shot.left}-{shot.right})")
    for c in contributions:
        if not os.path.isfile(c.filepath):
            raise JobInputError(f"sound file not found: {c.filepath}")
    return audio.write_wav(contributions, n, out_path)


# ---------------------------------------------------------------- still

def image_strip_still(scene, name: str, frame: int) -> str:
    se = scene.sequence_editor
    strip = compat.all_strips(se).get(name) if name else None
    if strip is None or strip.type != "IMAGE":
        raise JobInputError(f"image strip '{name}' not found: pick an image strip in the panel")
    elements = strip.elements
    idx = min(max(int(frame - compat.content_start(strip)), 0), len(elements) - 1)
    path = bpy.path.abspath(os.path.join(strip.directory, elements[idx].filename))
    return os.path.normpath(path)


def camera_still(scene, settings, shot: Shot):
    """(scene, camera, frame) to render the still from, or None when the still is an image."""
    if shot.render_scene is not None:
        return shot.render_scene, shot.render_camera, shot.render_frame
    if settings.still_source == "CAMERA":
        return scene, settings.camera or scene.camera, shot.left
    return None


def prepare_still(context, scene, settings, shot: Shot, job_dir: str) -> str:
    if settings.still_source == "STRIP":
        path = image_strip_still(scene, settings.image_strip, shot.left)
    else:
        path = os.path.normpath(bpy.path.abspath(settings.image_path)) if settings.image_path else ""
    if not path or not os.path.isfile(path):
        raise JobInputError(f"still image not found: {path or '(none chosen)'}")
    # a copy in the job folder: the job resumes even if the original moves
    copy = jobs.input_path(job_dir, "image", os.path.splitext(path)[1])
    shutil.copyfile(path, copy)
    return copy


# ---------------------------------------------------------------- queueing

def queue_shot(context, scene, shot: Shot, audio_mode: str = "") -> tuple[object, str | None]:
    """Prepare inputs and submit one job; returns (job row, error or None). The row exists either way.
    audio_mode: STRIP or MIXDOWN (default: the panel's setting)."""
    settings = scene.stableavatar
    job_id = jobs.new_job_id()
    job_dir = os.path.join(runtime.jobs_root(), job_id)
    takes = [j.take for j in settings.jobs if j.source == shot.source]
    job = settings.jobs.add()
    job.job_id, job.job_dir, job.source, job.source_id = job_id, paths.stored(job_dir), shot.source, shot.source_id
    job.take = max(takes, default=0) + 1
    job.status, job.message = rows.PREPARING, "preparing audio and still"
    settings.active_job = len(settings.jobs) - 1
    try:
        params = settings.params()
        os.makedirs(os.path.join(job_dir, contract.JOB_FILES["inputs"]), exist_ok=True)
        wav = jobs.input_path(job_dir, "audio", ".wav")
        write_shot_audio(scene, shot, audio_mode or settings.audio_source, wav)
        render = camera_still(scene, settings, shot)
        still = jobs.input_path(job_dir, "image", ".png") if render else prepare_still(context, scene, settings,
                                                                                         shot, job_dir)
        placement = jobs.Placement(
            scene=scene.name, source=shot.source, frame_start=int(shot.left), channel_above=int(shot.channel_above),
            n_scene_frames=int(shot.right - shot.left), fps=int(scene.render.fps),
            fps_base=float(scene.render.fps_base), take=job.take, replace_previous=settings.replace_previous,
            source_id=shot.source_id, source_left=int(shot.left), source_right=int(shot.right))
        runtime.set_request(job, still, wav, params, placement)
        if render:  # the job is queued when the background render has written the still
            still_render.start(job, *render, still, on_done=runtime.submit)
            return job, None
    except contract.ContractError as exc:
        rows.set_error(job, exc.message, hint=exc.hint or "")
        return job, exc.message
    except (JobInputError, audio.AudioError, OSError, ValueError, RuntimeError) as exc:
        rows.set_error(job, str(exc))
        return job, str(exc)
    runtime.submit(job)
    if job.status == rows.ERROR:
        return job, job.message
    return job, None


def source_tag(strip) -> str:
    """The strip's own tag (added once), so its result follows it when it moves or is renamed."""
    if not strip.get(TAG_SOURCE_ID):
        strip[TAG_SOURCE_ID] = secrets.token_hex(6)
    return strip[TAG_SOURCE_ID]


def sound_strip_shot(strip) -> Shot:
    """What the edit plays of `strip` (inside a meta: only what the meta lets through), and where the result
    goes: above the strip on the top level (above its outermost meta)."""
    left, right = compat.heard_range(strip)
    return Shot(source=strip.name, left=int(left), right=int(right), channel_above=compat.top_channel(strip),
                sound_strip=strip, source_id=source_tag(strip))


def scene_strip_shots(scene) -> list[Shot]:
    se = scene.sequence_editor
    strips = [s for s in compat.top_strips(se) if s.type == "SCENE" and s.scene is not None]
    chosen = [s for s in strips if s.select] or strips
    shots = []
    for s in sorted(chosen, key=compat.left):
        frame = int(s.scene.frame_start + compat.left(s) - compat.content_start(s))
        shots.append(Shot(source=s.name, left=int(compat.left(s)), right=int(compat.right(s)),
                          channel_above=s.channel, render_scene=s.scene,
                          render_camera=s.scene_camera or s.scene.camera, render_frame=frame,
                          source_id=source_tag(s)))
    return shots


def camera_marker_shots(scene) -> list[Shot]:
    markers = sorted((m for m in scene.timeline_markers if m.camera is not None), key=lambda m: m.frame)
    se = scene.sequence_editor
    shots = []
    for i, m in enumerate(markers):
        end = markers[i + 1].frame if i + 1 < len(markers) else scene.frame_end + 1
        if end <= m.frame:
            continue
        heard = [s.channel for s in compat.all_strips(se) if compat.audible(se, s)
                 and compat.left(s) < end and compat.right(s) > m.frame]
        shots.append(Shot(source=m.name or f"shot {i + 1}", left=m.frame, right=end,
                          channel_above=max(heard, default=0), render_scene=scene, render_camera=m.camera,
                          render_frame=m.frame))
    return shots


def warn_unheard(op, scene, strips) -> None:
    """Animating a strip the edit does not play is allowed (a guide track), but never silent about it."""
    for strip in strips:
        why = compat.mute_reason(scene.sequence_editor, strip)
        a, b = compat.heard_range(strip)
        if not why and b <= a:
            why = f"'{strip.name}' lies outside the meta strip around it"
        if why:
            op.report({"WARNING"}, f"{why}: the avatar is made from its audio, which the edit does not play")


def _report_results(op, results) -> set[str]:
    errors = [f"{job.source}: {err}" for job, err in results if err]
    queued = len(results) - len(errors)
    if errors:
        op.report({"ERROR"}, "; ".join(errors))
    if queued:
        op.report({"INFO"}, f"queued {queued} avatar job(s); results appear on the timeline when done")
    return {"FINISHED"} if queued else {"CANCELLED"}


def _has_sound(context) -> bool:
    scene = compat.sequencer_scene(context)
    se = scene.sequence_editor if scene else None
    return se is not None and any(s.type == "SOUND" for s in compat.all_strips(se))


class STABLEAVATAR_OT_animate(bpy.types.Operator):
    """Animate the still with the active sound strip: queues a job; the result arrives as a new image strip"""
    bl_idname = "stableavatar.animate"
    bl_label = "Animate Avatar"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        scene = compat.sequencer_scene(context)
        se = scene.sequence_editor if scene else None
        strip = se.active_strip if se else None
        return strip is not None and strip.type == "SOUND"

    def invoke(self, context, event):
        scene = compat.sequencer_scene(context)
        settings = scene.stableavatar
        if settings.audio_source == "STRIP" and overlapping_audible(scene, scene.sequence_editor.active_strip):
            return context.window_manager.invoke_props_dialog(self, width=420)
        return self.execute(context)

    def draw(self, context):
        scene = compat.sequencer_scene(context)
        names = overlapping_audible(scene, scene.sequence_editor.active_strip)
        col = self.layout.column()
        col.label(text="Other audio plays at the same time: " + ", ".join(names[:4]), icon="ERROR")
        col.label(text="Send only this strip, or a mixdown of everything heard?")
        col.prop(scene.stableavatar, "audio_source", expand=True)

    def execute(self, context):
        scene = compat.sequencer_scene(context)
        strip = scene.sequence_editor.active_strip
        if scene.stableavatar.audio_source == "STRIP":
            others = overlapping_audible(scene, strip)
            if others:
                self.report({"WARNING"}, f"other audible strips overlap '{strip.name}': {', '.join(others)} "
                                         "(set Audio to Mixdown to include them)")
        if compat.volume_animated(scene, strip):
            self.report({"WARNING"}, f"the volume of '{strip.name}' is animated: its current value is used")
        warn_unheard(self, scene, [strip])
        return _report_results(self, [queue_shot(context, scene, sound_strip_shot(strip))])


class STABLEAVATAR_OT_animate_selected(bpy.types.Operator):
    """Queue one avatar job per selected sound strip (they run in order on the one backend)"""
    bl_idname = "stableavatar.animate_selected"
    bl_label = "Animate Selected Strips"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _has_sound(context)

    def execute(self, context):
        scene = compat.sequencer_scene(context)
        strips = sorted((s for s in compat.all_strips(scene.sequence_editor) if s.select and s.type == "SOUND"),
                        key=compat.left)
        if not strips:
            self.report({"ERROR"}, "select one or more sound strips")
            return {"CANCELLED"}
        warn_unheard(self, scene, strips)
        return _report_results(self, [queue_shot(context, scene, sound_strip_shot(s)) for s in strips])


class STABLEAVATAR_OT_animate_shots(bpy.types.Operator):
    """For each shot (scene strip or camera marker): render the still from the shot's camera and animate it
    with the audio under the shot"""
    bl_idname = "stableavatar.animate_shots"
    bl_label = "Animate Shots"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        scene = compat.sequencer_scene(context)
        return scene is not None and scene.sequence_editor is not None

    def execute(self, context):
        scene = compat.sequencer_scene(context)
        settings = scene.stableavatar
        shots = scene_strip_shots(scene) if settings.shots_from == "SCENE_STRIPS" else camera_marker_shots(scene)
        if not shots:
            self.report({"ERROR"}, "no shots: add scene strips, or markers bound to cameras")
            return {"CANCELLED"}
        # a shot has no single sound strip: send everything heard under it
        return _report_results(self, [queue_shot(context, scene, shot, "MIXDOWN") for shot in shots])


classes = (STABLEAVATAR_OT_animate, STABLEAVATAR_OT_animate_selected, STABLEAVATAR_OT_animate_shots)
