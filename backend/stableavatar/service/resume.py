"""`stableavatar resume JOBDIR`: finish an interrupted job from the shell, from its last checkpoint.

Uses the settings the worker recorded in job.json (checkpoints, device, dtype, memory mode) unless overridden.
Exit status: 0 done, 1 error, 130 interrupted (the checkpoint is kept; run resume again to continue).
"""
from __future__ import annotations

import json
import logging
import signal
import sys

from ..errors import CancelledError, StableAvatarError
from . import environment, logs, oom, protocol, runner
from .jobdir import JobDir

log = logging.getLogger("stableavatar.service")


class _Printer:
    """Human progress on stderr, one line per phase/step change (stdout is kept for the result paths)."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines
        self._last = None

    def __call__(self, msg: dict) -> None:
        if self.json_lines:
            sys.stdout.write(protocol.encode(msg).decode("utf-8"))
            sys.stdout.flush()
            return
        if msg["type"] != "progress":
            return
        tenths = 10 * (msg.get("frames_written") or 0) // max(1, msg.get("frames_total") or 1)
        key = (msg["phase"], msg["step"], msg["window"], tenths)
        if key == self._last:
            return
        self._last = key
        parts = [msg["phase"]]
        if msg.get("steps"):
            parts.append(f"step {msg['step']}/{msg['steps']}")
        if msg.get("windows"):
            parts.append(f"window {msg['window']}/{msg['windows']}")
        if msg["phase"] in ("decode", "mux") and msg.get("frames_total"):
            parts.append(f"frames {msg['frames_written']}/{msg['frames_total']}")
        if msg.get("fraction") is not None:
            parts.append(f"{100 * msg['fraction']:.0f}%")
        if msg.get("eta_s") is not None:
            parts.append(f"eta {msg['eta_s']:.0f}s")
        print("  ".join(parts), file=sys.stderr, flush=True)


def main(args) -> int:
    logs.setup(args.log_dir, level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, file_name="resume.log")
    stop = [None]

    def on_signal(signum, frame):
        stop[0] = signal.Signals(signum).name

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    jd = JobDir(args.job_dir)
    emit = _Printer(args.json)
    try:
        req = jd.read_request()
        settings = req.get("worker") or {}
        for key in ("checkpoints", "transformer", "device", "dtype", "memory_mode"):
            if getattr(args, key, None) is None:
                setattr(args, key, settings.get(key))
        args.memory_mode = args.memory_mode or "full"
        environment.resolve_device(args)
        with jd.lock():
            if not jd.has_checkpoint():
                print(f"{jd.path}: no checkpoint, starting from step 0", file=sys.stderr)
            from ..engine import Engine
            engine = Engine.load(args.checkpoints, transformer=args.transformer, device=args.device,
                                 dtype=args.dtype, memory_mode=args.memory_mode)
            with logs.job_log(jd.log):
                result = runner.run(engine, jd, req, emit, lambda: stop[0] is not None,
                                    checkpoint_interval_s=args.checkpoint_interval)
        done = runner.done_message(req["id"], jd, result)
        if args.json:
            emit(done)
        else:
            print(json.dumps({k: done[k] for k in ("video", "frames_dir", "frames", "manifest")}))
        return 0
    except CancelledError:
        print(f"interrupted ({stop[0]}); checkpoint kept in {jd.state}: run resume again to continue",
              file=sys.stderr)
        return 130
    except StableAvatarError as exc:
        return _fail(exc.message, exc.hint)
    except Exception as exc:  # noqa: BLE001
        if oom.is_oom(exc):
            req_p = locals().get("req", {}).get("params", {"width": 512, "height": 512})
            return _fail(f"out of memory: {exc}", oom.hint(args.memory_mode or "full", req_p["width"],
                                                            req_p["height"]))
        raise


def _fail(message: str, hint: str | None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 1
