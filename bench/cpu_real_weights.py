"""What a CPU run of the real weights costs (`--device cpu`, float32): memory per model and time per denoising
step, measured on the real-size DiT with random weights (speed does not depend on the values).

    PYTHONPATH=backend python bench/cpu_real_weights.py [--size 64]

One run prints: this CPU's float32 matmul rate (the baseline), the real DiT's measured time for one guided window
step at a small calibration size, the rate that implies against the FLOP model (bench/models.py dit_flops), and
from that rate the time per step at the trained sizes; then the memory of each model in the CPU run, with umT5
stored in bf16 (as released) against the float32 load it replaces. A real-size step itself (21 504 tokens x 3
branches per window) is far too slow to measure here; its time is derived, and says so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # `python bench/cpu_real_weights.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.models import build_dit, dit_flops, real_scale
from bench.run import PLAN, Bench
from stableavatar import memory
from stableavatar.contract import GenerationParams
from stableavatar.job import plan_job


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - t0) / 1e9


def t5_bytes() -> tuple[int, int]:
    """umT5-XXL in a float32 run: (bf16 matrices + float32 norms, as loaded now; everything float32, as before)."""
    from transformers import UMT5EncoderModel

    from stableavatar.text_encoder import _config, _is_matrix

    with torch.device("meta"):
        model = UMT5EncoderModel(_config(None)[1])
    stored = sum(p.numel() * (2 if _is_matrix(n) else 4) for n, p in model.named_parameters())
    return stored, sum(p.numel() * 4 for p in model.parameters())


def windows(seconds: float) -> int:
    return len(plan_job(GenerationParams(), np.zeros(int(seconds * 16000), np.float32), None).windows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="calibration frame size (square), a multiple of 16")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rate0 = matmul_gflops()
    print(f"baseline: float32 2048^3 matmul {rate0:.1f} GFLOP/s")

    scale = real_scale()
    scale.steps, scale.warmup = 1, 1
    t0 = time.perf_counter()
    bench = Bench(SimpleNamespace(time_limit=10**6, reserve=0, peak_tflops=None, verbose=False), scale,
                  torch.device("cpu"))
    bench.dtype = torch.float32  # what --device cpu runs in
    bench.master = build_dit(scale, torch.float32)
    print(f"real-size DiT built with random weights in {time.perf_counter() - t0:.0f} s "
          f"({sum(p.numel() for p in bench.master.parameters()) / 1e9:.3f} B parameters)")
    cfg = bench.master.config
    per, _warm, _ = bench.time_steps(bench.master, bench.inputs(args.size, args.size))
    flops = dit_flops(cfg, args.size, args.size, audio_rows=len(PLAN.audio_rows))
    rate = flops["total"] / per / 1e9
    print(f"measured: one guided window step at {args.size}x{args.size} ({flops['tokens']} tokens x 3 branches): "
          f"{per:.1f} s = {rate:.1f} GFLOP/s effective ({rate / rate0 * 100:.0f} % of the matmul baseline)")
    print("derived (FLOP model / measured rate), per denoising step, float32 on this CPU:")
    for w, h in ((512, 512), (480, 832)):
        one = dit_flops(cfg, w, h, audio_rows=len(PLAN.audio_rows))["total"] / (rate * 1e9)
        per_len = ", ".join(f"{s:g} s audio ({windows(s)} windows): {windows(s) * one / 3600:.1f} h"
                            for s in (5, 10))
        print(f"  {w}x{h}: {one / 60:.0f} min per window-step; {per_len}; x 50 steps for a video")
    stored, before = t5_bytes()
    dit = memory.DIT_PARAMS * 4
    rest = memory.VAE_PARAMS * 4 + memory.WAV2VEC_PARAMS * 4
    print("memory of the CPU run (float32; GB):")
    print(f"  DiT {dit / 1e9:.1f}, VAE + wav2vec2 {rest / 1e9:.1f}, CLIP vision {memory.CLIP_BYTES / 1e9:.1f} "
          f"(loaded after umT5 is released), umT5 {stored / 1e9:.1f} now vs {before / 1e9:.1f} as a float32 load")
    print(f"  peak while encoding the prompt (DiT + VAE + wav2vec2 + umT5): {(dit + rest + stored) / 1e9:.1f} GB now, "
          f"{(dit + rest + before) / 1e9:.1f} GB before")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
