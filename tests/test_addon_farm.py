"""The add-on's farm side without Blender or a cluster: paths between this machine and the nodes, the shots it
sends, and how `farm --json` lines become the worker's job events that move rows (blender_addon/farm.py). The
same code against a real Ray cluster and the real CLI: tests/test_farm.py."""
import sys
from types import SimpleNamespace

from conftest import REPO

sys.path.insert(0, str(REPO))
from blender_addon import contract, farm, rows  # noqa: E402


def test_no_bpy_no_torch_no_ray():
    src = open(farm.__file__, encoding="utf-8").read()
    assert "import bpy" not in src and "import torch" not in src
    addon = [REPO / n for n in ("__init__.py", "registration.py", "preferences.py")]
    addon += [f for d in ("blender_addon", "operators", "ui") for f in sorted((REPO / d).glob("*.py"))]
    for f in addon:  # Blender reaches the farm through the backend's CLI only
        assert "import ray" not in f.read_text(encoding="utf-8"), f


def test_paths_cross_between_this_machine_and_the_nodes():
    m = farm.PathMap("/Volumes/show/jobs", "/mnt/show/jobs")
    assert m.to_node("/Volumes/show/jobs/ab12/inputs/audio.wav") == "/mnt/show/jobs/ab12/inputs/audio.wav"
    assert m.to_local("/mnt/show/jobs/ab12/frames") == "/Volumes/show/jobs/ab12/frames"
    assert m.to_node("/Volumes/show/jobs") == "/mnt/show/jobs"
    assert m.to_node("/Volumes/show/jobs-old/x") == "/Volumes/show/jobs-old/x"  # a prefix of a name is no match
    assert m.to_node("/elsewhere/x.png") == "/elsewhere/x.png"
    win = farm.PathMap("S:\\show\\jobs", "/mnt/show/jobs")
    assert win.to_node("S:\\show\\jobs\\ab12\\inputs\\reference.png") == "/mnt/show/jobs/ab12/inputs/reference.png"
    same = farm.PathMap("/shared/jobs", "")
    assert same.to_node("/shared/jobs/a") == "/shared/jobs/a" and same.to_local("/shared/jobs/a") == "/shared/jobs/a"


def test_a_shot_is_a_submit_with_node_paths_and_the_requested_params():
    m = farm.PathMap("/local/jobs", "/node/jobs")
    request = {"image": "/local/jobs/j1/inputs/reference.png", "audio": "/local/jobs/j1/inputs/audio.wav",
               "params": {"seed": 12345, "steps": 10}, "params_requested": {"seed": -1, "steps": 10},
               "client": {"scene": "Scene"}}
    shot = farm.shot_entry("j1", "/local/jobs/j1", request, m)
    assert shot == {"id": "j1", "job_dir": "/node/jobs/j1", "image": "/node/jobs/j1/inputs/reference.png",
                    "audio": "/node/jobs/j1/inputs/audio.wav", "params": {"seed": -1, "steps": 10},
                    "client": {"scene": "Scene"}}
    contract.SHOT.check(shot)  # exactly what SHOTS.json takes


def _row():
    return SimpleNamespace(status=rows.QUEUED, message="", phase="", fraction=0.0, step=0, steps=0, window=0,
                           windows=0, eta_s=-1.0, seed=-1, error_text="")


def test_farm_lines_move_rows_like_worker_events():
    m = farm.PathMap("/local/jobs", "/node/jobs")
    row = _row()
    shot = {"protocol": 1, "type": "shot", "id": "j1", "batch": "b", "state": "running",
            "job_dir": "/node/jobs/j1", "attempt": 2, "pid": 7, "node": "n1"}
    ev = farm.job_event(shot, m)
    assert ev["type"] == "accepted" and ev["resumed"] and ev["job_dir"] == "/local/jobs/j1"
    rows.apply(row, ev)
    assert row.status == rows.RUNNING and row.message == "resumed"
    progress = {"protocol": 1, "type": "progress", "id": "j1", "phase": "denoise", "step": 3, "steps": 10,
                "window": 1, "windows": 5, "fraction": 0.4, "eta_s": 12.0, "frames_written": 0, "frames_total": 312}
    rows.apply(row, farm.job_event(progress, m))
    assert row.fraction == 0.4 and "step 3/10" in row.message
    done = {"protocol": 1, "type": "done", "id": "j1", "job_dir": "/node/jobs/j1",
            "frames_dir": "/node/jobs/j1/frames", "frames": 312, "video": "/node/jobs/j1/video.mp4",
            "manifest": "/node/jobs/j1/manifest.json"}
    ev = farm.job_event(done, m)
    assert ev["frames_dir"] == "/local/jobs/j1/frames" and ev["video"] == "/local/jobs/j1/video.mp4"
    assert rows.apply(row, ev) == rows.IMPORT
    assert farm.job_event({**shot, "state": "done"}, m) is None  # the outcome comes as its own line
    assert farm.job_event({"type": "summary", "batch": "b"}, m) is None
    bad = _row()
    rows.apply(bad, farm.job_event({"protocol": 1, "type": "error", "id": "j2", "category": "bad_input",
                                    "message": "image x is not an image", "hint": None, "traceback": None}, m))
    assert bad.status == rows.ERROR and bad.message.startswith("bad_input:")
