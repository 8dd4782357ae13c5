"""Batch over shots, cancel, a killed backend, and reopening a saved .blend while a job runs."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import os
import signal

import bpy
import pytest

from blender_env import add_cube_and_camera, add_voice, compat, runtime, strips_snapshot, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender

DONE = ("IMPORTED", "ERROR", "CANCELLED")


def test_animate_shots_renders_each_camera_and_imports_both(scene):
    edit = scene
    add_voice(edit, start=1, trim_start=0, length=24)  # one voice under both shots
    shots = []
    for name in ("ShotA", "ShotB"):
        shot_scene = bpy.data.scenes.new(name)
        add_cube_and_camera(shot_scene, name)
        shot_scene.camera = shot_scene.objects[name + "-camera"]
        shots.append(shot_scene)
    strips = compat.top_strips(edit.sequence_editor)
    a = strips.new_scene("A", shots[0], 2, 1)
    a.frame_final_duration = 12
    b = strips.new_scene("B", shots[1], 2, 13)
    b.frame_final_duration = 12
    for s in compat.all_strips(edit.sequence_editor):
        s.select = False
    before = strips_snapshot(edit)

    assert bpy.ops.stableavatar.animate_shots() == {"FINISHED"}
    jobs = edit.stableavatar.jobs
    assert [j.source for j in jobs] == ["A", "B"]
    wait_for(lambda: all(j.status in DONE for j in jobs), what="both shots")
    for j in jobs:
        assert os.path.isfile(os.path.join(j.job_dir, "inputs", "reference.png"))
    assert [j.status for j in jobs] == ["IMPORTED", "IMPORTED"], [j.error_text for j in jobs]
    ra, rb = (compat.all_strips(edit.sequence_editor)[j.result_strip] for j in jobs)
    assert (ra.frame_final_start, ra.frame_final_end, ra.channel) == (1, 13, 3)
    assert (rb.frame_final_start, rb.frame_final_end, rb.channel) == (13, 25, 3)
    assert [s for s in strips_snapshot(edit) if s[0] not in (ra.name, rb.name)] == before


def test_cancel_one_job_leaves_the_other(scene):
    sc = scene
    first = add_voice(sc, name="first", start=1, length=12)
    second = add_voice(sc, name="second", start=40, length=12)
    st = sc.stableavatar
    st.steps = 200  # long enough that the cancel surely lands while it denoises
    sc.sequence_editor.active_strip = first
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    st.steps = 1
    sc.sequence_editor.active_strip = second
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    j1, j2 = st.jobs
    wait_for(lambda: j1.phase == "denoise" and j1.step >= 1, what="the first job to denoise")
    assert bpy.ops.stableavatar.cancel_job(job_id=j1.job_id) == {"FINISHED"}
    assert j1.status == "CANCELLING"
    wait_for(lambda: j1.status in DONE and j2.status in DONE, what="cancel + the second job")
    assert (j1.status, j1.message, j1.result_strip) == ("CANCELLED", "cancelled", "")  # the backend's answer
    assert j2.status == "IMPORTED", j2.error_text
    assert {s.name for s in compat.all_strips(sc.sequence_editor)} == {"first", "second", j2.result_strip}


def test_killed_backend_shows_an_error_and_touches_nothing(scene):
    sc = scene
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    sc.stableavatar.steps = 40  # still denoising when the kill lands
    before = strips_snapshot(sc)
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = sc.stableavatar.jobs
    wait_for(lambda: job.phase == "denoise" and job.step >= 1, what="the job to denoise")
    pid = runtime().SESSION.client.pid
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: job.status in DONE, what="the error row")
    assert job.status == "ERROR"
    assert "exit code -9" in job.message and "Retry" in job.error_text
    assert strips_snapshot(sc) == before
    # Retry resumes the same job folder on a fresh backend
    assert bpy.ops.stableavatar.retry_job(job_id=job.job_id) == {"FINISHED"}
    wait_for(lambda: job.status in DONE, what="the retried job")
    assert job.status == "IMPORTED", job.error_text
    assert runtime().SESSION.client.pid != pid


def test_reopening_the_blend_reattaches_and_imports(scene, tmp_path):
    sc = scene
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    sc.stableavatar.steps = 40  # still denoising when Blender "crashes"
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job_id = sc.stableavatar.jobs[0].job_id
    job = sc.stableavatar.jobs[0]
    wait_for(lambda: job.phase == "denoise" and job.step >= 1, what="the job to denoise")
    path = str(tmp_path / "edit.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)

    # Blender "crashes": the backend dies with it and no event is ever handled
    rt = runtime()
    rt.SESSION.client.kill()
    rt.SESSION.client.proc.wait(30)
    rt.SESSION.client, rt.SESSION.sent = None, set()
    while not rt.SESSION.events.empty():
        rt.SESSION.events.get_nowait()

    bpy.ops.wm.open_mainfile(filepath=path)  # load_post handler: re-attach
    sc = bpy.context.scene
    (job,) = sc.stableavatar.jobs
    assert job.job_id == job_id and job.status in ("QUEUED", "RUNNING"), (job.status, job.error_text)
    wait_for(lambda: job.status in DONE, what="the re-attached job")
    assert job.status == "IMPORTED", job.error_text
    strips = compat.all_strips(sc.sequence_editor)
    result = strips[job.result_strip]
    assert result.frame_final_start == strips["voice"].frame_final_start and result.channel == 2
    assert result["stableavatar_job"] == job_id


def test_job_that_finished_while_its_file_was_closed_is_imported_on_open(scene, tmp_path):
    sc = scene
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job_dir = sc.stableavatar.jobs[0].job_dir
    path = str(tmp_path / "edit.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.read_homefile(use_empty=True)  # another file is open while the backend finishes
    rt = runtime()
    from blender_addon import jobs as jobmodel
    wait_for(lambda: jobmodel.finished_result(job_dir) is not None, what="the backend to finish")
    wait_for(lambda: not rt.SESSION.sent, 30, what="the done event to be consumed")
    bpy.ops.wm.open_mainfile(filepath=path)
    (job,) = bpy.context.scene.stableavatar.jobs
    assert job.status == "IMPORTED", job.error_text  # imported by the load handler, no backend needed
    def ours():
        return [s for s in compat.all_strips(bpy.context.scene.sequence_editor)
                if s.get("stableavatar_job") == job.job_id]
    assert len(ours()) == 1
    rt.tick()  # nothing left over may import a second copy
    assert job.status == "IMPORTED" and len(ours()) == 1


def test_missing_weights_is_an_error_row_with_a_hint(scene, tmp_path):
    sc = scene
    empty = tmp_path / "no-weights"
    empty.mkdir()
    from blender_env import prefs
    prefs().checkpoints = str(empty)  # the idle backend restarts with the new preferences
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    before = strips_snapshot(sc)
    bpy.ops.stableavatar.animate()
    (job,) = sc.stableavatar.jobs
    wait_for(lambda: job.status in DONE, 120, what="the error row")
    assert job.status == "ERROR"
    assert "missing_weights" in job.message and "hint:" in job.error_text, job.error_text
    assert "weights NOT usable" in prefs().backend_report
    assert strips_snapshot(sc) == before


def test_camera_markers_make_one_shot_each(scene):
    import sys
    from blender_env import PKG
    animate = sys.modules[PKG + ".operators.animate"]
    sc = scene
    sc.frame_start, sc.frame_end = 1, 60
    add_voice(sc, channel=2, start=1, trim_start=0, length=60)
    cams = [add_cube_and_camera(sc, n) for n in ("wide", "close")]
    for frame, cam in ((1, cams[0]), (25, cams[1])):
        m = sc.timeline_markers.new(f"F_{frame}", frame=frame)
        m.camera = cam
    sc.timeline_markers.new("no camera", frame=40)  # ignored: not bound to a camera
    shots = animate.camera_marker_shots(sc)
    assert [(s.source, s.left, s.right, s.render_camera.name, s.render_frame, s.channel_above) for s in shots] == [
        ("F_1", 1, 25, "wide-camera", 1, 2), ("F_25", 25, 61, "close-camera", 25, 2)]
