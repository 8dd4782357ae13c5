"""Undo-safe job rows and takes: an import is its own undo step, rows never rewind, an undone avatar strip is
reported with Re-import; new seed per take, Replace replaces only the last take, switch/compare/delete."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import os
from pathlib import Path

import bpy
import pytest

from blender_env import add_voice, compat, runtime, wait_for

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender
DONE = ("IMPORTED", "ERROR", "CANCELLED")


def _ours(sc, job_id=None):
    return [s for s in compat.all_strips(sc.sequence_editor) if s.get("stableavatar_job") is not None
            and (job_id is None or s.get("stableavatar_job") == job_id)]


def _run(sc, strip_name="voice"):
    sc.sequence_editor.active_strip = compat.all_strips(sc.sequence_editor)[strip_name]
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = sc.stableavatar.jobs[-1]
    job_id = job.job_id
    wait_for(lambda: bpy.context.scene.stableavatar.jobs[-1].status in DONE, what="the take")
    job = next(j for j in bpy.context.scene.stableavatar.jobs if j.job_id == job_id)
    assert job.status == "IMPORTED", job.error_text
    return job


def test_undo_of_a_later_edit_keeps_the_avatar_and_the_row(scene):
    sc = scene
    add_voice(sc, length=12)
    bpy.ops.ed.undo_push(message="voice added")
    sc.sequence_editor.active_strip = compat.all_strips(sc.sequence_editor)["voice"]
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    bpy.ops.ed.undo_push(message="animate pressed")
    job_id = sc.stableavatar.jobs[0].job_id
    wait_for(lambda: bpy.context.scene.stableavatar.jobs[0].status in DONE, what="the job")
    sc = bpy.context.scene
    assert sc.stableavatar.jobs[0].status == "IMPORTED"
    # a later edit, then one Ctrl+Z of it
    compat.all_strips(sc.sequence_editor)["voice"].volume = 0.5
    bpy.ops.ed.undo_push(message="volume")
    bpy.ops.ed.undo()
    sc = bpy.context.scene
    (job,) = sc.stableavatar.jobs
    assert job.status == "IMPORTED" and len(_ours(sc, job_id)) == 1, (job.status, job.message)
    # the undo steps before the import: the strip goes (the import was its own step), the row says so
    bpy.ops.ed.undo()
    sc = bpy.context.scene
    (job,) = sc.stableavatar.jobs
    assert _ours(sc, job_id) == []
    assert job.status == "IMPORTED" and "no longer on the timeline" in job.message and "Re-import" in job.message
    assert bpy.ops.stableavatar.reimport_job(job_id=job_id) == {"FINISHED"}
    assert len(_ours(bpy.context.scene, job_id)) == 1


def test_undo_while_a_job_runs_keeps_its_row(scene):
    sc = scene
    bpy.ops.ed.undo_push(message="empty")
    add_voice(sc, length=12)
    bpy.ops.ed.undo_push(message="voice added")
    sc.sequence_editor.active_strip = compat.all_strips(sc.sequence_editor)["voice"]
    sc.stableavatar.steps = 6
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job_id = sc.stableavatar.jobs[0].job_id
    runtime().tick()
    bpy.ops.ed.undo()  # back to before Animate: the row would vanish with it
    sc = bpy.context.scene
    assert [j.job_id for j in sc.stableavatar.jobs] == [job_id]
    wait_for(lambda: bpy.context.scene.stableavatar.jobs[0].status in DONE, what="the job")
    assert bpy.context.scene.stableavatar.jobs[0].status == "IMPORTED"


def _take(sc, n):
    return next(j for j in sc.stableavatar.jobs if j.take == n)


def test_takes_seeds_replace_last_switch_compare_delete(scene):
    sc = scene
    add_voice(sc, length=12)
    sc.stableavatar.new_seed_per_take = True
    _run(sc)
    _run(bpy.context.scene)
    sc = bpy.context.scene  # row references die when rows are added: look them up by take
    seed1, seed2 = _take(sc, 1).seed, _take(sc, 2).seed
    dir1, dir2 = Path(_take(sc, 1).job_dir), Path(_take(sc, 2).job_dir)
    assert seed1 >= 0 and seed2 >= 0 and seed1 != seed2  # a 1 in 2^31 chance of a false failure
    strips = {s.get("stableavatar_take"): s for s in _ours(sc)}
    assert strips[1]["stableavatar_seed"] == seed1 and strips[2]["stableavatar_seed"] == seed2
    first = sorted(os.listdir(dir1 / "frames"))[0]
    assert (dir1 / "frames" / first).read_bytes() != (dir2 / "frames" / first).read_bytes()  # another take

    sc.stableavatar.replace_previous = True
    _run(sc)
    sc = bpy.context.scene
    assert sorted(s.get("stableavatar_take") for s in _ours(sc)) == [1, 3]  # only the last take (2) was replaced

    takes = __import__("sys").modules[blender_env.PKG + ".operators.takes"]
    assert [j.take for j in takes.takes_of(sc, compat.all_strips(sc.sequence_editor)["voice"])] == [3, 2, 1]
    assert bpy.ops.stableavatar.take_switch(job_id=_take(sc, 2).job_id) == {"FINISHED"}
    assert [s.get("stableavatar_take") for s in _ours(sc)] == [2]
    assert bpy.ops.stableavatar.take_compare(job_id=_take(sc, 3).job_id) == {"FINISHED"}
    by_take = {s.get("stableavatar_take"): s for s in _ours(sc)}
    assert set(by_take) == {2, 3} and by_take[3].channel > by_take[2].channel  # stacked above to compare
    assert bpy.ops.stableavatar.reuse_seed(job_id=_take(sc, 2).job_id) == {"FINISHED"}
    assert not sc.stableavatar.new_seed_per_take and sc.stableavatar.seed == seed2
    (dir1 / "my notes.txt").write_text("not the add-on's")
    assert bpy.ops.stableavatar.take_delete(job_id=_take(sc, 1).job_id) == {"FINISHED"}
    assert sorted(j.take for j in sc.stableavatar.jobs) == [2, 3]
    assert sorted(os.listdir(dir1)) == ["my notes.txt"]  # its files are gone, a file we did not make stays
