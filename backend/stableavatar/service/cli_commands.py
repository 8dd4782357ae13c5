"""argparse wiring for `serve` and `resume` (cli.py adds them to `stableavatar`)."""
from __future__ import annotations

import argparse

from ..cli_args import add_engine_args


def _engine_flags(p: argparse.ArgumentParser, defaults_note: str) -> None:
    add_engine_args(p, defaults_note)
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="rotating log file folder (default: $STABLEAVATAR_LOG_DIR or ~/.local/state/stableavatar/logs)")
    p.add_argument("--checkpoint-interval", type=float, default=0.0, metavar="SECONDS",
                   help="minimum seconds between sampler checkpoints (default 0: after every denoising step)")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the backend worker (JSON lines on stdio, see docs/protocol.md)")
    p.add_argument("--stdio", action="store_true", help="speak the protocol on stdin/stdout (the only transport)")
    p.add_argument("--idle-release", type=float, default=0.0, metavar="SECONDS",
                   help="free the models' memory after this long without a job (default 0: keep them loaded); "
                        "the next job loads them again")
    p.add_argument("--jobs-root", metavar="DIR", default=None,
                   help="confine the worker to DIR (remote use, docs/remote.md): every path a request names must "
                        "lie under it, relative ones are taken from it, and file transfer (put/fetch/files) is on; "
                        "logs go to DIR/logs unless --log-dir says otherwise")
    _engine_flags(p, "")
    p.set_defaults(func=run_serve)
    return p


def add_resume_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("resume", help="finish an interrupted job directory from its last checkpoint")
    p.add_argument("job_dir", metavar="JOBDIR")
    _engine_flags(p, "default: the ones recorded in JOBDIR/job.json")
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
    from .jobs_root import log_dir
    from .worker import main
    args.log_dir = log_dir(args)
    return main(args)  # does not return: exits the process


def run_resume(args) -> int:
    from .resume import main
    return main(args)
