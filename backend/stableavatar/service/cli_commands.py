"""argparse wiring for `serve` and `resume`; cli.py calls add_serve_parser / add_resume_parser and then
`args.func(args)` (or run_serve / run_resume directly)."""
from __future__ import annotations

import argparse

from ..params import MEMORY_MODE_CHOICES


def _engine_flags(p: argparse.ArgumentParser, defaults_note: str) -> None:
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help=f"checkpoint folder ({defaults_note}; else $STABLEAVATAR_CHECKPOINTS, else ./checkpoints)")
    p.add_argument("--transformer", default=None, metavar="FILE", help="override the StableAvatar .pt file")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--memory-mode", choices=MEMORY_MODE_CHOICES, default=None,
                   help="full: everything on the GPU; model_offload: one model at a time; sequential_offload: "
                        "layer by layer (least memory, slowest); fp8: fp8 weight storage")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="rotating log file folder (default: $STABLEAVATAR_LOG_DIR or ~/.local/state/stableavatar/logs)")
    p.add_argument("--checkpoint-interval", type=float, default=0.0, metavar="SECONDS",
                   help="minimum seconds between sampler checkpoints (default 0: after every denoising step)")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the backend worker (JSON lines on stdio, see docs/protocol.md)")
    p.add_argument("--stdio", action="store_true", help="speak the protocol on stdin/stdout (the only transport)")
    _engine_flags(p, "default: as given")
    p.set_defaults(func=run_serve)
    return p


def add_resume_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("resume", help="finish an interrupted job directory from its last checkpoint")
    p.add_argument("job_dir", metavar="JOBDIR")
    _engine_flags(p, "default: the one recorded in JOBDIR/job.json")
    p.add_argument("--json", action="store_true", help="print protocol events as JSON lines on stdout")
    p.set_defaults(func=run_resume)
    return p


def add_commands(subparsers) -> None:
    """What cli.build_parser calls: both subcommands, each with set_defaults(func=...)."""
    add_serve_parser(subparsers)
    add_resume_parser(subparsers)


def run_serve(args) -> int:
    if not args.stdio:
        raise SystemExit("serve: only --stdio is supported (pass --stdio)")
    args.memory_mode = args.memory_mode or "full"
    from .worker import main
    return main(args)  # does not return: exits the process


def run_resume(args) -> int:
    from .resume import main
    return main(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="stableavatar")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)
