"""Peak memory and wall time vs audio length: 10 s and 60 s of real speech through the CLI on the tiny
parity tree, each in its own process, measured side by side in one run.

    .venv/bin/python bench/long_audio.py [--size 128] [--steps 2] [--device cpu]

Prints one row per length (peak RSS of the generating process from wait4, wall time, per-phase times from the
run's manifest) and the ratio of the peaks. Streaming decode and per-window audio features keep the peak flat:
the target is a 60 s / 10 s ratio <= 1.2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "media" / "case-2-speech.wav"
FACE = REPO / "tests" / "data" / "media" / "case-1-reference.png"
TREE = REPO / "tests" / "data" / "parity" / "checkpoints"


def make_clip(seconds: float, path: Path) -> Path:
    wave, sr = sf.read(SPEECH, dtype="int16", always_2d=True)
    reps = int(np.ceil(seconds * sr / len(wave)))
    sf.write(path, np.concatenate([wave] * reps)[: int(seconds * sr)], sr)  # loop the 40 s recording
    return path


def run(seconds: float, args, work: Path) -> dict:
    clip = make_clip(seconds, work / f"speech_{seconds:g}s.wav")
    out = work / f"out_{seconds:g}s"
    cmd = [sys.executable, "-m", "stableavatar", "generate", "--checkpoints", str(args.checkpoints),
           "--image", str(FACE), "--audio", str(clip), "--out", str(out), "--resolution", f"{args.size}x{args.size}",
           "--steps", str(args.steps), "--device", args.device]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"generation of {seconds:g} s failed:\n{err[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"audio_s": seconds, "frames": manifest["video"]["frames"], "windows": len(manifest["windows"]),
            "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
            **{k: v for k, v in manifest["timings_s"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=TREE)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(s, args, Path(tmp)) for s in args.lengths]
    cols = ["audio_s", "frames", "windows", "wall_s", "peak_rss_mb", "load_s", "encode_s", "denoise_s", "decode_s",
            "mux_s"]
    print(f"tiny tree, {args.size}x{args.size}, {args.steps} steps, {args.device}, compat fixed")
    print(" | ".join(f"{c:>11}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r.get(c, ''):>11}" for c in cols))
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio {rows[-1]['audio_s']:g} s / {rows[0]['audio_s']:g} s = {ratio:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
