"""Backend = Remote (SSH) in the real add-on, against a real OpenSSH server (tests/sshd_server.py): the job's
inputs go up, its frames come back verified and are imported; the connection killed mid-denoise reconnects and
the job resumes to frames byte-identical to an uninterrupted local run; setup failures are one line in seconds;
quitting ends the remote worker."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import os
import re
import time
from pathlib import Path

import bpy
import pytest

from blender_env import BACKEND_PYTHON, add_voice, compat, prefs, runtime, wait_for
from sshd_server import Sshd  # noqa: F401  (the sshd fixture: tests/conftest.py)

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender


@pytest.fixture
def remote_jobs(scene, sshd, tmp_path):
    """The preferences pointing at the SSH server (Backend still Local); Local again afterwards."""
    root = tmp_path / "remote-jobs"
    for name, value in sshd.settings(BACKEND_PYTHON, root).items():
        setattr(prefs().remote, name, value)
    yield root
    runtime().stop_backend(settle=False)
    prefs().remote.backend = "LOCAL"


def frames_of(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder, "frames").glob("*.png"))}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # another machine's process: no event to block on
    return gone(pid)


def test_remote_job_survives_a_cut_connection_and_imports_transferred_frames(scene, remote_jobs, monkeypatch):
    rt = runtime()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local reference worker runs like the remote one
    rt.stop_backend(settle=False)
    sc = scene
    st = sc.stableavatar
    st.width = st.height = 64
    st.steps, st.seed, st.new_seed_per_take = 12, 7, False  # the same take twice
    voice = add_voice(sc, length=100)  # 4 s: 100 frames in two windows
    sc.sequence_editor.active_strip = voice

    # the uninterrupted local run
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    local = st.jobs[0]
    wait_for(lambda: local.status in ("IMPORTED", "ERROR"), what="the local job")
    assert local.status == "IMPORTED", local.error_text
    reference = frames_of(local.job_dir)
    assert len(reference) == 100

    # the same job on the remote backend, its connection cut in the middle of denoising
    prefs().remote.backend = "REMOTE"
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = st.jobs[1]
    assert job.status in ("QUEUED", "RUNNING"), job.error_text
    wait_for(lambda: job.status == "ERROR" or job.phase == "denoise" and job.step >= 1, what="denoising remotely")
    assert job.status == "RUNNING", job.error_text
    client = rt.SESSION.client
    first_worker = rt.SESSION.info["pid"]
    client.link.kill()  # SIGKILL to our ssh: the connection is gone, nothing is said to the remote
    wait_for(lambda: job.status in ("IMPORTED", "ERROR"), what="the remote job after the reconnect")
    assert job.status == "IMPORTED", job.error_text
    assert rt.SESSION.client is client and client.links == 2  # the same backend, reconnected once

    (remote_dir,) = [p for p in remote_jobs.iterdir() if p.name != "logs"]
    resumed = re.findall(r"resuming from checkpoint at step (\d+)/12", (remote_dir / "log").read_text())
    assert resumed and 1 <= int(resumed[0]) < 12, "the job did not resume from a mid-denoise checkpoint"
    got = frames_of(job.job_dir)
    assert got == reference, f"{sum(got.get(n) != b for n, b in reference.items())} frames differ from the local run"
    assert frames_of(remote_dir) == reference
    assert not Path(job.job_dir).resolve().is_relative_to(remote_jobs.resolve())
    strip = compat.all_strips(sc.sequence_editor)[job.result_strip]
    assert Path(bpy.path.abspath(strip.directory)).resolve() == (Path(job.job_dir) / "frames").resolve()
    assert len(strip.elements) == voice.frame_final_duration
    assert wait_gone(first_worker), "the remote worker of the cut connection kept running"

    # quitting Blender (what registration's atexit does) ends the remote worker
    worker = rt.SESSION.info["pid"]
    assert worker != first_worker and not gone(worker)
    rt.stop_backend(timeout=10.0, settle=False)
    assert wait_gone(worker, 15.0), "the remote worker outlived Blender"


CASES = {
    "unknown host key": (lambda s: {"known_hosts": str(s.empty_known_hosts)}, "host key of"),
    "wrong key": (lambda s: {"identity": str(s.wrong_key)}, "refused the SSH key"),
    "missing backend": (lambda s: {"command": "/opt/nowhere/bin/stableavatar"}, "was not found on"),
}


@pytest.mark.parametrize("case", CASES)
def test_setup_failure_is_one_line_on_the_row_within_seconds(scene, remote_jobs, sshd, case):
    changes, fragment = CASES[case]
    r = prefs().remote
    for name, value in changes(sshd).items():
        setattr(r, name, value)
    r.backend = "REMOTE"
    voice = add_voice(scene, length=12)
    scene.sequence_editor.active_strip = voice
    t0 = time.monotonic()
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    (job,) = scene.stableavatar.jobs
    wait_for(lambda: job.status == "ERROR", timeout=20, what=f"the {case} error")
    assert time.monotonic() - t0 < 10
    assert fragment in job.message and "\n" not in job.message, job.message
    assert "hint: " in job.error_text
    report = prefs().backend_report.splitlines()
    assert fragment in report[0] and report[1].startswith("hint: "), report
    assert runtime().SESSION.client is None
