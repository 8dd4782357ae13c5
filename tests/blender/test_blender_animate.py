"""Animate Avatar on a sound strip, end to end with the real backend: audio sent, strip placed, stills."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import json
import math
import os
import sys
import time
import wave
from fractions import Fraction
from pathlib import Path

import bpy
import numpy as np
import pytest

from blender_env import MEDIA, PKG, add_cube_and_camera, add_voice, compat, strips_snapshot, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender

FPS = {"24": (24, 1.0), "25": (25, 1.0), "29.97": (30, 1.001)}


def read_wav(path):
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return w.getframerate(), data.astype(np.int64)


def expected_samples(strip, fps, fps_base):
    """What the timeline plays from `strip`, computed from the file's own integers: the strip's trimmed
    range, shifted by sound_offset, channels averaged, times volume, at 16 kHz (the file's rate)."""
    rate, pcm = read_wav(MEDIA / "case-2-speech.wav")
    assert rate == 16000
    f = Fraction(fps) / Fraction(str(fps_base))
    left, right, start = strip.frame_final_start, strip.frame_final_end, strip.frame_start
    first = round(((Fraction(left) - Fraction(start)) / f + Fraction(str(round(strip.sound_offset, 6)))) * 16000)
    n = round(Fraction(right) * 16000 / f) - round(Fraction(left) * 16000 / f)
    mono = pcm[first: first + n].mean(axis=1)
    return np.clip(np.round(mono * strip.volume), -32768, 32767), first


def only_job(sc):
    (job,) = sc.stableavatar.jobs
    return job


@pytest.mark.parametrize("fps_name", FPS)
def test_animate_sound_strip(scene, fps_name):
    sc = scene
    sc.render.fps, sc.render.fps_base = FPS[fps_name]
    se = sc.sequence_editor
    strips = compat.top_strips(se)
    voice = add_voice(sc, start=10, trim_start=12, offset=0.37, volume=0.8)
    # channel 2 is taken over the voice's range, channel 3 only before it: the result belongs on 3
    blocker = strips.new_image("blocker", str(MEDIA / "case-2-reference.png"), 2, 1)
    blocker.frame_final_duration = 200
    early = strips.new_image("early", str(MEDIA / "case-2-reference.png"), 3, 1)
    early.frame_final_duration = int(voice.frame_final_start) - 1
    se.active_strip = voice
    before = strips_snapshot(sc)
    media_before = {p.name: p.stat().st_mtime_ns for p in MEDIA.iterdir()}

    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = only_job(sc)
    assert job.status in ("QUEUED", "RUNNING"), job.error_text
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the job to finish")
    assert job.status == "IMPORTED", job.error_text

    # the WAV the backend received is exactly what the strip plays
    backend_job = json.loads((Path(job.job_dir) / "job.json").read_text())
    rate, sent = read_wav(backend_job["audio"])
    assert rate == 16000 and sent.shape[1] == 1
    want, first = expected_samples(voice, *FPS[fps_name])
    assert len(sent) == len(want)
    assert np.abs(sent[:, 0] - want).max() <= 1
    rate, pcm = read_wav(MEDIA / "case-2-speech.wav")  # a one-sample shift would be caught
    shifted = np.round(pcm[first + 1: first + 1 + len(want)].mean(axis=1) * voice.volume)
    assert np.abs(sent[:, 0] - shifted).max() > 100

    # the picture: an image strip at the voice's first frame, lowest free channel above, in sync
    result = se.strips_all[job.result_strip] if hasattr(se, "strips_all") else se.sequences_all[job.result_strip]
    assert result.type == "IMAGE"
    assert result.name == "voice avatar" and result["stableavatar_job"] == job.job_id
    assert result.channel == 3
    assert result.frame_final_start == voice.frame_final_start
    assert result.frame_final_end == voice.frame_final_end
    frames = sorted(os.listdir(Path(job.job_dir) / "frames"))
    f = Fraction(FPS[fps_name][0]) / Fraction(str(FPS[fps_name][1]))
    n_scene = voice.frame_final_duration
    assert len(result.elements) == n_scene
    want_names = [frames[min(math.floor(i * 25 / f), len(frames) - 1)] for i in range(n_scene)]
    assert [e.filename for e in result.elements] == want_names
    assert Path(bpy.path.abspath(result.directory)).resolve() == (Path(job.job_dir) / "frames").resolve()

    # nothing that existed was changed
    assert [s for s in strips_snapshot(sc) if s[0] != result.name] == before
    assert {p.name: p.stat().st_mtime_ns for p in MEDIA.iterdir()} == media_before


def test_rerun_adds_a_take_and_replace_removes_only_its_own(scene):
    sc = scene
    voice = add_voice(sc, length=12)
    add_voice(sc, name="other", channel=5, start=100, length=12)
    sc.sequence_editor.active_strip = voice
    st = sc.stableavatar
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    wait_for(lambda: st.jobs[0].status in ("IMPORTED", "ERROR"), what="take 1")
    assert st.jobs[0].status == "IMPORTED", st.jobs[0].error_text
    take1 = st.jobs[0].result_strip
    # a result strip of another source must survive the replace
    sys.modules[PKG + ".operators.timeline"].import_result(sc, st.jobs[0])
    copy = st.jobs[0].result_strip
    copy_strip = compat.all_strips(sc.sequence_editor)[copy]
    copy_strip["stableavatar_source"] = copy_strip["stableavatar_source_id"] = "other"
    st.replace_previous = True
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job2 = st.jobs[1]
    assert job2.take == 2
    wait_for(lambda: job2.status in ("IMPORTED", "ERROR"), what="take 2")
    assert job2.status == "IMPORTED", job2.error_text
    names = {s.name for s in compat.all_strips(sc.sequence_editor)}
    assert take1 not in names and job2.result_strip in names and copy in names and "other" in names
    assert job2.result_strip == "voice avatar take 2"
    assert compat.all_strips(sc.sequence_editor)[job2.result_strip].channel == 2


def test_rgba_still_from_an_image_strip(scene):
    sc = scene
    se = sc.sequence_editor
    voice = add_voice(sc, length=12)
    still = compat.top_strips(se).new_image("portrait", str(MEDIA / "case-3-reference.png"), 4, 1)
    st = sc.stableavatar
    st.still_source, st.image_strip = "STRIP", still.name
    se.active_strip = voice
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = only_job(sc)
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the RGBA job")
    assert job.status == "IMPORTED", job.error_text
    backend_job = json.loads((Path(job.job_dir) / "job.json").read_text())
    img = bpy.data.images.load(backend_job["source"]["image"])
    assert img.channels == 4 and tuple(img.size) == (884, 1568)  # the RGBA still went through untouched
    assert compat.all_strips(se)[job.result_strip].channel == 2


def test_camera_render_still(scene):
    sc = scene
    cam = add_cube_and_camera(sc, "hero")
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    st = sc.stableavatar
    st.still_source, st.camera = "CAMERA", cam
    saved = (sc.camera, sc.render.filepath, sc.render.use_sequencer, sc.frame_current)
    t0 = time.monotonic()
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    pressed_s = time.monotonic() - t0
    job = only_job(sc)
    # Blender does not wait for the render: a background Blender makes the still, the row says so
    assert job.status == "PREPARING" and "background Blender" in job.message, job.message
    assert (sc.camera, sc.render.filepath, sc.render.use_sequencer, sc.frame_current) == saved
    sc.camera = None  # an edit after pressing Animate does not change the still (a copy of the file renders)
    wait_for(lambda: job.status != "PREPARING", 120, what="the background render")
    render_s = time.monotonic() - t0
    assert pressed_s < render_s / 2, (pressed_s, render_s)
    still = bpy.data.images.load(str(Path(job.job_dir) / "inputs" / "reference.png"))
    assert tuple(still.size) == (64, 64)
    px = np.array(still.pixels[:]).reshape(64, 64, -1)[..., :3]
    assert px.std() > 0.01, "the camera render is blank"
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the camera-still job")
    assert job.status == "IMPORTED", job.error_text


def test_overlap_is_detected_and_mixdown_sums_what_is_heard(scene, tmp_path):
    import sys
    from blender_env import PKG
    animate = sys.modules[PKG + ".operators.animate"]
    sc = scene
    a = add_voice(sc, name="a", channel=1, start=1, trim_start=0, length=25)
    b = add_voice(sc, name="b", channel=2, start=-39, trim_start=50, length=25, volume=0.5)  # frames 11-36
    c = add_voice(sc, name="c", channel=3, start=1, trim_start=0, length=25)
    c.mute = True
    assert animate.overlapping_audible(sc, a) == ["b"]
    out = tmp_path / "mix.wav"
    n = animate.write_shot_audio(sc, animate.sound_strip_shot(a), "MIXDOWN", str(out))
    rate, mix = read_wav(out)
    assert n == len(mix) == 16000 and rate == 16000
    _, pcm = read_wav(MEDIA / "case-2-speech.wav")
    mono = pcm.mean(axis=1)
    want = mono[:16000].copy()
    want[6400:] += b.volume * mono[32000: 32000 + 9600]
    assert np.abs(mix[:, 0] - np.round(want)).max() <= 1
    n = animate.write_shot_audio(sc, animate.sound_strip_shot(a), "STRIP", str(out))
    assert np.abs(read_wav(out)[1][:, 0] - np.round(mono[:16000])).max() <= 1
