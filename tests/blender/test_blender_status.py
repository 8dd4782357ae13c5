"""Truthful status and live feedback: Check Backend after a broken install, with a device the machine lacks, the
cold start counted in seconds, the live preview, notices, Release GPU and the idle release."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import subprocess
import sys
import time

import bpy
import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS, PKG, add_voice, prefs, runtime, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender
DONE = ("IMPORTED", "ERROR", "CANCELLED")


def _feedback():
    return sys.modules[PKG + ".operators.feedback"]


def test_a_backend_that_cannot_start_says_why(scene, tmp_path):
    """A Python without the backend (what a broken install leaves): the report and the job row give its reason,
    and the row does not promise that Retry resumes anything."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "broken")], check=True)
    prefs().python = str(tmp_path / "broken" / "bin" / "python")
    rt = runtime()
    assert bpy.ops.stableavatar.check_backend() == {"FINISHED"}
    assert prefs().backend_report.startswith("starting backend")
    wait_for(lambda: rt.SESSION.client is None, 60, "the broken backend to exit")
    report = prefs().backend_report
    assert "no StableAvatar backend installed" in report and "hint:" in report, report
    voice = add_voice(scene, length=12)
    scene.sequence_editor.active_strip = voice
    bpy.ops.stableavatar.animate()
    (job,) = scene.stableavatar.jobs
    wait_for(lambda: job.status in DONE, 60, "the row to end")
    assert job.status == "ERROR" and "no StableAvatar backend installed" in job.message, job.message
    assert "resume it from its last step" not in job.error_text and "Install Backend" in job.error_text


@pytest.mark.parametrize("weights", ["tiny", "empty"])
def test_check_backend_with_a_device_this_machine_lacks(scene, tmp_path, weights):
    (tmp_path / "empty").mkdir()
    p = prefs()
    p.python, p.device = BACKEND_PYTHON, "cuda"  # no CUDA here
    p.checkpoints = str(CHECKPOINTS if weights == "tiny" else tmp_path / "empty")
    rt = runtime()
    try:
        assert bpy.ops.stableavatar.check_backend() == {"FINISHED"}
        wait_for(lambda: rt.SESSION.info is not None, 120, "ready")
        report = p.backend_report
        assert "ENGINE ERROR" in report and "no CUDA GPU" in report and "not in use" in report, report
        if weights == "tiny":
            assert "not loaded (the engine failed before them)" in report and "weights load" not in report
        else:
            assert "weights NOT usable" in report and "weights found" not in report, report
    finally:
        p.device = "cpu"
        rt.stop_backend(settle=False)


def test_cold_start_preview_notice_release_and_idle(scene):
    rt = runtime()
    rt.stop_backend(settle=False)
    feedback = _feedback()
    feedback.NOTICES.clear()
    sc = scene
    voice = add_voice(sc, length=30)
    sc.sequence_editor.active_strip = voice
    sc.stableavatar.steps = 2
    t0 = time.monotonic()
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    rt.tick()
    assert job.message.startswith("starting backend (loading models)...") and job.message.endswith(" s"), job.message
    wait_for(lambda: job.status == "RUNNING" and job.phase, 120, "the first progress")
    print(f"\nCOLD START to first progress: {time.monotonic() - t0:.1f} s")
    rt.SESSION.longest_tick_ms = 0.0
    previews = []
    wait_for(lambda: previews.append(job.preview) or job.status in DONE, what="the job")
    assert job.status == "IMPORTED", job.error_text
    assert any(p.endswith("preview.jpg") for p in previews)  # the live preview arrived while it ran
    pc = feedback._PREVIEWS["collection"]
    assert job.job_id in pc and tuple(pc[job.job_id].image_size)[0] > 0
    assert any(n.startswith("Avatar ready: imported as 'voice avatar'") for n in feedback.NOTICES), feedback.NOTICES
    print(f"LONGEST TICK during the job: {rt.SESSION.longest_tick_ms:.1f} ms")
    assert rt.SESSION.longest_tick_ms < 250

    assert rt.SESSION.models_loaded and bpy.ops.stableavatar.release_gpu() == {"FINISHED"}
    wait_for(lambda: not rt.SESSION.models_loaded, 60, "released")
    assert any("GPU memory released (request)" in n for n in feedback.NOTICES)
    # the models reload with the next job
    sc.stableavatar.replace_previous = True
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job2 = sc.stableavatar.jobs[1]
    wait_for(lambda: job2.status in DONE, what="the job after the release")
    assert job2.status == "IMPORTED", job2.error_text

    prefs().idle_release_min = 1 / 60  # one second without a job frees the GPU (the backend restarts for it)
    try:
        rt.ensure_client()
        assert "--idle-release" in rt.SESSION.client.argv
        wait_for(lambda: rt.SESSION.info is not None and not rt.SESSION.models_loaded and
                 any("(idle)" in n for n in feedback.NOTICES), 120, "the idle release")
    finally:
        prefs().idle_release_min = 10.0
        rt.stop_backend(settle=False)


def test_silent_audio_hint_names_the_panel(scene):
    sc = scene
    voice = add_voice(sc, length=12, volume=0.0)  # Strip Only sends exactly what it plays: silence
    sc.sequence_editor.active_strip = voice
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    wait_for(lambda: job.status in DONE, 120, "the silent job")
    assert job.status == "ERROR" and "silent" in job.message, job.message
    assert "'Allow silent audio' in the Avatar panel" in job.error_text and "--allow-silent" not in job.error_text
    assert "allow_silent" in sc.stableavatar.bl_rna.properties
