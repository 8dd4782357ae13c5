"""Fault class 3, tracebacks instead of `error:`/`hint:`: filesystem faults (read-only, permission denied, a file
in the way, a full disk mid-job), resource limits (frame pixels, the latent state for the audio's length) and
corrupt configuration files each get one line, a hint and a category that says whose fault it is. A disk that
fills mid-job keeps the frames written so far, byte for byte, and the job finishes once space is freed."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from faults_kit import (IMAGE, assert_untouched, cli_process, copy_tree, fill, frames, generate, partial_files,
                        snapshot, speech, tmpfs)
from test_service import Serve, submit

pytestmark = pytest.mark.timeout(600)
BASE = "Wan2.1-Fun-V1.1-1.3B-InP"


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return speech(tmp_path_factory.mktemp("voice"), 1.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, voice):
    """An uninterrupted CLI run: what an interrupted one must match, frame for frame."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert generate(out, voice).code == 0
    return frames(out)


# ------------------------------------------------------------------------------------------ filesystems
def test_out_on_a_read_only_filesystem(voice, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        res = generate(ro / "shot", voice)
    res.one_error(6, "read-only file system")


def test_out_under_a_folder_you_may_not_write(voice, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    (parent / "mine.txt").write_text("user")
    parent.chmod(0o555)
    tmp_path.chmod(0o755)
    try:
        before = snapshot(parent)
        res = cli_process("generate", "--checkpoints", copy_tree(tmp_path), "--image", IMAGE, "--audio", voice,
                          "--out", parent / "shot", "--width", "32", "--height", "32", "--steps", "1",
                          "--device", "cpu", unprivileged=True)
        res.one_error(6, "permission denied")
        assert_untouched(before, parent)
    finally:
        parent.chmod(0o755)


def test_out_below_a_file(voice, tmp_path):
    (tmp_path / "take.txt").write_text("user")
    generate(tmp_path / "take.txt" / "shot", voice).one_error(6, "is a file, not a folder")


def test_disk_full_mid_job_keeps_the_frames_and_finishes_once_freed(voice, reference, tmp_path):
    with tmpfs(tmp_path / "disk", size="1M") as disk:
        filler = fill(disk, leave=64 << 10)  # room for the record and a dozen frames
        res = generate(disk / "shot", voice)
        res.one_error(7, "no space left")
        got = frames(disk / "shot")
        assert 0 < len(got) < len(reference), len(got)
        assert all(got[n] == reference[n] for n in got), "a frame written before the disk filled was damaged"
        assert not partial_files(disk / "shot") and not (disk / "shot" / "manifest.json").exists()
        filler.unlink()
        again = generate(disk / "shot", voice)  # our own unfinished folder: no --overwrite needed
        assert again.code == 0, again.stderr[-2000:]
        assert frames(disk / "shot") == reference


# ------------------------------------------------------------------------------------------ limits
@pytest.mark.parametrize("flags, fragment", [(["--width", "2048", "--height", "2048"], "megapixels"),
                                              (["--width", "4096"], "out of range")])
def test_huge_resolutions_are_refused_before_any_allocation(flags, fragment, voice, tmp_path):
    res = generate(tmp_path / "out", voice, *flags)
    res.one_error(2, fragment)
    assert not (tmp_path / "out").exists()


def test_audio_too_long_for_memory_is_refused_before_allocation():
    from stableavatar.contract import GenerationParams
    from stableavatar.errors import TooLargeError
    from stableavatar.job import check_state_fits, state_bytes

    p = GenerationParams(width=1280, height=1280)
    latents = 2 ** 30 // state_bytes(p, 1)  # a state of 1 GiB: four copies do not fit 2 GiB
    with pytest.raises(TooLargeError, match="for the sampler's state alone") as info:
        check_state_fits(p, latents, 600.0, memory=2 << 30)
    assert info.value.category == "too_large" and "shorter takes" in info.value.hint
    check_state_fits(p, latents, 600.0, memory=8 << 30)  # it fits a larger machine


# ------------------------------------------------------------------------------------------ configuration files
CONFIGS = {
    "DiT config.json truncated": (f"{BASE}/config.json", lambda t: t[: len(t) // 2], "config.json is not valid JSON"),
    "DiT config.json a list": (f"{BASE}/config.json", lambda t: "[1, 2]", "is not a JSON object"),
    "DiT config.json empty": (f"{BASE}/config.json", lambda t: "", "config.json is not valid JSON"),
    "DiT config.json of another model": (f"{BASE}/config.json", lambda t: json.dumps({**json.loads(t),
                                         "model_type": "t2v"}), "model_type='t2v'"),
    "arch.json truncated": ("arch.json", lambda t: t[:40], "arch.json is not valid JSON"),
    "wav2vec2 config.json truncated": ("wav2vec2-base-960h/config.json", lambda t: t[:30], "wav2vec2"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_corrupt_configuration_file_is_named(case, voice, tmp_path):
    rel, damage, fragment = CONFIGS[case]
    tree = copy_tree(tmp_path)
    path = tree / rel
    path.write_text(damage(path.read_text()))
    res = generate(tmp_path / "out", voice, tree=tree)
    res.one_error(3, fragment)


# ------------------------------------------------------------------------------------------ the worker
@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Serve(tmp_path_factory.mktemp("errors-worker"))
    assert w.next()["type"] == "ready"
    yield w
    w.stop()


PARAMS = {"width": 32, "height": 32, "steps": 2}


def _send(worker, job_id, job_dir, voice):
    worker.send({"op": "submit", "id": job_id, "job_dir": str(job_dir), "image": str(IMAGE), "audio": str(voice),
                 "params": PARAMS})
    return worker.until(lambda m: m.get("id") == job_id and m["type"] in ("accepted", "error"))[-1]


def test_worker_job_folder_on_a_read_only_filesystem_is_not_internal(worker, voice, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        err = _send(worker, "ro", ro / "job", voice)
    assert err["type"] == "error" and err["category"] == "filesystem", err
    assert "read-only file system" in err["message"] and err["traceback"] is None and err["hint"]


def test_worker_job_folder_below_a_file(worker, voice, tmp_path):
    (tmp_path / "f").write_text("user")
    err = _send(worker, "file", tmp_path / "f" / "job", voice)
    assert err["type"] == "error" and err["category"] == "filesystem" and "not a folder" in err["message"], err


def test_worker_disk_full_mid_job_is_resumable_with_identical_frames(worker, voice, tmp_path):
    done = submit(worker, "ref", tmp_path / "ref", voice, PARAMS, image=IMAGE)
    assert done and worker.terminal("ref")[-1]["type"] == "done"
    want = frames(tmp_path / "ref")
    with tmpfs(tmp_path / "disk", size="1M") as disk:
        job = disk / "job"
        inputs = sum(-(-p.stat().st_size // 4096) * 4096 for p in (IMAGE, voice))
        filler = fill(disk, leave=inputs + (64 << 10))  # the input copies, job.json, then a few frames' worth
        submit(worker, "full", job, voice, PARAMS, image=IMAGE)
        err = worker.terminal("full")[-1]
        assert err["type"] == "error" and err["category"] == "disk_full", err
        assert err["resumable"] and "free disk space" in err["hint"] and err["traceback"] is None
        got = frames(job)
        assert all(got[n] == want[n] for n in got) and not partial_files(job)
        filler.unlink()
        worker.send({"op": "submit", "id": "full2", "job_dir": str(job)})  # the folder alone resumes it
        accepted = worker.until(lambda m: m.get("id") == "full2" and m["type"] in ("accepted", "error"))[-1]
        assert accepted["type"] == "accepted" and accepted["resumed"], accepted
        assert worker.terminal("full2")[-1]["type"] == "done"
        assert frames(job) == want


def test_nan_audio_through_the_worker_is_named(worker, tmp_path):
    import soundfile as sf

    wave = np.sin(np.arange(16000) / 10).astype(np.float32)
    wave[5000] = np.nan
    sf.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    err = _send(worker, "nan", tmp_path / "job", tmp_path / "nan.wav")
    assert err["type"] == "error" and err["category"] == "bad_input" and "NaN" in err["message"], err
    assert not os.path.exists(tmp_path / "job")


@pytest.mark.parametrize("flags, code, fragment", [
    (["--checkpoints", IMAGE], 3, "is a file, not a folder"),
    (["--transformer", BASE], 3, "is a folder, not a file"),
    (["--prompt", "talking \udcff\udcfe"], 2, "not valid Unicode text"),  # bytes that are not UTF-8 in argv
], ids=["checkpoints is a file", "transformer is a folder", "prompt of invalid bytes"])
def test_wrong_kinds_of_argument_are_named(flags, code, fragment, voice, tmp_path):
    flags = [str(tmp_path / f) if f == BASE else f for f in flags]
    (tmp_path / BASE).mkdir()
    generate(tmp_path / "out", voice, *flags).one_error(code, fragment)
