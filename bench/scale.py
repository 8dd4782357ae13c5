"""One multi-window job on 1 vs N ranks, measured side by side in one run, plus the per-GPU projection of the
window-parallel cost model (docs/scale.md).

    .venv/bin/python bench/scale.py                       # this CPU: 1 vs 2 ranks, one thread per rank
    .venv/bin/python bench/scale.py --device cuda --devices 1,2,4 --checkpoints checkpoints --size 480x832

Each configuration is its own process with a real multi-rank Engine (followers spawned as with --devices); a
warm-up job loads every rank's models, then the same job is timed on the warm engine (as in the worker). The
table shows the job's wall time (encode, denoise, decode, mux), its denoising phase, the speed-up over 1 rank,
the speed-up the cost model predicts for that job (rounds of windows per step: ceil(W/1) / ceil(W/N)), and
whether the frames are byte-identical to the 1-rank run. On the CPU every rank gets one thread (OMP_NUM_THREADS=1), so N ranks use N
cores; a 1-rank row with N threads is printed as the other honest baseline (the same cores, one process).

The projection: one window step costs dit_flops (bench/models.py, 3 guidance branches) / (peak * utilisation);
a step of W windows on N GPUs takes ceil(W/N) rounds, each one window step plus an all-gather of N windows'
latents (16 x 21 x H/8 x W/8 float32) at the link's bandwidth. Decode stays on rank 0 and is not included.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SPEECH = REPO / "tests" / "data" / "media" / "case-2-speech.wav"
FACE = REPO / "tests" / "data" / "media" / "case-1-reference.png"
TREE = REPO / "tests" / "data" / "parity" / "checkpoints"


def real_dit_config() -> dict:
    """The released 1.3B DiT's hyper-parameters (the model's defaults), without building it."""
    from stableavatar.dit import StableAvatarDiT

    return {k: p.default for k, p in inspect.signature(StableAvatarDiT.__init__).parameters.items() if k != "self"}


def windows_for(seconds: float, overlap: int = 5) -> int:
    """Windows of a fixed-mode job of `seconds` of audio (the same plan the engine makes)."""
    from stableavatar import compat
    from stableavatar.windows import latent_frames, plan_windows

    frames = int(seconds * 25)
    c = compat.get("fixed")
    return len(plan_windows(latent_frames(frames, c), overlap, int(seconds * 16000), c))


def run(ranks: int, threads: int, args, clip: Path, work: Path) -> dict:
    """One configuration in its own process (`--one`): a warm-up job loads every rank's models, then the timed
    job runs on the warm engine, as in the worker."""
    out = work / f"ranks{ranks}-threads{threads}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO / "backend"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, __file__, "--one", str(ranks), "--clip", str(clip), "--out", str(out),
           "--checkpoints", str(args.checkpoints), "--size", args.size, "--steps", str(args.steps),
           "--device", args.device]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{ranks} ranks failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    frames = {p.name: p.read_bytes() for p in sorted((out / "frames").glob("*.png"))}
    return {"ranks": ranks, "threads": threads, **res, "frames": frames}


def one(args) -> None:
    """The `--one N` child: prints {"wall_s", "denoise_s", "windows"} of the timed job as JSON."""
    from stableavatar.contract import GenerationParams
    from stableavatar.engine import Engine
    from stableavatar.job import prepare_job

    w, h = (int(v) for v in args.size.split("x"))
    engine = Engine.load(args.checkpoints, device=args.device, dtype="float32" if args.device == "cpu" else
                         "bfloat16", memory_mode="full", devices=args.one)
    try:
        warm = prepare_job(FACE, args.clip, GenerationParams(width=w, height=h, steps=1, seed=1))
        engine.generate(warm, Path(args.out).with_name(Path(args.out).name + "-warmup"), overwrite=True)
        job = prepare_job(FACE, args.clip, GenerationParams(width=w, height=h, steps=args.steps, seed=1))
        t0 = time.perf_counter()
        result = engine.generate(job, args.out, overwrite=True)
        wall = time.perf_counter() - t0
    finally:
        engine.close()
    print(json.dumps({"wall_s": wall, "denoise_s": result.timings["denoise_s"], "windows": len(job.windows)}))


def rounds(windows: int, n: int) -> int:
    return math.ceil(windows / n)


def projection(args) -> list[str]:
    from bench.models import dit_flops

    cfg = real_dit_config()
    w, h = (int(v) for v in args.project_size.split("x"))
    flops = dit_flops(cfg, w, h)["total"]
    step_window = flops / (args.peak_tflops * 1e12 * args.utilisation)
    win = windows_for(args.project_seconds)
    slot_bytes = 16 * 21 * (h // 8) * (w // 8) * 4
    lines = [f"projection: {args.project_seconds:.0f} s of audio at {w}x{h} = {win} windows x {args.project_steps} "
             f"steps; one window step = {flops / 1e12:.0f} TFLOP (3 branches) = {step_window:.2f} s at "
             f"{args.peak_tflops:.0f} TFLOP/s x {args.utilisation:.0%}; exchange {slot_bytes / 2**20:.1f} MiB per "
             f"window per round at {args.link_gbps:.0f} GB/s",
             f"{'GPUs':>5} {'rounds/step':>12} {'denoise':>10} {'speed-up':>9} {'efficiency':>11} "
             f"{'exchange/step':>14}"]
    base = None
    for n in args.project_gpus:
        r = rounds(win, n)
        exchange = r * (n - 1) * slot_bytes / (args.link_gbps * 1e9) if n > 1 else 0.0
        total = args.project_steps * (r * step_window + exchange)
        base = base or total
        lines.append(f"{n:>5} {r:>12} {total / 60:>8.1f} m {base / total:>8.2f}x {base / total / n:>10.0%} "
                     f"{exchange * 1e3:>11.2f} ms")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default=str(TREE))
    p.add_argument("--device", default="cpu")
    p.add_argument("--devices", default="1,2", help="rank counts to measure, comma-separated")
    p.add_argument("--size", default="64x64")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seconds", type=float, default=12.5, help="audio length (12.5 s = 5 windows)")
    p.add_argument("--project-size", default="480x832")
    p.add_argument("--project-seconds", type=float, default=180.0)
    p.add_argument("--project-steps", type=int, default=50)
    p.add_argument("--project-gpus", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--utilisation", type=float, default=0.5, help="achieved fraction of the peak (assumed)")
    p.add_argument("--link-gbps", type=float, default=200.0, help="all-gather bandwidth per GPU, GB/s (NVLink-class)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--clip", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one(args)
        return 0

    import soundfile as sf

    counts = [int(v) for v in args.devices.split(",")]
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        work = Path(tmp)
        wave, sr = sf.read(SPEECH, dtype="int16")
        clip = work / "clip.wav"
        sf.write(clip, wave[: int(args.seconds * sr)], sr)
        rows = [run(n, 1 if args.device == "cpu" else int(os.environ.get("OMP_NUM_THREADS", "4")), args, clip, work)
                for n in counts]
        if args.device == "cpu" and max(counts) > 1:
            rows.append(run(1, max(counts), args, clip, work))  # the same cores in one process
    base = rows[0]
    print(f"job: {args.size}, {args.steps} steps, {args.seconds:g} s of audio = {base['windows']} windows, "
          f"device {args.device}, tree {args.checkpoints}; warm engines; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'threads':>7} {'wall':>8} {'denoise':>9} {'speed-up':>9} {'model':>7} {'identical':>10}")
    for r in rows:
        model = rounds(r["windows"], 1) / rounds(r["windows"], r["ranks"])
        same = "yes" if r["frames"] == base["frames"] else "NO"
        print(f"{r['ranks']:>5} {r['threads']:>7} {r['wall_s']:>7.1f}s {r['denoise_s']:>8.2f}s "
              f"{base['denoise_s'] / r['denoise_s']:>8.2f}x {model:>6.2f}x {same:>10}")
    print()
    print("\n".join(projection(args)))
    return 0 if all(r["frames"] == base["frames"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
