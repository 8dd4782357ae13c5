"""`stableavatar demo` (what `make demo` runs): a real portrait and a real speech recording through the whole
pipeline. Uses the real weights when they are configured, otherwise the tiny random-weight parity tree shipped in
tests/data (loudly: that output is noise)."""
from __future__ import annotations

import sys
from pathlib import Path


from .errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO / "tests" / "data" / "media"
TINY_TREE = REPO / "tests" / "data" / "parity" / "checkpoints"


def run_demo(args) -> Path:
    import soundfile as sf

    from .checkpoints import locate
    from .cli import TqdmHooks, runtime_defaults, warn_tiny
    from .engine import Engine
    from .job import prepare_job
    from .params import GenerationParams

    try:
        tree_root = locate(args.checkpoints).root
        tiny = (tree_root / "arch.json").exists()
    except CheckpointError as exc:
        print(f"note: no real weights found ({exc.message}); falling back to the tiny parity tree", file=sys.stderr)
        tree_root, tiny = TINY_TREE, True
    if tiny:
        warn_tiny(tree_root)
        params = GenerationParams(width=192, height=192, steps=4, seed=42, prompt="The protagonist is talking")
        seconds = args.seconds or 8.0
    else:
        params = GenerationParams(width=512, height=512, steps=50, seed=42, prompt="The protagonist is talking")
        seconds = args.seconds or 12.0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16", always_2d=True)
    clip = out / "speech.wav"
    sf.write(clip, wave[: int(seconds * sr)], sr)  # stereo 16-bit as recorded: the backend does the conversion
    job = prepare_job(MEDIA / "case-1-reference.png", clip, params)
    device, dtype = runtime_defaults(args)
    engine = Engine.load(tree_root, args.transformer, device, dtype, args.memory_mode)
    result = engine.generate(job, out / "result", hooks=TqdmHooks().hooks(), overwrite=True)
    print(f"demo: {result.num_frames} frames at {params.width}x{params.height} -> {result.video}"
          + ("  (RANDOM WEIGHTS: the picture is noise)" if tiny else ""), file=sys.stderr)
    return result.video
