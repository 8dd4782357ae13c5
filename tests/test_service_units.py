"""Service layers that need no model: job-dir locks and requests, out-of-memory hints (the protocol's parsing
and framing are tests/test_contract.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stableavatar.errors import UserInputError
from stableavatar import oom
from stableavatar.service.jobdir import JobDir, JobLock, JobLockedError

MEDIA = Path(__file__).parent / "data" / "media"


HOLDER = textwrap.dedent("""
    import sys
    from stableavatar.service.jobdir import JobDir
    lock = JobDir(sys.argv[1]).lock()
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_lock_excludes_other_process_and_is_taken_over_after_kill_9(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(JobLockedError) as info:
            JobDir(tmp_path).lock()
        assert info.value.pid == holder.pid and info.value.category == "busy"
        assert str(holder.pid) in info.value.message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = JobDir(tmp_path).lock()  # the kernel dropped the dead owner's lock
    assert lock.took_over == holder.pid
    assert (tmp_path / "lock").read_text().split()[0] == str(os.getpid())
    with pytest.raises(JobLockedError):  # a second lock in the same process is refused too
        JobLock(tmp_path / "lock").acquire()
    lock.release()
    assert (tmp_path / "lock").read_text() == ""
    with JobDir(tmp_path).lock() as held:  # entering an acquired lock keeps it (no second acquire)
        assert held.held
    assert not held.held
    JobDir(tmp_path).lock().release()


def test_prepare_request_copies_inputs_and_recognises_the_same_request(tmp_path):
    jd = JobDir(tmp_path / "job")
    image, audio = MEDIA / "case-1-reference.png", MEDIA / "case-2-speech.wav"
    params = {"width": 64, "height": 64, "steps": 2}
    req, resumable = jd.prepare_request(str(image), str(audio), params, "a", {"device": "cpu"})
    assert not resumable
    assert Path(req["image"]).read_bytes() == image.read_bytes() and Path(req["image"]).parent == jd.inputs
    assert json.loads(jd.request.read_text())["params"] == params
    jd.state.write_bytes(b"checkpoint")
    assert jd.checkpoint_meta() == {}  # unreadable header: no metadata, no crash
    (jd.frames).mkdir()
    req2, resumable = jd.prepare_request(str(image), str(audio), params, "b", {"device": "cpu"})
    assert resumable and req2["id"] == "b" and jd.state.exists()
    # the stored copies are accepted as inputs (resubmit from job.json) and compare equal
    req3, resumable = jd.prepare_request(req["image"], req["audio"], params, "c", {})
    assert resumable
    # a different request in the same directory starts over
    _, resumable = jd.prepare_request(str(image), str(audio), {**params, "seed": 7}, "d", {})
    assert not resumable and not jd.state.exists() and not jd.frames.exists()


def test_missing_inputs_and_job_json_are_user_errors(tmp_path):
    jd = JobDir(tmp_path)
    with pytest.raises(UserInputError, match="does not exist"):
        jd.prepare_request(str(tmp_path / "nope.png"), str(MEDIA / "case-2-speech.wav"), {}, "a", {})
    with pytest.raises(UserInputError, match="not a job directory"):
        jd.read_request()


def test_oom_hint_names_a_mode_or_resolution_that_fits():
    assert "model_offload" in oom.hint("full", 512, 512)
    assert "fp8" in oom.hint("model_offload", 480, 832)
    assert "sequential_offload" in oom.hint("fp8", 480, 832)
    h = oom.hint("sequential_offload", 480, 832)
    assert "336x576" in h
    assert oom.suggestion("full", 512, 512) == {"memory_mode": "model_offload", "width": 352, "height": 352}
    import torch
    assert oom.is_oom(torch.OutOfMemoryError("CUDA out of memory")) and oom.is_oom(MemoryError())
    assert not oom.is_oom(ValueError("x"))
