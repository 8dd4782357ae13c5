"""`stableavatar demo` (what `make demo` runs): a portrait and a speech recording through the whole pipeline.

Uses the real weights when they are configured (--checkpoints, $STABLEAVATAR_CHECKPOINTS, ./checkpoints),
otherwise the tiny random-weight tree given as --fallback-checkpoints, loudly: that output is noise. The media
and the tiny tree ship with the source repository (tests/data), not with the wheel, so they are arguments.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import settings
from .checkpoints import locate
from .cli_args import engine_settings_from_args
from .console import TqdmHooks, warn_tiny
from .contract import DEFAULT_PROMPT, GenerationParams
from .errors import CheckpointError, UserInputError


def run_demo(args) -> Path:
    import soundfile as sf

    from .engine import Engine
    from .job import prepare_job

    es = settings.resolve(engine_settings_from_args(args))
    try:
        tree_root = locate(es.checkpoints).root
        tiny = (tree_root / "arch.json").exists()
    except CheckpointError as exc:
        if not args.fallback_checkpoints:
            raise CheckpointError(exc.message, hint=f"{exc.hint}; or pass --fallback-checkpoints with a tiny "
                                  "random-weight tree (the source repository's tests/data/parity/checkpoints)") from None
        print(f"note: no real weights found ({exc.message}); falling back to {args.fallback_checkpoints}",
              file=sys.stderr)
        tree_root, tiny = Path(args.fallback_checkpoints), True
    if tiny:
        warn_tiny(tree_root)
        params = GenerationParams(width=192, height=192, steps=4, seed=42, prompt=DEFAULT_PROMPT)
        seconds = args.seconds or 8.0
    else:
        params = GenerationParams(width=512, height=512, steps=50, seed=42, prompt=DEFAULT_PROMPT)
        seconds = args.seconds or 12.0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        wave, sr = sf.read(args.audio, dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as exc:
        raise UserInputError(f"cannot read the demo audio {args.audio} ({exc})", hint="pass --audio FILE") from None
    clip = out / "speech.wav"
    sf.write(clip, wave[: int(seconds * sr)], sr)  # stereo 16-bit as recorded: the backend does the conversion
    job = prepare_job(args.image, clip, params)
    engine = Engine.load(tree_root, es.transformer, es.device, es.dtype, es.memory_mode)
    result = engine.generate(job, out / "result", hooks=TqdmHooks().hooks(), overwrite=True)
    print(f"demo: {result.num_frames} frames at {params.width}x{params.height} -> {result.video}"
          + ("  (RANDOM WEIGHTS: the picture is noise)" if tiny else ""), file=sys.stderr)
    return result.video
