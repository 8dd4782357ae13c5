"""`stableavatar resume JOBDIR`: finish an interrupted job from the shell, from its last checkpoint.

Uses the settings the worker recorded in job.json (checkpoints, device, dtype, memory mode) unless overridden.
Exit status: 0 done, the error category's code (contract.CATEGORIES) on failure, 130 interrupted (the checkpoint
is kept; run resume again to continue).
"""
from __future__ import annotations

import json
import logging
import signal
import sys

from .. import errors, settings
from ..cli_args import engine_settings_from_args
from ..console import LinePrinter
from ..contract import ENGINE_SETTINGS
from ..errors import CancelledError
from . import admission, logs, runner
from .jobdir import JobDir

log = logging.getLogger("stableavatar.service")


def main(args) -> int:
    logs.setup(args.log_dir, level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
               file_name="resume.log")
    stop = [None]

    def on_signal(signum, frame):
        stop[0] = signal.Signals(signum).name

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    jd = JobDir(args.job_dir)
    emit = LinePrinter(args.json)
    try:
        req = jd.read_request()
        recorded = req.get("worker") or {}
        for key in ENGINE_SETTINGS:  # flags override what the worker recorded
            if getattr(args, key, None) is None:
                setattr(args, key, recorded.get(key))
        engine_settings = settings.resolve(engine_settings_from_args(args))
        with jd.lock():
            check_checkpoint(jd, req, engine_settings)  # before loading gigabytes of weights
            if not jd.has_checkpoint():
                print(f"{jd.path}: no checkpoint, starting from step 0", file=sys.stderr)
            from ..engine import Engine
            engine = Engine.load(engine_settings.checkpoints, transformer=engine_settings.transformer,
                                 device=engine_settings.device, dtype=engine_settings.dtype,
                                 memory_mode=engine_settings.memory_mode, devices=engine_settings.devices)
            try:
                with logs.job_log(jd.log):
                    result = runner.run(engine, jd, req, emit, lambda: stop[0] is not None,
                                        checkpoint_interval_s=args.checkpoint_interval)
            finally:
                engine.close()
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
    except Exception as exc:  # noqa: BLE001 - every failure is told the same way as by `generate`
        failure = errors.describe(exc)
        if failure.bug:
            raise
        return errors.print_failure(failure)


def check_checkpoint(jd: JobDir, req: dict, es) -> None:
    """Refuse at once a checkpoint that these settings cannot continue (another dtype, other weights), naming
    what differs, as the worker does at submit (admission.check_checkpoint)."""
    meta = jd.checkpoint_meta()
    if not meta.get("fingerprint"):
        return
    import torch

    from ..checkpoints import locate
    from ..contract import GenerationParams
    from ..job import fingerprint_parts, job_fingerprint, prepare_job

    job = prepare_job(req["image"], req["audio"], GenerationParams.from_dict(req["params"]))
    tree = locate(es.checkpoints)
    transformer = tree.transformer_for(job.params.width, job.params.height, es.transformer)
    dtype = getattr(torch, es.dtype)
    admission.check_checkpoint(jd, req, meta, job_fingerprint(job, transformer, dtype),
                               fingerprint_parts(job, transformer, dtype, tree.root))
