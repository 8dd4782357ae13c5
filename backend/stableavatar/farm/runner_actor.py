"""The Ray actor that runs shots: one per GPU (or per N GPUs / N CPU slots), models loaded once and kept.

A shot runs exactly as a worker job does (service/runner.py: per-step checkpoint in its job folder, the same
events); the events go to the manager as they happen. When the actor's process dies, Ray restarts it
(`max_restarts`) and retries the call (`max_task_retries`); the new process finds the job folder's checkpoint and
resumes from it, so the frames are those of an uninterrupted run.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

import ray

from .. import contract, errors, settings
from ..contract import EngineSettings
from ..errors import CancelledError

log = logging.getLogger("stableavatar.farm")


@ray.remote
class ShotRunner:
    def __init__(self, engine_settings: dict, manager):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.settings = settings.resolve(EngineSettings.from_dict(engine_settings))
        self.manager = manager
        self.engine = None
        self.cancelled: set[str] = set()
        self._lock = threading.Lock()  # run() and cancel() come on different threads (max_concurrency=2)

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": socket.gethostname(), "engine_loaded": self.engine is not None}

    def cancel(self, shot_id: str) -> None:
        with self._lock:
            self.cancelled.add(shot_id)

    def _engine(self):
        if self.engine is None:
            from ..engine import Engine
            s = self.settings
            self.engine = Engine.load(s.checkpoints, s.transformer, s.device, s.dtype, s.memory_mode,
                                      devices=s.devices)
        return self.engine

    def run(self, shot: dict) -> dict:
        """Run one shot (contract.SHOT) to its terminal event: done, error or cancelled (with the shot's id)."""
        from ..job import prepare_job
        from ..service import admission, logs, runner
        from ..service.jobdir import JobDir

        shot_id = shot["id"]
        self.manager.report.remote({"type": "started", "id": shot_id, "pid": os.getpid(),
                                    "node": socket.gethostname()})
        jd = JobDir(shot["job_dir"])

        def emit(msg: dict) -> None:
            if msg.get("type") == "progress":
                self.manager.report.remote(msg)

        def should_cancel() -> bool:
            with self._lock:
                return shot_id in self.cancelled

        try:
            engine = self._engine()
            sub = admission.read_submit({k: shot.get(k) for k in ("image", "audio", "params", "client")}, jd,
                                        shot_id)
            prepared = prepare_job(sub.image, sub.audio, sub.params)  # the worker's admission, step for step
            jd.check_ours(sub.image, sub.audio)  # never write into a folder holding files that are not ours
            with jd.lock():
                req, resumed = jd.prepare_request(sub.image, sub.audio, sub.params.to_dict(), shot_id,
                                                  self.settings.to_dict(), client=sub.client,
                                                  requested=sub.requested)
                if resumed:
                    admission.check_checkpoint(jd, req, jd.checkpoint_meta(), engine.fingerprint(prepared),
                                               engine.fingerprint_parts(prepared))
                with logs.job_log(jd.log):
                    result = runner.run(engine, jd, req, emit, should_cancel)
            return runner.done_message(shot_id, jd, result)
        except CancelledError:
            return contract.event("cancelled", id=shot_id, resumable=jd.has_checkpoint(), reason="cancel")
        except Exception as exc:  # noqa: BLE001 - a shot fails alone; the actor keeps serving
            failure = errors.describe(exc)
            if failure.bug:
                log.exception("shot %s: internal error", shot_id)
            return contract.error_event(failure.category, failure.message, id=shot_id, hint=failure.hint,
                                        resumable=jd.has_checkpoint())
        finally:
            with self._lock:
                self.cancelled.discard(shot_id)
