"""`stableavatar` command line: generate, download, demo (and serve / resume from the service package)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import StableAvatarError
from .params import (COMPAT_MODES, FIT_MODES, GUIDANCE_MODES, MEMORY_MODE_CHOICES, OVERLAP_WEIGHTS,
                     RESOLUTION_PRESETS,
                     GenerationParams)

EXIT_CODES = {"bad_input": 2, "missing_weights": 3, "out_of_memory": 4, "cancelled": 130, "internal": 1}


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 512x512, not {text!r}") from None
    return w, h


def add_generation_args(p: argparse.ArgumentParser) -> None:
    d = GenerationParams()
    g = p.add_argument_group("generation")
    g.add_argument("--resolution", type=_resolution, metavar="WxH",
                   help=f"preset or any multiple of 16 ({', '.join(RESOLUTION_PRESETS)}); overrides --width/--height")
    g.add_argument("--width", type=int, default=d.width)
    g.add_argument("--height", type=int, default=d.height)
    g.add_argument("--steps", type=int, default=d.steps, help="denoising steps (official: 50)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--overlap", type=int, default=d.overlap, help="window overlap in latent frames, 2..20")
    g.add_argument("--overlap-weights", choices=OVERLAP_WEIGHTS, default=d.overlap_weights)
    g.add_argument("--text-scale", type=float, default=d.text_scale)
    g.add_argument("--audio-scale", type=float, default=d.audio_scale)
    g.add_argument("--prompt", default=d.prompt)
    g.add_argument("--negative-prompt", default=d.negative_prompt, help="default: the official negative prompt")
    g.add_argument("--guidance", choices=GUIDANCE_MODES, default=d.guidance)
    g.add_argument("--compat", choices=COMPAT_MODES, default=d.compat,
                   help="official = the released code's numbers and quirks; fixed = its bugs corrected")
    g.add_argument("--fit", choices=FIT_MODES, default=d.fit, help="how the still meets the frame (squash = official)")
    g.add_argument("--save-latents", action="store_true", help="also write latents.safetensors")
    g.add_argument("--allow-silent", action="store_true", help="accept audio without any sound")


def add_runtime_args(p: argparse.ArgumentParser, checkpoints_required: bool = False) -> None:
    r = p.add_argument_group("runtime")
    r.add_argument("--checkpoints", required=checkpoints_required, metavar="DIR",
                   help="official checkpoint folder (default: $STABLEAVATAR_CHECKPOINTS, then ./checkpoints)")
    r.add_argument("--transformer", metavar="FILE", help="StableAvatar .pt (default: square.pt for square sizes, "
                                                         "rec-vec.pt otherwise)")
    r.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    r.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: bfloat16 on cuda (as released), float32 on cpu")
    r.add_argument("--memory-mode", choices=MEMORY_MODE_CHOICES, default="full",
                   help="auto = the fastest mode that fits the free GPU memory")


def params_from_args(args) -> GenerationParams:
    width, height = args.resolution if args.resolution else (args.width, args.height)
    return GenerationParams(width=width, height=height, steps=args.steps, seed=args.seed, overlap=args.overlap,
                            overlap_weights=args.overlap_weights, text_scale=args.text_scale,
                            audio_scale=args.audio_scale, prompt=args.prompt, negative_prompt=args.negative_prompt,
                            guidance=args.guidance, compat=args.compat, fit=args.fit,
                            save_latents=args.save_latents, allow_silent=args.allow_silent)


def runtime_defaults(args) -> tuple[str, str]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    return device, dtype


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stableavatar", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a talking-avatar video from a still and a voice track")
    gen.add_argument("--image", required=True, help="reference still (PNG/JPEG/...; RGBA is composited on white)")
    gen.add_argument("--audio", required=True, help="driving audio (WAV/FLAC/MP3/...; any rate, mono or stereo)")
    gen.add_argument("--out", required=True, help="output folder: frames/, video.mp4, manifest.json")
    gen.add_argument("--overwrite", action="store_true", help="replace a previous result in --out")
    add_generation_args(gen)
    add_runtime_args(gen, checkpoints_required=False)
    gen.set_defaults(func=cmd_generate)

    dl = sub.add_parser("download", help="download the official weights from Hugging Face")
    dl.add_argument("--to", required=True, metavar="DIR")
    dl.set_defaults(func=cmd_download)

    demo = sub.add_parser("demo", help="generate the README demo (real weights if found, else the tiny random tree)")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--seconds", type=float, default=None, help="cut the speech to this length")
    add_runtime_args(demo)
    demo.set_defaults(func=cmd_demo)

    try:
        from .service import cli_commands
    except ImportError:
        cli_commands = None
    if cli_commands is not None:
        cli_commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args) or 0
    except StableAvatarError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_CODES.get(exc.category, 1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def cmd_generate(args) -> int:
    from .engine import Engine
    from .job import prepare_job

    job = prepare_job(args.image, args.audio, params_from_args(args))  # bad input fails before any weights load
    device, dtype = runtime_defaults(args)
    engine = Engine.load(args.checkpoints, args.transformer, device, dtype, args.memory_mode)
    if engine.tree.tiny:
        warn_tiny(engine.tree.root)
    result = engine.generate(job, args.out, hooks=TqdmHooks().hooks(), overwrite=args.overwrite)
    print(f"{result.num_frames} frames -> {result.video}", file=sys.stderr)
    print(result.video)
    return 0


def cmd_download(args) -> int:
    from .download import download

    path = download(Path(args.to))
    print(path)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args)
    return 0


def warn_tiny(root) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! {root} holds the TINY RANDOM-WEIGHT parity checkpoints, not the real model.\n"
          "!! The output is coloured noise. It proves the pipeline runs end to end; for real avatars run\n"
          f"!! `stableavatar download --to checkpoints` and pass --checkpoints checkpoints.\n{bar}", file=sys.stderr)


class TqdmHooks:
    """A tqdm bar on stderr that follows the engine's progress events."""

    def __init__(self):
        self.bar = None
        self.phase = None

    def hooks(self):
        from .engine import Hooks

        return Hooks(progress=self.on_progress)

    def on_progress(self, ev: dict) -> None:
        from tqdm import tqdm

        if ev["phase"] != self.phase:
            if self.bar is not None:
                self.bar.close()
            self.phase = ev["phase"]
            total = {"denoise": ev["steps"] * ev["windows"], "decode": ev["frames_total"]}.get(self.phase)
            unit = {"denoise": "window", "decode": "frame"}.get(self.phase, "it")
            self.bar = tqdm(total=total, desc=self.phase, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            disable=None if total else True)
        if self.bar is None or self.bar.disable:
            return
        if self.phase == "denoise":
            # `step` counts completed steps, `window` the windows done in the step under way
            self.bar.n = min(ev["step"] * ev["windows"] + ev["window"] % ev["windows"], self.bar.total)
            self.bar.set_postfix(step=f"{min(ev['step'] + 1, ev['steps'])}/{ev['steps']}", refresh=False)
        elif self.phase == "decode":
            self.bar.n = ev["frames_written"]
        self.bar.refresh()
        if ev.get("fraction") == 1.0:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
