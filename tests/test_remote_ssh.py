"""The remote backend through a real OpenSSH server (tests/sshd_server.py) and the headless client
(`stableavatar remote`): setup failures in one line within seconds, paths outside the remote jobs root refused,
a job's files up and back verified, and shared storage copying nothing. The add-on's side, including a dropped
connection mid-denoise, is tests/blender/test_blender_remote.py."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MEDIA, REPO
from stableavatar import contract
from sshd_server import Sshd

pytestmark = pytest.mark.timeout(300)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "backend")}


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    import soundfile as sf
    wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16")
    path = tmp_path_factory.mktemp("media") / "speech-1s.wav"
    sf.write(path, wave[:sr], sr, subtype="PCM_16")
    return path


def remote(sshd: Sshd, *args, jobs_root: Path, timeout=240, **changes) -> subprocess.CompletedProcess:
    s = sshd.settings(sys.executable, jobs_root, **changes)
    flags = ["--host", f"{s['user']}@{s['host']}", "--port", str(s["port"]), "--identity", s["identity"],
             "--known-hosts", s["known_hosts"], "--remote-command", s["command"], "--device", "cpu",
             "--log", str(jobs_root.parent / "remote.log")]
    if "map" not in changes:
        flags += ["--remote-jobs-root", s["jobs_root"], "--checkpoints", s["checkpoints"]]
    else:
        flags += ["--map", changes["map"], "--checkpoints", s["checkpoints"]]
    return subprocess.run([sys.executable, "-m", "stableavatar", "remote", args[0], *flags, *args[1:]],
                          capture_output=True, text=True, timeout=timeout, env=ENV, cwd=jobs_root.parent)


CASES = {  # what is wrong -> (settings changed, what the one line says)
    "unknown host key": (lambda s: {"known_hosts": str(s.empty_known_hosts)}, "host key of"),
    "wrong key": (lambda s: {"identity": str(s.wrong_key)}, "refused the SSH key"),
    "missing backend": (lambda s: {"command": "/opt/nowhere/bin/stableavatar"}, "was not found on"),
    "nothing listening": (lambda s: {"port": s.port + 1 if s.port < 65535 else s.port - 1}, "connection refused"),
}


@pytest.mark.parametrize("case", CASES)
def test_setup_failures_end_in_one_clear_line_within_seconds(sshd, tmp_path, case):
    changes, fragment = CASES[case]
    t0 = time.monotonic()
    out = remote(sshd, "check", jobs_root=tmp_path / "jobs", **changes(sshd))
    elapsed = time.monotonic() - t0
    assert out.returncode == contract.CATEGORIES["connection"].exit_code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), out.stderr
    assert fragment in lines[0], lines
    assert elapsed < 10, f"{case}: {elapsed:.1f} s"
    assert out.stdout == ""


def test_paths_outside_the_remote_jobs_root_are_refused(sshd, tmp_path):
    """Straight through the connection, as a hostile or buggy client would send them."""
    sys.path.insert(0, str(REPO))
    from blender_addon import contract, remote as remote_pkg

    root, outside = tmp_path / "jobs", tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    cfg = remote_pkg.RemoteConfig(**sshd.settings(sys.executable, root))
    inbox: queue.Queue = queue.Queue()
    argv = cfg.target().argv(remote_pkg.ssh.remote_command(cfg.command, cfg.serve_args(
        contract.EngineSettings(device="cpu"))))
    link = remote_pkg.link.Link(argv, str(tmp_path / "link.log"), inbox).start()

    def answer():
        while True:
            item = inbox.get(timeout=120)
            assert item[0] == "event", (item, link.stderr_tail)
            if item[2]["type"] not in ("ready", "log"):
                return item[2]
            if item[2]["type"] == "ready":
                assert item[2]["jobs_root"] == str(root)

    image, audio = str(MEDIA / "case-1-reference.png"), str(MEDIA / "case-2-speech.wav")
    requests = [
        ("submit", {"id": "a", "job_dir": str(outside / "job"), "image": image, "audio": audio}, "outside"),
        ("submit", {"id": "b", "job_dir": "../elsewhere/job", "image": image, "audio": audio}, "outside"),
        ("submit", {"id": "c", "job_dir": "job-c", "image": image, "audio": audio}, "image"),  # inputs outside
        ("put", {"job_dir": "../elsewhere", "path": "inputs/x.png", "size": 1, "sha256": "0" * 64}, "outside"),
        ("put", {"job_dir": "job-d", "path": "../../elsewhere/x", "size": 1, "sha256": "0" * 64}, "relative path"),
        ("put", {"job_dir": "job-d", "path": "frames/000000.png", "size": 1, "sha256": "0" * 64}, "inputs/"),
        ("fetch", {"job_dir": str(outside), "path": "secret.txt"}, "outside"),
        ("fetch", {"job_dir": "job-d", "path": "../../elsewhere/secret.txt"}, "relative path"),
        ("files", {"job_dir": "/"}, "outside"),
    ]
    try:
        for op, fields, fragment in requests:
            assert link.send(op, **fields)
            ev = answer()
            assert ev["type"] == "error" and ev["category"] == "bad_request", (op, fields, ev)
            assert fragment in ev["message"] and ev["hint"], (op, fields, ev)
        os.symlink(outside, root / "sneaky")  # a link inside the root that leads out of it
        assert link.send("fetch", job_dir="sneaky", path="secret.txt")
        ev = answer()
        assert ev["type"] == "error" and "outside" in ev["message"], ev
    finally:
        link.send("shutdown")
        link.close_stdin()
        assert link.wait(30)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]  # nothing was written out there
    assert not (root / "job-c").exists()


def frames(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "frames").glob("*.png"))}


def test_headless_submit_brings_verified_frames_video_and_manifest_back(sshd, tmp_path, speech):
    root, out = tmp_path / "jobs", tmp_path / "shot01"
    args = ["--out", str(out), "--image", str(MEDIA / "case-1-reference.png"), "--audio", str(speech),
            "--width", "32", "--height", "32", "--steps", "1", "--seed", "3"]
    done = remote(sshd, "submit", *args, jobs_root=root)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["frames"] == 25 and Path(result["frames_dir"]) == out / "frames"
    (remote_dir,) = [p for p in root.iterdir() if p.name != "logs"]
    assert remote_dir.name.startswith("shot01-")  # its own folder under the remote jobs root
    assert frames(out) == frames(remote_dir) and len(frames(out)) == 25
    for name in ("video.mp4", "manifest.json"):
        assert (out / name).read_bytes() == (remote_dir / name).read_bytes()
    assert result["transferred"]["down"] >= sum(len(b) for b in frames(out).values())
    record = json.loads((out / "job.json").read_text())
    assert record["audio"] == str(out / "inputs" / "audio.wav") and record["remote"]["job_dir"] == str(remote_dir)
    assert not list(out.rglob("*.partial"))

    again = remote(sshd, "submit", *args, jobs_root=root)  # a finished job is never overwritten unasked
    assert again.returncode == 2 and "already holds a job" in again.stderr
    resumed = remote(sshd, "submit", "--out", str(out), jobs_root=root)  # finished there: nothing runs again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["transferred"] == {"up": 0, "down": 0}


def test_shared_storage_copies_nothing(sshd, tmp_path, speech):
    shared = tmp_path / "shared"
    shared.mkdir()
    here = tmp_path / "shared-here"
    os.symlink(shared, here)  # one folder, seen under two names: this machine's and the GPU machine's
    out = here / "shot02"
    done = remote(sshd, "submit", "--out", str(out), "--image", str(MEDIA / "case-1-reference.png"), "--audio",
                  str(speech), "--width", "32", "--height", "32", "--steps", "1", jobs_root=tmp_path / "unused",
                  map=f"{here}={shared}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["transferred"] == {"up": 0, "down": 0}
    assert result["frames_dir"] == str(out / "frames") and len(frames(shared / "shot02")) == 25
    assert sorted(p.name for p in shared.iterdir()) == ["logs", "shot02"]  # no copy of the job anywhere else


def test_a_job_whose_connection_stayed_down_resumes_on_retry(sshd, tmp_path):
    """No automatic reconnect (reconnect_s=0): the job fails with the drop's one line; submitting its folder
    again on a new backend (what Retry does) resumes it from the remote checkpoint and brings everything back."""
    sys.path.insert(0, str(REPO))
    import soundfile as sf
    from blender_addon import contract, remote as remote_pkg

    wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16")
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    sf.write(job / "inputs" / "audio.wav", wave[: 4 * sr], sr, subtype="PCM_16")
    (job / "inputs" / "reference.png").write_bytes((MEDIA / "case-1-reference.png").read_bytes())
    cfg = remote_pkg.RemoteConfig(**sshd.settings(sys.executable, tmp_path / "jobs"), reconnect_s=0)
    engine = contract.EngineSettings(device="cpu")

    def until(events, pred):
        while True:
            ev = events.get(timeout=120)
            if pred(ev):
                return ev

    events: queue.Queue = queue.Queue()
    first = cfg.backend(engine, str(tmp_path / "remote.log"), events).start()
    first.submit("j", str(job), image=str(job / "inputs" / "reference.png"), audio=str(job / "inputs" / "audio.wav"),
                 params={"width": 64, "height": 64, "steps": 10, "seed": 5})
    until(events, lambda e: e["type"] == "progress" and e["phase"] == "denoise" and e["step"] >= 1)
    first.link.kill()
    gone = until(events, lambda e: e["type"] == "exit")
    assert gone["category"] == "connection" and "cut" in gone["message"] and "Retry" in gone["hint"]
    assert not first.alive and (job / "job.json").is_file()  # mirrored at `accepted`: the folder is the record

    events = queue.Queue()
    retry = cfg.backend(engine, str(tmp_path / "remote.log"), events).start()
    try:
        retry.submit("j", str(job))  # the folder alone, as the add-on's Retry sends it
        accepted = until(events, lambda e: e["type"] in ("accepted", "error") and e.get("id") == "j")
        assert accepted["type"] == "accepted" and accepted["resumed"] and 1 <= accepted["from_step"] < 10, accepted
        done = until(events, lambda e: e["type"] in ("done", "error") and e.get("id") == "j")
        assert done["type"] == "done" and done["frames"] == 100, done
        (remote_dir,) = [p for p in (tmp_path / "jobs").iterdir() if p.name != "logs"]
        assert frames(job) == frames(remote_dir) and (job / "manifest.json").is_file()
    finally:
        retry.stop()
