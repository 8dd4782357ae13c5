"""`stableavatar farm run|submit|status|cancel`: many shots on a Ray cluster (docs/scale.md).

    stableavatar farm run SHOTS.json [--address HOST:PORT] [--devices-per-shot N] [--actors K] [--json]
    stableavatar farm submit SHOTS.json ...        # returns at once with the batch id
    stableavatar farm status [BATCH] [--follow] [--json]
    stableavatar farm cancel BATCH | --shot ID ...

Exit status of run and status --follow: 0 when every shot is done, 1 when any failed or was cancelled.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..cli_args import add_engine_args, engine_settings_from_args


def add_commands(subparsers) -> None:
    farm = subparsers.add_parser("farm", help="run many shots on a Ray cluster (pip install '.[farm]')",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = farm.add_subparsers(dest="farm_command", required=True)

    def common(p):
        p.add_argument("--address", help="the Ray cluster (HOST:PORT from `ray start --head`; default $RAY_ADDRESS)")
        p.add_argument("--json", action="store_true", help="JSON lines on stdout (for programs) instead of bars")

    for name, help_ in (("run", "submit SHOTS.json and follow it to the end"),
                        ("submit", "submit SHOTS.json and return at once (prints the batch id)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("shots", metavar="SHOTS.json", help="a JSON list of shots: job_dir, image, audio, params")
        common(p)
        p.add_argument("--actors", type=int, default=None, metavar="K",
                       help="shot runners (default: the cluster's GPUs / devices per shot; CPU slots without GPUs)")
        add_engine_args(p, "for every runner; paths as the nodes see them")
        p.add_argument("--devices-per-shot", dest="devices", type=int, metavar="N",
                       help="devices (GPUs) each shot runs on, window-parallel (the same as --devices)")
        if name == "run":
            p.add_argument("--local-cpus", type=int, default=None, metavar="N",
                           help="without --address: start a private local cluster of N CPU slots for this run")
        p.set_defaults(func=cmd_run if name == "run" else cmd_submit)

    p = sub.add_parser("status", help="the shots of one batch (or every batch) and their progress")
    p.add_argument("batch", nargs="?", help="a batch id (default: all)")
    p.add_argument("--follow", action="store_true", help="print events as they happen until the batch finishes")
    common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a batch or some shots (running ones stop within one step)")
    p.add_argument("batch", nargs="?", help="the batch id")
    p.add_argument("--shot", action="append", default=[], metavar="ID", help="a shot id (repeatable)")
    common(p)
    p.set_defaults(func=cmd_cancel)


_OUT = []


def _json_stdout():
    """A private copy of stdout for the JSON lines; fd 1 then points at stderr, so nothing Ray (or a C library)
    prints can land between them."""
    if not _OUT:
        sys.stdout.flush()
        _OUT.append(os.fdopen(os.dup(1), "w", encoding="utf-8"))
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    return _OUT[0]


def _print_json(obj: dict) -> None:
    out = _json_stdout()
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def _settings(args, ray) -> dict:
    es = engine_settings_from_args(args)
    if es.device is None:  # decided here: a runner that asks for a GPU on a CPU-only cluster would never start
        es.device = "cuda" if ray.cluster_resources().get("GPU", 0) else "cpu"
    if es.checkpoints:
        es.checkpoints = str(Path(es.checkpoints).expanduser().resolve())
    return es.to_dict()


def _submit(args, local_cpus=None) -> dict:
    from . import client
    from .shots import read_shots

    shots = read_shots(args.shots)  # bad SHOTS.json: one line, before the cluster is touched
    ray = client.connect(args.address, local_cpus)
    settings = _settings(args, ray)
    return client.submit(shots, settings, settings.get("devices") or 1, args.actors)


def cmd_submit(args) -> int:
    if args.json:
        _json_stdout()
    ans = _submit(args)
    if args.json:
        _print_json({"type": "submitted", **ans})
    else:
        print(f"batch {ans['batch']}: {len(ans['shots'])} shots on {ans['actors']} runners", file=sys.stderr)
        print(ans["batch"])
    return 0


def cmd_run(args) -> int:
    local = args.local_cpus or (None if args.address or os.environ.get("RAY_ADDRESS") else os.cpu_count())
    if args.json:
        _json_stdout()
    ans = _submit(args, local)
    if args.json:
        _print_json({"type": "submitted", **ans})
    return _follow(ans["batch"], args.json)


def _follow(batch: str, as_json: bool) -> int:
    from . import client
    from .shots import summary_text

    bars = None if as_json else client.Bars()
    try:
        result = client.follow(batch, _print_json if as_json else bars)
    finally:
        if bars is not None:
            bars.close()
    if as_json:
        _print_json(result)
    else:
        print(summary_text(result), file=sys.stderr)
    return 0 if result["done"] == len(result["shots"]) else 1


def cmd_status(args) -> int:
    from . import client

    if args.json:
        _json_stdout()
    client.connect(args.address)
    if args.follow:
        if not args.batch:
            raise SystemExit("farm status --follow needs a batch id")
        return _follow(args.batch, args.json)
    ans = client.status(args.batch)
    if args.json:
        _print_json({"type": "farm_status", **ans})
        return 0 if not ans["missing"] else 2
    for b in ans["missing"]:
        print(f"no batch {b!r} on this farm", file=sys.stderr)
    for rec in ans["shots"]:
        p = rec.get("progress") or {}
        where = f"pid {rec['pid']} on {rec['node']}" if rec["pid"] else ""
        detail = (f"{p.get('phase')} step {p.get('step')}/{p.get('steps')} {100 * p.get('fraction', 0):.0f}%"
                  if rec["state"] == "running" and p else (rec.get("result") or {}).get("message", ""))
        print(f"{rec['batch']}  {rec['id']:<20} {rec['state']:<9} attempt {rec['attempt']}  {where}  {detail}")
    return 0 if not ans["missing"] else 2


def cmd_cancel(args) -> int:
    from . import client

    if not args.batch and not args.shot:
        raise SystemExit("farm cancel needs a batch id or --shot ID")
    if args.json:
        _json_stdout()
    client.connect(args.address)
    ans = client.cancel(args.shot, args.batch)
    if args.json:
        _print_json({"type": "farm_cancel", **ans})
    else:
        for k in ("cancelled", "cancelling", "finished", "unknown"):
            if ans[k]:
                print(f"{k}: {', '.join(ans[k])}", file=sys.stderr)
    return 0 if not ans["unknown"] else 2

