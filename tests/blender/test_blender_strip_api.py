"""The strip API of every Blender the extension supports, without audio (the 4.2 LTS wheel has none): a job made
from a WAV file runs on the real backend and its frames land through the compat layer, which on 4.2/4.3 is the
old `sequences` / `frame_final_*` API; meta strips and strip removal too."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import os
import shutil
import sys
import wave

import bpy
import pytest

from blender_env import MEDIA, PKG, compat, runtime, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender


def _short_wav(path, seconds=0.48):
    with wave.open(str(MEDIA / "case-2-speech.wav")) as src, wave.open(str(path), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(src.getframerate() * seconds)))


def test_result_lands_through_this_blenders_strip_api(scene, tmp_path):
    sc = scene
    se = sc.sequence_editor
    if bpy.app.version < (4, 4, 0):
        assert not hasattr(se, "strips") and hasattr(se, "sequences")  # really the old API here
    strips = compat.top_strips(se)
    blocker = strips.new_image("blocker", str(MEDIA / "case-2-reference.png"), 2, 1)
    blocker.frame_final_duration = 100
    rt, jobs = runtime(), sys.modules[PKG + ".blender_addon.jobs"]
    job_dir = tmp_path / "job"
    (job_dir / "inputs").mkdir(parents=True)
    wav, png = job_dir / "inputs" / "audio.wav", job_dir / "inputs" / "reference.png"
    _short_wav(wav)
    shutil.copyfile(MEDIA / "case-1-reference.png", png)
    job = sc.stableavatar.jobs.add()
    job.job_id, job.job_dir, job.source, job.take = "legacy-1", str(job_dir), "file", 1
    placement = jobs.Placement(scene=sc.name, source="file", frame_start=10, channel_above=1, n_scene_frames=12,
                               fps=25, fps_base=1.0)
    rt.set_request(job, str(png), str(wav), sc.stableavatar.params(), placement)
    assert rt.submit(job)
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the job")
    assert job.status == "IMPORTED", job.error_text
    result = compat.all_strips(se)[job.result_strip]
    assert (compat.left(result), compat.right(result), result.channel) == (10, 22, 3)  # channel 2 is taken
    assert len(result.elements) == 12 and os.path.isdir(bpy.path.abspath(result.directory))
    timeline = sys.modules[PKG + ".operators.timeline"]
    again = timeline.import_result(sc, job, replace=[result])  # compat.remove_strip, then a new strip
    assert [s.name for s in timeline.result_strips(se, job_id=job.job_id)] == [again.name]
    # meta strips: what a meta lets through, and the channel on the top level
    meta = strips.new_meta("Meta", 5, 30)
    inner = strips.new_image("inner", str(MEDIA / "case-2-reference.png"), 1, 30)
    inner.frame_final_duration = 40
    inner.move_to_meta(meta)
    meta = compat.all_strips(se)["Meta"]
    meta.frame_final_end, meta.frame_final_start = 50, 35
    inner = compat.all_strips(se)["inner"]
    assert compat.parent_metas(inner)[0].name == "Meta"
    assert compat.heard_range(inner) == (35, 50) and compat.top_channel(inner) == 5
