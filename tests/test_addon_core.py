"""The add-on's bpy-free core, on every run (no Blender needed): fps and audio range maths, job folders,
the job-row state machine and the client's view of the contract."""
import json
import math
import sys
from fractions import Fraction
from types import SimpleNamespace

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))  # the add-on's core as plain `blender_addon`, as Blender's tests import it
from blender_addon import audio_range, client, contract, jobs, rows, timing  # noqa: E402

FPS = {"24": (24, 1.0), "25": (25, 1.0), "30": (30, 1.0), "29.97": (30, 1.001), "50": (50, 1.0), "60": (60, 1.0)}


def test_nothing_here_imports_bpy_or_torch():
    for mod in (audio_range, client, contract, jobs, rows, timing):
        src = open(mod.__file__, encoding="utf-8").read()
        assert "import bpy" not in src and "import torch" not in src, mod.__name__


def test_scene_fps_is_exact_for_ntsc():
    assert timing.scene_fps(30, 1.001) == Fraction(30000, 1001)
    assert timing.scene_fps(30, 1.0010000467300415) == Fraction(30000, 1001)  # fps_base as Blender stores it
    assert timing.scene_fps(24, 1.0) == 24


@pytest.mark.parametrize("name", FPS)
def test_element_indices_keep_lips_in_sync(name):
    fps = timing.scene_fps(*FPS[name])
    n_model = 250  # 10 s at 25 fps
    n_scene = timing.scene_frames_for_model_frames(n_model, fps)
    idx = timing.element_indices(n_scene, n_model, fps)
    assert len(idx) == math.ceil(Fraction(10) * fps)
    assert idx[0] == 0 and idx[-1] in (n_model - 1, n_model - 2)
    assert all(b - a in (0, 1, 2, 3) for a, b in zip(idx, idx[1:]))
    for i, j in enumerate(idx):  # the model frame shown at scene frame i covers the instant i / fps
        t = Fraction(i) / fps
        assert Fraction(j, 25) <= t < Fraction(j + 1, 25)


def test_element_indices_known_values():
    assert timing.element_indices(6, 5, Fraction(30)) == [0, 0, 1, 2, 3, 4]
    assert timing.element_indices(5, 5, Fraction(25)) == [0, 1, 2, 3, 4]
    assert timing.element_indices(4, 5, Fraction(20)) == [0, 1, 2, 3]
    assert timing.element_indices(4, 2, Fraction(25)) == [0, 1, 1, 1]  # short result: hold the last frame


def test_contribution_follows_trims_offset_and_fps():
    s = audio_range.StripTiming("v", "/a.wav", left=22, right=46, content_start=10, sound_offset=0.5, volume=0.7)
    c = audio_range.contribution(s, 22, 46, Fraction(24))
    assert (c.out_offset, c.n, c.src_start) == (0, 16000, 16000 // 2 + 8000)  # 12 frames @24 = 0.5 s, +0.5 s
    ntsc = timing.scene_fps(30, 1.001)
    c = audio_range.contribution(s, 22, 46, ntsc)
    assert c.n == round(Fraction(46) * 16000 / ntsc) - round(Fraction(22) * 16000 / ntsc) == 12813
    assert c.src_start == round((Fraction(12) / ntsc + Fraction(1, 2)) * 16000) == 14406
    # a range only partly covered: mixdown of a shot that starts before the strip
    c = audio_range.contribution(s, 0, 30, Fraction(25))
    assert (c.out_offset, c.n, c.src_start) == (22 * 640, 8 * 640, 12 * 640 + 8000)
    assert audio_range.contribution(s, 46, 60, Fraction(25)) is None


def test_overlapping():
    a = audio_range.StripTiming("a", "", 0, 50, 0, 0, 1)
    b = audio_range.StripTiming("b", "", 49, 80, 49, 0, 1)
    c = audio_range.StripTiming("c", "", 50, 80, 50, 0, 1)
    assert [s.name for s in audio_range.overlapping(a, [a, b, c])] == ["b"]


def test_placement_travels_in_the_job_record(tmp_path):
    pl = jobs.Placement(scene="S", source="voice", frame_start=10, channel_above=2, n_scene_frames=48,
                        fps=30, fps_base=1.001, take=2, replace_previous=True)
    assert jobs.Placement.from_client_record(json.loads(json.dumps(pl.client_record()))) == pl
    job_dir = tmp_path / "j1"
    with pytest.raises(ValueError, match="cannot be imported"):
        jobs.read_placement(str(job_dir))
    job_dir.mkdir()
    (job_dir / "job.json").write_text(json.dumps({"id": "j1", "client": pl.client_record()}))
    assert jobs.read_placement(str(job_dir)) == pl
    assert jobs.finished_result(str(job_dir)) is None
    (job_dir / "frames").mkdir()
    (job_dir / "frames" / "000000.png").write_bytes(b"")
    (job_dir / "frames" / ".000001.partial.png").write_bytes(b"")  # a write in progress is never a frame
    assert jobs.finished_result(str(job_dir)) is None  # no manifest yet: still running
    (job_dir / "manifest.json").write_text("{}")
    assert jobs.finished_result(str(job_dir)) == (str(job_dir / "frames"), 1)
    assert jobs.input_path(str(job_dir), "image", ".PNG") == str(job_dir / "inputs" / "reference.png")


def new_row(**kw):
    row = SimpleNamespace(status=rows.PREPARING, message="", phase="", fraction=0.0, step=0, steps=0, window=0,
                          windows=0, eta_s=-1.0, seed=-1, error_text="")
    row.__dict__.update(kw)
    return row


def test_row_follows_a_job_from_accepted_to_done():
    row = new_row()
    assert rows.apply(row, {"type": "accepted", "position": 1, "seed": 1234}) is None
    assert (row.status, row.message, row.seed) == (rows.QUEUED, "queued (1 ahead)", 1234)
    rows.apply(row, {"type": "progress", "phase": "denoise", "step": 3, "steps": 10, "window": 1, "windows": 2,
                     "fraction": 0.4, "eta_s": 75.4})
    assert row.status == rows.RUNNING and row.message == "denoise · window 1/2 · step 3/10 · ETA 1:15"
    assert rows.apply(row, {"type": "done"}) == rows.IMPORT
    rows.imported(row, "voice avatar", 3, 25)
    assert row.status == rows.IMPORTED and rows.apply(row, {"type": "done"}) is None  # never imported twice


def test_row_cancel_error_and_a_stopped_backend():
    row = new_row(status=rows.RUNNING)
    rows.cancel_requested(row)
    assert rows.apply(row, {"type": "done"}) is None and row.status == rows.CANCELLED
    row = new_row(status=rows.RUNNING)
    rows.apply(row, {"type": "error", "category": "bad_input", "message": "audio is silent", "hint": "check it"})
    assert row.status == rows.ERROR and row.message == "bad_input: audio is silent" and "hint: check it" in \
        row.error_text
    row = new_row(status=rows.RUNNING)
    assert rows.backend_stopped(row, -9, "/log", "tail", resubmit=True) is True and row.status == rows.RUNNING
    assert rows.backend_stopped(row, -9, "/log", "tail", resubmit=False) is False
    assert row.status == rows.ERROR and "exit code -9" in row.message and "Retry" in row.error_text
    assert rows.backend_stopped(new_row(status=rows.IMPORTED), 0, "", "", False) is False


@pytest.mark.parametrize("event", [
    {"type": "progress", "fraction": "x", "step": None, "eta_s": float("nan"), "windows": [1]},
    {"type": "progress", "fraction": 7, "step": 2**80},
    {"type": "accepted", "position": {}, "seed": "s"},
    {"type": "error"}, {"type": "cancelled"}, {"type": "no such event"}, {},
])
def test_row_never_raises_on_odd_events(event):
    row = new_row(status=rows.RUNNING)
    rows.apply(row, event)
    assert 0.0 <= row.fraction <= 1.0 and isinstance(row.step, int) and row.eta_s == row.eta_s


def test_client_refuses_another_protocol_and_sends_only_known_params():
    ready = {"type": "ready", "capabilities": contract.capabilities()}
    assert client.incompatible(ready) is None
    other = {"type": "ready", "capabilities": {**contract.capabilities(), "protocol": contract.PROTOCOL + 1}}
    assert "protocol" in client.incompatible(other) and "update" in client.incompatible(other)
    caps = {"capabilities": {"params": {"width": {}, "steps": {}}}}
    assert client.known_params({"width": 64, "steps": 2, "seed": -1}, caps) == {"width": 64, "steps": 2}
    assert client.known_params({"seed": -1}, None) == {"seed": -1}


def test_backend_command_comes_from_the_engine_settings():
    argv = client.backend_command("/py", contract.EngineSettings(checkpoints="/w", device="cpu", dtype="float32"),
                                  log_dir="/logs")
    assert argv == ["/py", "-u", "-m", "stableavatar", "serve", "--stdio", "--checkpoints", "/w", "--device",
                    "cpu", "--dtype", "float32", "--log-dir", "/logs"]
    with pytest.raises(contract.ContractError, match="device"):
        client.backend_command("/py", contract.EngineSettings(device="tpu"))
