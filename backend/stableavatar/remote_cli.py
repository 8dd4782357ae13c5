"""`stableavatar remote check|submit`: a backend on another machine from the shell, for pipelines (docs/remote.md).

The same client as the add-on's (stableavatar/remote/): `check` connects and prints what the remote worker
reports as one JSON line; `submit` sends one job (inputs up), and brings frames, video and manifest back into
--out as they are made, reconnecting when the connection drops. Without --image/--audio it resumes the job in
--out. Exit status: 0 done, the error category's code otherwise (connection failures: 8), 130 interrupted (the
remote job is checkpointed; run the same command without --image/--audio to continue).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

from . import errors, files
from .cli_args import add_engine_args, add_generation_args, engine_settings_from_args, params_from_args
from .console import LinePrinter
from .contract import CATEGORIES, JOB_FILES, input_name
from .errors import UserInputError
from .remote import DEFAULT_COMMAND, RemoteConfig

CONNECTION = CATEGORIES["connection"].exit_code
RESULT_NAMES = tuple(JOB_FILES[k] for k in ("frames", "video", "manifest", "preview", "request", "latents"))


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("remote", help="run jobs on a backend on another machine over SSH (docs/remote.md)")
    sub = p.add_subparsers(dest="remote_command", required=True)
    check = sub.add_parser("check", help="connect and print what the remote backend reports (device, GPU, "
                                         "versions, weights) as one JSON line")
    _target_args(check)
    check.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the remote worker's "
                       "ready (it loads the models first; default 600)")
    check.set_defaults(func=cmd_check)
    run = sub.add_parser("submit", help="run one job remotely; frames, video.mp4 and manifest.json come back "
                                        "into --out")
    _target_args(run)
    run.add_argument("--out", required=True, metavar="JOBDIR", help="the local job folder")
    run.add_argument("--image", help="the still (omit --image and --audio to resume the job in --out)")
    run.add_argument("--audio", help="the voice")
    run.add_argument("--overwrite", action="store_true", help="replace a different job's result in --out")
    run.add_argument("--json", action="store_true", help="print protocol events as JSON lines on stdout")
    add_generation_args(run)
    run.set_defaults(func=cmd_submit)


def _target_args(p) -> None:
    g = p.add_argument_group("remote")
    g.add_argument("--host", required=True, metavar="[USER@]HOST", help="the GPU machine (ssh destination)")
    g.add_argument("--port", type=int, default=22)
    g.add_argument("--identity", default="", metavar="KEYFILE", help="private key (default: ssh's own choice)")
    g.add_argument("--known-hosts", default="", metavar="FILE", help="known hosts file (default: ~/.ssh/known_hosts)")
    g.add_argument("--accept-new-host-key", action="store_true",
                   help="trust a host seen for the first time (StrictHostKeyChecking=accept-new); a changed key is "
                        "always refused")
    g.add_argument("--remote-command", default=DEFAULT_COMMAND, metavar="CMD",
                   help=f"the backend there, as remote shell text (default: {DEFAULT_COMMAND})")
    g.add_argument("--remote-jobs-root", default="", metavar="DIR",
                   help="where job folders go there (default: ~/stableavatar-jobs, or the mapped folder)")
    g.add_argument("--map", default="", metavar="LOCAL=REMOTE",
                   help="shared storage: LOCAL here is REMOTE there; jobs under it are not copied")
    g.add_argument("--reconnect-s", type=float, default=300.0, metavar="SECONDS",
                   help="how long a dropped connection is retried (default 300)")
    g.add_argument("--log", default=None, metavar="FILE", help="ssh's and the remote worker's messages (default: "
                   "remote.log in the log folder)")
    add_engine_args(p, "of the remote worker; --checkpoints is a folder on the remote machine")


def _config(args) -> tuple[RemoteConfig, object]:
    user, _, host = args.host.rpartition("@")
    local, sep, remote = args.map.partition("=")
    if args.map and not (sep and local and remote):
        raise UserInputError(f"--map {args.map!r} must look like LOCAL=REMOTE")
    engine = engine_settings_from_args(args)
    cfg = RemoteConfig(host=host, user=user, port=args.port, identity=args.identity, known_hosts=args.known_hosts,
                       host_keys="accept-new" if args.accept_new_host_key else "yes", command=args.remote_command,
                       checkpoints=engine.checkpoints or "", jobs_root=args.remote_jobs_root,
                       local_prefix=os.path.abspath(local) if local else "", remote_prefix=remote,
                       reconnect_s=args.reconnect_s)
    problems = cfg.problems()
    if problems:
        raise UserInputError("; ".join(problems), hint="see stableavatar remote --help and docs/remote.md")
    return cfg, engine


def _log_path(args) -> str:
    if args.log:
        return args.log
    from .service.logs import default_log_dir
    return str(default_log_dir() / "remote.log")


def _exit_failure(ev: dict) -> int:
    print(f"error: {ev.get('message') or 'the remote backend stopped (exit code %s)' % ev.get('returncode')}",
          file=sys.stderr)
    print(f"hint: {ev.get('hint') or 'see the log ' + str(ev.get('log', ''))}", file=sys.stderr)
    return CONNECTION


def cmd_check(args) -> int:
    cfg, engine = _config(args)
    events: queue.Queue = queue.Queue()
    backend = cfg.backend(engine, _log_path(args), events).start()
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return _exit_failure({"message": f"{cfg.target().label} answered, but its backend was not ready "
                                      f"within {args.timeout:.0f} s", "hint": "see " + _log_path(args)})
            if ev["type"] == "ready":
                keys = ("device", "dtype", "gpu", "weights", "memory_mode", "versions", "jobs_root", "engine_error")
                print(json.dumps({"host": cfg.target().label, **{k: ev.get(k) for k in keys}}))
                weights = ev.get("weights") or {}
                return 0 if weights.get("found") else CATEGORIES["missing_weights"].exit_code
            if ev["type"] == "exit":
                return _exit_failure(ev)
    finally:
        backend.stop()


def _prepare_out(args, out: Path) -> dict | None:
    """The request to send (inputs copied into out/inputs/), or None to resume the job already in `out`."""
    if (args.image is None) != (args.audio is None):
        raise UserInputError("give --image and --audio, or neither to resume the job in --out")
    if args.image is None:
        if not (out / JOB_FILES["request"]).is_file():
            raise UserInputError(f"{out} holds no job to resume (no job.json)", hint="pass --image and --audio")
        return None
    params = params_from_args(args).to_dict()
    held = [n for n in RESULT_NAMES if (out / n).exists()]
    if held and not args.overwrite:
        raise UserInputError(f"{out} already holds a job ({', '.join(held)})",
                             hint="omit --image/--audio to resume it, pass --overwrite to replace it, or choose "
                                  "another --out")
    for name in held:  # only names this command writes
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    request = {"params": params}
    for kind in ("image", "audio"):
        src = Path(getattr(args, kind)).expanduser()
        if not src.is_file():
            raise UserInputError(f"{kind} file {src} does not exist", hint=f"pass a readable {kind} file")
        dst = out / JOB_FILES["inputs"] / input_name(kind, src.suffix)
        if src.resolve() != dst.resolve():
            with files.atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        request[kind] = str(dst)
    return request


def cmd_submit(args) -> int:
    out = Path(os.path.abspath(os.path.expanduser(args.out)))  # not resolved: a shared-storage prefix may be a link
    cfg, engine = _config(args)
    request = _prepare_out(args, out)
    stop = []
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame: stop.append(signum))
    events: queue.Queue = queue.Queue()
    backend = cfg.backend(engine, _log_path(args), events).start()
    job_id = f"cli-{uuid.uuid4().hex[:10]}"
    backend.submit(job_id, str(out), **(request or {}))
    printer = LinePrinter(args.json)
    try:
        while True:
            if stop:
                backend.stop(timeout=60.0)  # the remote worker checkpoints the job and exits
                print(f"interrupted; the remote job is checkpointed: run the same command without --image/--audio "
                      f"(--out {out}) to continue", file=sys.stderr)
                return 130
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                continue
            kind = ev["type"]
            if kind in ("progress", "accepted", "done", "error", "cancelled", "preview") and args.json:
                printer({k: v for k, v in ev.items() if k != "_client"})
            elif kind == "progress":
                printer(ev)
            if kind == "connection":
                print(ev["message"], file=sys.stderr, flush=True)
            elif kind == "done" and ev.get("id") == job_id:
                if not args.json:
                    print(json.dumps({**{k: ev[k] for k in ("video", "frames_dir", "frames", "manifest")},
                                      "transferred": dict(backend.bytes)}))
                return 0
            elif kind == "error" and ev.get("id") in (job_id, None):
                category = ev["category"] if ev["category"] in CATEGORIES else "internal"
                return errors.print_failure(errors.Failure(category, ev["message"], ev.get("hint"), False))
            elif kind == "cancelled" and ev.get("id") == job_id:
                print(f"the remote job stopped ({ev.get('reason')}); run the same command without --image/--audio "
                      "to continue", file=sys.stderr)
                return 130
            elif kind == "exit":
                return _exit_failure({**ev, "log": _log_path(args)})
    finally:
        backend.stop()
