"""Cost of the service's per-step checkpoint (SamplerState.save after every denoising step).

Runs the denoising phase on the tiny parity tree with and without a checkpoint after each step (alternating,
several rounds, medians), then prints the step time, the added time and its share, the bytes written per
step, and the projection to real sizes (latents [1, 16, T, H/8, W/8]; 10 s at 512x512 is T=63, 64x64).
It also times one save of a real-size state on this disk, since bytes/step is what scales.

    python bench/checkpoint_overhead.py [--steps 20] [--rounds 3] [--size 64]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
IMAGE = ROOT / "tests" / "data" / "media" / "case-1-reference.png"
SPEECH = ROOT / "tests" / "data" / "media" / "case-2-speech.wav"


class _Stop(Exception):
    """Ends generate after the last step: decoding is not what is measured."""


def denoise_steps(engine, job, out: Path, save_to: Path | None) -> tuple[list[float], list[float], int]:
    """(seconds per step, seconds per save, bytes per save) for one run; step times include the save."""
    from stableavatar.engine import Hooks

    marks, saves, size = [], [], [0]

    def progress(p):
        if p["phase"] == "denoise" and not marks:
            marks.append(time.perf_counter())  # first denoise event: the clock starts

    def step_done(state):
        if save_to is not None:
            t = time.perf_counter()
            state.save(save_to)
            saves.append(time.perf_counter() - t)
            size[0] = save_to.stat().st_size
        marks.append(time.perf_counter())
        if state.step == job.params.steps:
            raise _Stop

    try:
        engine.generate(job, out, hooks=Hooks(progress=progress, step_done=step_done), overwrite=True)
    except _Stop:
        pass
    steps = [b - a for a, b in zip(marks, marks[1:])][1:]  # drop step 1: it includes warm-up
    return steps, saves, size[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="square resolution of the tiny run")
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length (4 s = two windows)")
    args = ap.parse_args()

    import soundfile as sf
    import torch

    from stableavatar.engine import Engine
    from stableavatar.job import prepare_job
    from stableavatar.contract import GenerationParams
    from stableavatar.state import SamplerState

    tmp = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    wave, sr = sf.read(SPEECH, dtype="int16")
    audio = tmp / "speech.wav"
    sf.write(audio, wave[: int(args.seconds * sr)], sr)
    engine = Engine.load(CHECKPOINTS, device="cpu", dtype="float32", memory_mode="full")
    job = prepare_job(IMAGE, audio, GenerationParams(width=args.size, height=args.size, steps=args.steps, seed=1))

    plain, saved, saves, nbytes = [], [], [], 0
    denoise_steps(engine, job, tmp / "warm", None)  # warm-up: caches, allocator, page cache
    for _ in range(args.rounds):
        plain += denoise_steps(engine, job, tmp / "a", None)[0]
        s, w, nbytes = denoise_steps(engine, job, tmp / "b", tmp / "state.safetensors")
        saved += s
        saves += w
    step = statistics.median(plain)
    step_ckpt = statistics.median(saved)
    save = statistics.median(saves)
    print(f"tiny tree, {args.size}x{args.size}, {args.seconds:g} s audio, {args.steps} steps x {args.rounds} rounds "
          f"(torch threads {torch.get_num_threads()})")
    print(f"  step time without checkpoint : {1e3 * step:8.2f} ms (median)")
    print(f"  step time with checkpoint    : {1e3 * step_ckpt:8.2f} ms (median; difference "
          f"{100 * (step_ckpt - step) / step:+.1f}%, noisy on a shared CPU)")
    print(f"  checkpoint write (measured)  : {1e3 * save:8.2f} ms = {100 * save / step:.2f}% of a step")
    print(f"  bytes written per step       : {nbytes} (state.safetensors, tmp + fsync + rename)")

    # real size: 10 s at 512x512 -> 250 frames -> 63 latent frames of 64x64, 16 channels
    shape = (1, 16, 63, 64, 64)
    numel = 1
    for d in shape:
        numel *= d
    print("projection to the real model (latent state [1, 16, T, H/8, W/8]):")
    for name, dtype, width in (("fixed (fp32 state)", torch.float32, 4), ("official (bf16 state)", torch.bfloat16, 2)):
        real = SamplerState(step=1, latents=torch.randn(shape).to(dtype), fingerprint="0" * 64)
        path = tmp / f"real-{width}.safetensors"
        times = []
        for _ in range(3):
            t = time.perf_counter()
            real.save(path)
            times.append(time.perf_counter() - t)
        print(f"  10 s at 512x512, {name}: {numel * width / 2**20:.1f} MiB/step "
              f"(file {path.stat().st_size} bytes), write {1e3 * statistics.median(times):.0f} ms on this disk")
    print("  bytes/step = 16 * T * (H/8) * (W/8) * 2|4, T = (frames - 1) / 4 + 1; linear in video length")
    print("  e.g. 60 s at 480x832: T=376 -> "
          f"{16 * 376 * 60 * 104 * 4 / 2**20:.0f} MiB fp32 per step (use --checkpoint-interval to bound it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
