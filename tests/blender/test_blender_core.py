"""The bpy-free core: fps mapping, audio range maths, job files, and the client against the real backend."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import math
import queue
import time
from fractions import Fraction

import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS
from blender_addon import audio_range, jobs, timing
from blender_addon.client import BackendClient, backend_command

pytestmark = pytest.mark.blender

FPS = {"24": (24, 1.0), "25": (25, 1.0), "30": (30, 1.0), "29.97": (30, 1.001), "50": (50, 1.0), "60": (60, 1.0)}


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


def test_job_record_round_trip(tmp_path):
    pl = jobs.Placement(scene="S", source="voice", frame_start=10, channel_above=2, n_scene_frames=48,
                        fps=30, fps_base=1.001, take=2, replace_previous=True)
    rec = jobs.JobRecord(id="j1", job_dir=str(tmp_path / "j1"), image="i.png", audio="a.wav",
                         params={"steps": 2}, placement=pl, samples=123)
    rec.save()
    assert jobs.JobRecord.load(rec.job_dir) == rec
    assert jobs.finished_result(rec.job_dir) is None
    (tmp_path / "j1" / "frames").mkdir()
    (tmp_path / "j1" / "frames" / "000000.png").write_bytes(b"")
    assert jobs.finished_result(rec.job_dir) is None  # no manifest yet: still running
    (tmp_path / "j1" / "manifest.json").write_text("{}")
    assert jobs.finished_result(rec.job_dir) == (str(tmp_path / "j1" / "frames"), 1)


def _next(events, kind, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if ev.get("type") == kind:
            return ev
        assert ev.get("type") != "exit", f"backend exited: {ev}"
    raise AssertionError(f"no {kind} event")


def test_client_talks_to_the_real_backend(tmp_path):
    events = queue.Queue()
    argv = backend_command(BACKEND_PYTHON, str(CHECKPOINTS), "cpu", log_dir=str(tmp_path))
    client = BackendClient(argv, str(tmp_path / "backend.log"), events, cwd=str(tmp_path)).start()
    try:
        ready = _next(events, "ready")
        assert ready["protocol"] == 1 and ready["weights"]["found"] and ready["device"] == "cpu"
        assert client.send("status")
        status = _next(events, "status")
        assert status["running"] is None and status["queue"] == []
        assert client.send("no_such_op")
        err = _next(events, "error")
        assert err["category"] == "bad_request"
        client.stop(timeout=30)
        exit_event = _next(events, "exit")
        assert exit_event["returncode"] == 0
        assert not client.alive and not client.send("status")
    finally:
        client.kill()
