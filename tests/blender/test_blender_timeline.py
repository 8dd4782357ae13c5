"""A timeline that follows the edit: the result goes where its sound strip is when the frames arrive; a meta
strip's sound is what the meta plays; muted and retimed strips never pass silently."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import json
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from blender_env import MEDIA, PKG, add_voice, compat, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)
from test_blender_animate import read_wav

pytestmark = pytest.mark.blender
DONE = ("IMPORTED", "ERROR", "CANCELLED")


def _strip(sc, name):
    return compat.all_strips(sc.sequence_editor)[name]


def test_moving_the_voice_while_the_job_runs_moves_the_avatar(scene):
    sc = scene
    voice = add_voice(sc, start=10, length=12)
    sc.sequence_editor.active_strip = voice
    sc.stableavatar.steps = 4
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    voice.channel = 3  # the edit goes on while the job runs: moved in time and up two channels
    voice.frame_start += 40
    wait_for(lambda: job.status in DONE, what="the job")
    assert job.status == "IMPORTED", job.error_text
    result = _strip(sc, job.result_strip)
    voice = _strip(sc, "voice")
    assert (result.frame_final_start, result.frame_final_end) == (voice.frame_final_start, voice.frame_final_end)
    assert result.channel == 4 and job.warning == ""


def test_deleted_voice_warns_and_keeps_the_original_place(scene):
    sc = scene
    voice = add_voice(sc, start=10, length=12)
    start = voice.frame_final_start
    sc.sequence_editor.active_strip = voice
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    compat.remove_strip(sc.sequence_editor, voice)
    wait_for(lambda: job.status in DONE, what="the job")
    assert job.status == "IMPORTED", job.error_text
    assert "was deleted" in job.warning and _strip(sc, job.result_strip).frame_final_start == start


def test_sound_in_a_trimmed_meta_sends_what_the_meta_plays(scene):
    sc = scene
    se = sc.sequence_editor
    inner = add_voice(sc, name="inner", channel=1, start=1, trim_start=0, length=60)
    meta = compat.top_strips(se).new_meta("Meta", 2, 1)
    inner.move_to_meta(meta)
    meta = _strip(sc, "Meta")
    meta.frame_final_end, meta.frame_final_start = 45, 21  # the meta lets frames 21..44 of its content through
    inner = _strip(sc, "inner")
    se.active_strip = inner
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    wait_for(lambda: job.status in DONE, what="the meta job")
    assert job.status == "IMPORTED", job.error_text
    sent = read_wav(json.loads((Path(job.job_dir) / "job.json").read_text())["audio"])[1][:, 0]
    _, pcm = read_wav(MEDIA / "case-2-speech.wav")
    want = np.round(pcm.mean(axis=1)[20 * 640: 44 * 640])  # 25 fps: frame 21 starts 20 frames into the file
    assert len(sent) == len(want) and np.abs(sent - want).max() <= 1
    result = _strip(sc, job.result_strip)
    assert (result.frame_final_start, result.frame_final_end) == (21, 45)
    assert result.channel == 3  # above the meta on the top level, not inside it


def test_muted_strip_channel_and_meta_warn(scene):
    sc = scene
    se = sc.sequence_editor
    animate = sys.modules[PKG + ".operators.animate"]
    muted = add_voice(sc, name="muted", channel=1, length=12)
    muted.mute = True
    on_muted_channel = add_voice(sc, name="quiet", channel=4, start=60, length=12)
    se.channels[4].mute = True
    assert compat.mute_reason(se, muted) == "'muted' is muted"
    assert "channel 4" in compat.mute_reason(se, on_muted_channel)
    inner = add_voice(sc, name="inner", channel=1, start=100, trim_start=0, length=12)
    meta = compat.top_strips(se).new_meta("Meta", 6, 100)
    inner.move_to_meta(meta)
    _strip(sc, "Meta").frame_final_end = 112
    _strip(sc, "Meta").mute = True
    assert "meta strip 'Meta'" in compat.mute_reason(se, _strip(sc, "inner"))
    assert not compat.audible(se, _strip(sc, "inner"))

    class Op:
        reports = []

        def report(self, kind, text):
            self.reports.append((kind, text))
    op = Op()
    animate.warn_unheard(op, sc, [_strip(sc, "muted"), _strip(sc, "quiet"), _strip(sc, "inner")])
    assert [k for k, _ in op.reports] == [{"WARNING"}] * 3, op.reports
    assert all("the edit does not play" in t for _, t in op.reports)


@pytest.mark.skipif(bpy.app.version < (5, 3, 0), reason="RetimingKeys.add() crashes headless Blender before 5.3")
def test_retimed_strip_is_refused_with_a_clear_message(scene):
    sc = scene
    voice = add_voice(sc, length=40)
    left = int(compat.left(voice))
    voice.retiming_keys.add(timeline_frame=left + 10)
    voice.retiming_keys[1].timeline_frame = left + 20  # the first part now plays at half speed
    sc.sequence_editor.active_strip = voice
    try:
        bpy.ops.stableavatar.animate()
    except RuntimeError as exc:  # an ERROR report raises in background mode
        assert "retimed" in str(exc)
    (job,) = sc.stableavatar.jobs
    assert job.status == "ERROR" and "retimed" in job.message and "Reset its retiming" in job.message
