"""Animate Selected Strips sent to the shot farm, in real Blender against a real local Ray cluster: one batch
through the backend's farm CLI, rows moved by its events, the results imported from where this machine sees the
shared folder (the nodes see it under another path). Blender itself never imports ray
(tests/test_addon_farm.py checks the add-on's files)."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)

import bpy
import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS, add_voice, compat, prefs, runtime, wait_for
from blender_env import addon, scene  # noqa: F401  (pytest fixtures)
from ray_cluster import has_ray, local_cluster

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not has_ray(BACKEND_PYTHON):
        pytest.skip("the backend Python has no ray (pip install '.[farm]')")
    with local_cluster(BACKEND_PYTHON, tmp_path_factory.mktemp("ray") / "ray.log") as address:
        yield address


def test_animate_selected_goes_to_the_farm_and_imports_as_results_land(scene, cluster, tmp_path):
    store = tmp_path / "store"   # the shared folder as the nodes mount it
    store.mkdir()
    view = tmp_path / "view"     # ... and as this machine sees it
    view.symlink_to(store)
    p = prefs()
    p.use_farm, p.farm_address = True, cluster
    p.farm_jobs_root, p.farm_node_root, p.farm_checkpoints = str(view), str(store), str(CHECKPOINTS)
    try:
        sc = scene
        sc.stableavatar.steps = 2
        a = add_voice(sc, name="line-a", start=1, length=12)
        b = add_voice(sc, name="line-b", start=30, length=12)
        span_a = (a.frame_final_start, a.frame_final_end)
        for s in compat.all_strips(sc.sequence_editor):
            s.select = s in (a, b)
        assert bpy.ops.stableavatar.animate_selected() == {"FINISHED"}
        jobs = sc.stableavatar.jobs
        assert [j.source for j in jobs] == ["line-a", "line-b"]
        assert all(j.job_dir.startswith(str(view)) and j.status == "QUEUED" for j in jobs)
        wait_for(lambda: all(j.status in ("IMPORTED", "ERROR", "CANCELLED") for j in jobs), what="the farm batch")
        assert [j.status for j in jobs] == ["IMPORTED", "IMPORTED"], [j.error_text for j in jobs]
        assert jobs[0].farm_batch and jobs[0].farm_batch == jobs[1].farm_batch  # one batch
        for j in jobs:
            strip = compat.all_strips(sc.sequence_editor)[j.result_strip]
            assert bpy.path.abspath(strip.directory).startswith(str(view))
            assert (store / j.job_id / "manifest.json").is_file()  # written by a farm runner
        ra = compat.all_strips(sc.sequence_editor)[jobs[0].result_strip]
        assert (ra.frame_final_start, ra.frame_final_end) == span_a  # in sync with its sound
    finally:
        p.use_farm = False
        runtime().stop_backend(settle=False)
