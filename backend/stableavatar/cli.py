"""`stableavatar` command line: generate, download, demo, serve, resume, remote, farm."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import errors, settings
from .cli_args import add_engine_args, add_generation_args, engine_settings_from_args, params_from_args
from .console import TqdmHooks, warn_tiny


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
    add_engine_args(gen)
    gen.set_defaults(func=cmd_generate)

    dl = sub.add_parser("download", help="download the official weights from Hugging Face")
    dl.add_argument("--to", required=True, metavar="DIR")
    dl.set_defaults(func=cmd_download)

    demo = sub.add_parser("demo", help="generate a demo video from a portrait and a speech recording (real "
                                        "weights if found, else --fallback-checkpoints, loudly)")
    demo.add_argument("--image", required=True, help="the portrait (the source tree has tests/data/media)")
    demo.add_argument("--audio", required=True, help="the speech recording")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--seconds", type=float, default=None, help="cut the speech to this length")
    demo.add_argument("--fallback-checkpoints", metavar="DIR",
                      help="a tiny random-weight tree to use when no real weights are found (the source tree has "
                           "tests/data/parity/checkpoints); its output is noise")
    add_engine_args(demo)
    demo.set_defaults(func=cmd_demo)

    from .service import cli_commands
    cli_commands.add_commands(sub)
    from . import remote_cli
    remote_cli.add_commands(sub)
    from .farm import cli as farm_cli
    farm_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args) or 0
    except BaseException as exc:  # noqa: BLE001 - every failure is told one way (errors.describe)
        if isinstance(exc, SystemExit):
            raise
        failure = errors.describe(exc)
        if failure.bug:
            raise
        return errors.print_failure(failure)


def cmd_generate(args) -> int:
    from . import distributed, ownership
    from .contract import JOB_FILES
    from .engine import Engine
    from .job import prepare_job
    from .service.jobdir import JobLock
    from .writer import check_out_dir, result_names

    es = settings.resolve(engine_settings_from_args(args))
    if (launched := distributed.launched_world()) and launched[0] > 0:  # torchrun's other ranks follow rank 0
        from .rank_main import follow
        return follow(distributed.Ranks.from_launcher(es.device), es)
    # fail on a bad folder or bad input before loading gigabytes of weights (and before creating anything)
    out = check_out_dir(args.out, args.overwrite)
    params = params_from_args(args).with_seed()
    job = prepare_job(args.image, args.audio, params)
    lock = JobLock(out / JOB_FILES["lock"])  # the same lock as the worker's and `resume`'s
    ownership.check_claim(out, [*result_names(job.num_frames, params.save_latents), lock.path.name])
    if lock.path.is_file() and ownership.inspect(out).owns(lock.path.name):
        lock.acquire()  # a folder of ours another process may be writing: busy now, not after loading
    engine = None
    try:
        engine = Engine.load(es.checkpoints, es.transformer, es.device, es.dtype, es.memory_mode,
                             devices=es.devices)
        if engine.tree.tiny:
            warn_tiny(engine.tree.root)
        result = engine.generate(job, out, hooks=TqdmHooks().hooks(), overwrite=args.overwrite, lock=lock)
    finally:
        lock.release()
        if engine is not None:
            engine.close()
    print(f"{result.num_frames} frames (seed {params.seed}) -> {result.video}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
