"""What the SSH transport and its file transfer cost, against a local backend, for the same job on this machine.

Starts a throwaway OpenSSH server on 127.0.0.1 (tests/sshd_server.py) and runs one job (tiny parity tree, real
portrait and speech) on three backends, each warm (models loaded, one small job run first): a local worker
writing its job folder in place (the add-on's Local backend); the same backend behind `ssh` with the inputs
uploaded and every frame, the video and the manifest fetched back and verified (Remote, copying); and behind
`ssh` with a shared-storage mapping (Remote, nothing copied). Prints side by side: the wall time from `submit`
to `done` at the client, the worker's own time for the job, the time outside the job (submit checks, upload,
the fetch tail) and its difference to the local run per frame, how far each frame arrived behind its writing
on the remote (file times; one machine, one clock), and the bytes per frame (file payload, and the protocol
bytes that came back: base64 + JSON). It checks that the three runs' frames are byte-identical.

    python bench/remote_overhead.py [--size 512] [--steps 1] [--seconds 1]
"""
from __future__ import annotations

import argparse
import os
import queue
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from sshd_server import Sshd  # noqa: E402

from stableavatar import contract  # noqa: E402
from stableavatar.remote import RemoteConfig  # noqa: E402
from stableavatar.remote.link import Link  # noqa: E402

CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
IMAGE = ROOT / "tests" / "data" / "media" / "case-1-reference.png"
SPEECH = ROOT / "tests" / "data" / "media" / "case-2-speech.wav"
WAIT = 3600.0


def until(inbox: queue.Queue, pred, what: str) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        item = inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(item, tuple):  # a Link's ("event", link, ev) / ("exit", link, code, stderr)
            if item[0] == "exit":
                raise SystemExit(f"{what}: the worker exited ({item[2]}): {item[3][-1000:]}")
            item = item[2]
        if item.get("type") in ("exit", "error"):
            raise SystemExit(f"{what}: {item}")
        if pred(item):
            return item


def inputs_in(job: Path, audio: Path) -> tuple[Path, Path]:
    """The inputs written into the job folder, as the add-on writes them."""
    (job / "inputs").mkdir(parents=True)
    image, voice = job / "inputs" / "reference.png", job / "inputs" / "audio.wav"
    image.write_bytes(IMAGE.read_bytes())
    voice.write_bytes(audio.read_bytes())
    return image, voice


class Local:
    name = "local"

    def __init__(self, work: Path):
        self.work, self.inbox = work, queue.Queue()
        argv = [sys.executable, "-m", "stableavatar", "serve", "--stdio", "--checkpoints", str(CHECKPOINTS),
                "--device", "cpu", "--log-dir", str(work / "logs")]
        self.link = Link(argv, str(work / "local.log"), self.inbox).start()
        until(self.inbox, lambda e: e["type"] == "ready", "local ready")

    def run(self, job: Path, audio: Path, params: dict):
        image, voice = inputs_in(job, audio)
        self.link.send("submit", id=job.name, job_dir=str(job), image=str(image), audio=str(voice), params=params)
        until(self.inbox, lambda e: e["type"] == "done", job.name)

    def bytes(self) -> dict:
        return {"down": 0, "up": 0, "wire": 0}

    def stop(self):
        self.link.send("shutdown")
        self.link.close_stdin()
        self.link.wait(30)


class Remote:
    def __init__(self, name: str, sshd: Sshd, work: Path, root: Path | str, **changes):
        self.name, self.work, self.events = name, work, queue.Queue()
        self.cfg = RemoteConfig(**sshd.settings(sys.executable, root, **changes))
        self.backend = self.cfg.backend(contract.EngineSettings(device="cpu"), str(work / f"{name}.log"),
                                        self.events).start()
        until(self.events, lambda e: e["type"] == "ready", f"{name} ready")

    def run(self, job: Path, audio: Path, params: dict):
        image, voice = inputs_in(job, audio)
        self.backend.submit(job.name, str(job), image=str(image), audio=str(voice), params=params)
        until(self.events, lambda e: e["type"] == "done", job.name)

    def bytes(self) -> dict:
        return {**self.backend.bytes, "wire": self.backend.link.bytes_in}

    def stop(self):
        self.backend.stop(30.0)


def remote_dir_of(backend_root: Path, job: Path) -> Path:
    return next(p for p in backend_root.iterdir() if p.name.startswith(job.name + "-"))


def measure(runner, work: Path, audio: Path, params: dict, remote_root: Path | None) -> dict:
    base = Path(runner.cfg.local_prefix) if isinstance(runner, Remote) and runner.cfg.pathmap() else work
    runner.run(base / f"{runner.name}-warmup", audio, {**params, "width": 64, "height": 64})
    before = runner.bytes()
    job = base / f"{runner.name}-job"
    t0 = time.perf_counter()
    runner.run(job, audio, params)
    wall = time.perf_counter() - t0
    after = runner.bytes()
    there = remote_dir_of(remote_root, job) if remote_root else job
    job_s = float(re.findall(r"done in ([\d.]+)s", (there / "log").read_text())[-1])
    frames = sorted((job / "frames").glob("*.png"))
    lag = [p.stat().st_mtime - (there / "frames" / p.name).stat().st_mtime for p in frames] if remote_root else [0]
    tail = ((job / "manifest.json").stat().st_mtime - (there / "manifest.json").stat().st_mtime) if remote_root else 0
    out = {"wall": wall, "job": job_s, "frames": {p.name: p.read_bytes() for p in frames}, "lag": lag, "tail": tail,
           "refetch": None, **{k: after[k] - before[k] for k in after}}
    if remote_root:  # the transfer alone: the finished job's results fetched again into an emptied folder
        for p in [*frames, job / "video.mp4", job / "manifest.json"]:
            p.unlink()
        t0 = time.perf_counter()
        runner.backend.submit(job.name + "-again", str(job))
        until(runner.events, lambda e: e["type"] == "done", "refetch")
        out["refetch"] = time.perf_counter() - t0
        out["refetched"] = runner.bytes()["down"] - after["down"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the remote command sets the same for its worker
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="stableavatar-remote-bench-") as tmp:
        work = Path(tmp)
        wave, sr = sf.read(SPEECH, dtype="int16")
        audio = work / "speech.wav"
        sf.write(audio, wave[: int(args.seconds * sr)], sr, subtype="PCM_16")
        params = {"width": args.size, "height": args.size, "steps": args.steps, "seed": 42}
        shared = work / "shared"
        shared.mkdir()
        os.symlink(shared, work / "shared-here")
        sshd = Sshd(work / "sshd").start()
        runs = {}
        try:
            for label, make, root in (
                    ("local", lambda: Local(work), None),
                    ("remote, copying", lambda: Remote("copy", sshd, work, work / "remote-jobs"),
                     work / "remote-jobs"),
                    ("remote, shared storage", lambda: Remote("mapped", sshd, work, "", remote_prefix=str(shared),
                                                              local_prefix=str(work / "shared-here")), None)):
                runner = make()
                try:
                    runs[label] = measure(runner, work, audio, params, root)
                finally:
                    runner.stop()
                print(f"{label}: {runs[label]['wall']:.2f} s", file=sys.stderr, flush=True)
        finally:
            sshd.stop()
    n = len(runs["local"]["frames"])
    local = runs["local"]
    print(f"one job: {args.size}x{args.size}, {args.steps} step(s), {args.seconds:g} s of speech = {n} frames "
          f"({sum(map(len, local['frames'].values())) / n / 1000:.0f} KB PNG each), tiny parity tree, CPU, "
          f"warm workers, sshd on 127.0.0.1")
    print(f"{'backend':<24}{'wall s':>8}{'job s':>8}{'outside s':>10}{'extra s':>9}{'extra ms/frame':>15}"
          f"{'frame lag s':>12}{'tail s':>8}{'KB/frame':>10}{'wire KB/frame':>14}{'up KB':>8}  identical")
    for name, r in runs.items():
        outside = r["wall"] - r["job"]
        extra = outside - (local["wall"] - local["job"])
        same = "yes" if r["frames"] == local["frames"] else "NO"
        print(f"{name:<24}{r['wall']:>8.2f}{r['job']:>8.2f}{outside:>10.2f}{extra:>9.2f}{1000 * extra / n:>15.1f}"
              f"{statistics.median(r['lag']):>12.2f}{r['tail']:>8.2f}{r['down'] / n / 1000:>10.1f}"
              f"{r['wire'] / n / 1000:>14.1f}{r['up'] / 1000:>8.1f}  {same}")
    r = runs["remote, copying"]
    print(f"transfer alone (the finished job fetched again over ssh): {r['refetched'] / 1e6:.1f} MB in "
          f"{r['refetch']:.2f} s = {1000 * r['refetch'] / n:.1f} ms and {r['refetched'] / n / 1000:.0f} KB per "
          f"frame, {r['refetched'] / r['refetch'] / 1e6:.0f} MB/s")
    print("wall: submit -> done at the client; job: the worker's own time (its log); outside: wall - job (submit "
          "checks, upload, fetch tail); extra: outside minus the local run's; frame lag: median time a frame "
          "arrived here after the remote wrote it; tail: manifest here after the remote's; KB/frame: file bytes "
          "fetched per frame (frames, video, manifest, previews, job.json); wire: protocol bytes that came back "
          "(base64 chunks, JSON, progress); up: input bytes uploaded")
    return 0 if all(r["frames"] == local["frames"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
