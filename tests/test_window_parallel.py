"""One job on several gloo ranks (CPU processes) gives the bytes of one process; a rank killed mid-job fails the
job cleanly and the job resumes, on one rank or several, to the same frames.

Real processes throughout: `stableavatar generate --devices N` (ranks spawned by rank 0), torchrun (ranks from the
launcher's environment) and the stdio worker with --devices 2. The tiny tree at 32x32 with 12.5 s of real speech
gives 5 windows (4 full + in official mode a shorter last one), so 2 ranks end on a partial round of 1 and 3 ranks
on a partial round of 2.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MEDIA, REPO, TINY
from test_service import Serve, assert_same_frames, frames_of, mid_denoise, submit

pytestmark = pytest.mark.timeout(420)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STABLEAVATAR_COLLECTIVE_TIMEOUT_S": "60",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "backend"), os.environ.get("PYTHONPATH")]))}
IMAGE = MEDIA / "case-1-reference.png"


def generate(out: Path, audio: Path, *extra, launcher: list[str] | None = None, steps: int = 2, seed: int = 42):
    argv = [*(launcher or [sys.executable]), "-m", "stableavatar", "generate", "--checkpoints", str(TINY),
            "--image", str(IMAGE), "--audio", str(audio), "--out", str(out), "--resolution", "32x32",
            "--steps", str(steps), "--seed", str(seed), "--device", "cpu", "--save-latents", *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=ENV, cwd=str(out.parent))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_rounds_are_balanced_and_end_on_a_partial_round():
    from stableavatar.window_parallel import rounds

    assert rounds(5, 2) == [[0, 1], [2, 3], [4]]
    assert rounds(5, 3) == [[0, 1, 2], [3, 4]]
    assert rounds(2, 4) == [[0, 1]]
    for n, world in [(5, 2), (7, 3), (70, 8)]:
        per_rank = [sum(1 for r in rounds(n, world) if k < len(r)) for k in range(world)]
        assert sum(per_rank) == n and max(per_rank) - min(per_rank) <= 1


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Warm workers on 1, 2 and 3 ranks (the last two spawn their followers)."""
    tmp = tmp_path_factory.mktemp("workers")
    ws = {n: Serve(tmp, "--device", "cpu", "--devices", str(n)) for n in (1, 2, 3)}
    try:
        for w in ws.values():
            assert w.next()["type"] == "ready"
        yield ws
    finally:
        for w in ws.values():
            w.stop()


@pytest.mark.parametrize("compat", ["fixed", "official"])
def test_two_and_three_ranks_give_the_bytes_of_one_process(compat, speech_12s, workers, tmp_path):
    params = {"width": 32, "height": 32, "steps": 2, "seed": 42, "compat": compat, "save_latents": True}
    dirs = {n: tmp_path / f"ranks{n}" for n in workers}
    for n, w in workers.items():  # all three run at once
        submit(w, f"{compat}{n}", dirs[n], speech_12s, params)
    for n, w in workers.items():
        assert w.terminal(f"{compat}{n}")[-1]["type"] == "done"
    manifest = json.loads((dirs[1] / "manifest.json").read_text())
    assert len(manifest["windows"]) == 5
    if compat == "official":  # the released loop's last window is shorter
        assert manifest["windows"][-1]["end"] - manifest["windows"][-1]["start"] < 21
    for n in (2, 3):
        assert json.loads((dirs[n] / "manifest.json").read_text())["devices"] == n
        assert (dirs[n] / "latents.safetensors").read_bytes() == (dirs[1] / "latents.safetensors").read_bytes()
        assert_same_frames(dirs[n], dirs[1])


def test_torchrun_ranks_give_the_bytes_of_one_process(speech_12s, workers, tmp_path):
    one = tmp_path / "one"
    submit(workers[1], "launcher-ref", one, speech_12s, {"width": 32, "height": 32, "steps": 2, "seed": 42})
    launched = generate(tmp_path / "torchrun", speech_12s,
                        launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"])
    assert workers[1].terminal("launcher-ref")[-1]["type"] == "done"
    assert json.loads((launched / "manifest.json").read_text())["devices"] == 2
    assert_same_frames(launched, one)


def _followers(pid: int) -> list[int]:
    """The rank processes a worker spawned (its children running rank_main)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"stableavatar.rank_main" in cmd:
            out.append(int(d.name))
    return out


def _wait_gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
                   for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_killed_rank_fails_the_job_cleanly_and_it_resumes_on_n_or_one_rank(speech_12s, workers, tmp_path):
    params = {"width": 32, "height": 32, "steps": 16, "seed": 7}
    reference = tmp_path / "reference"
    submit(workers[1], "kill-ref", reference, speech_12s, params)
    w = workers[2]  # the last test to use it: it ends by killing this worker
    first = _followers(w.proc.pid)
    assert len(first) == 1

    # cancel lands within one step on every rank; the job stays resumable
    job = tmp_path / "a"
    submit(w, "a", job, speech_12s, params)
    w.until(mid_denoise(2))
    w.send({"op": "cancel", "id": "a"})
    assert w.terminal("a")[-1]["type"] == "cancelled"

    # the follower rank killed mid-denoise: a clean error, no hang, the checkpoint kept
    submit(w, "a2", job, speech_12s, params)
    w.until(mid_denoise(5))
    os.kill(first[0], signal.SIGKILL)
    err = w.terminal("a2", timeout=90)[-1]
    assert err["type"] == "error" and err["category"] == "device_lost" and err["resumable"], err
    assert "rank 1" in err["message"] and "submit the job again" in err["hint"]

    # submitted again: a fresh follower, resumed from the checkpoint on 2 ranks, the uninterrupted bytes
    accepted = submit(w, "a3", job, speech_12s, params)
    assert accepted["resumed"] and accepted["from_step"] >= 5
    assert w.terminal("a3")[-1]["type"] == "done"
    assert workers[1].terminal("kill-ref")[-1]["type"] == "done"
    assert_same_frames(job, reference)
    second = _followers(w.proc.pid)
    assert len(second) == 1 and second != first

    # rank 0 (the worker) killed mid-denoise: its follower exits by itself; resume on one rank
    job_b = tmp_path / "b"
    submit(w, "b", job_b, speech_12s, params)
    w.until(mid_denoise(4))
    w.proc.kill()
    w.proc.wait(30)
    assert _wait_gone(second), "the follower rank outlived rank 0"
    r = subprocess.run([sys.executable, "-m", "stableavatar", "resume", str(job_b), "--devices", "1"],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_frames(job_b, reference)
    assert len(frames_of(job_b)) == 312  # 12.5 s at 25 fps
