"""When the worker drops its models to free GPU memory: on a `release` request, or after `serve --idle-release`
seconds without a job. The worker's main thread asks between jobs (torch stays on that thread)."""
from __future__ import annotations

import logging
import time

from .. import contract

log = logging.getLogger("stableavatar.service")


class Releaser:
    def __init__(self, idle_seconds: float = 0.0):
        self.idle_seconds = float(idle_seconds or 0.0)
        self.requested = False

    def due(self, engine, idle_since: float | None) -> str | None:
        """"request" or "idle" when the models should go now (idle_since: None while a job is queued)."""
        if self.requested:
            return "request"
        loaded = engine is not None and engine.loaded
        if loaded and idle_since is not None and self.idle_seconds > 0 \
                and time.monotonic() - idle_since > self.idle_seconds:
            return "idle"
        return None

    def release(self, engine, emit, reason: str) -> None:
        """Drop the models; the next job's generate loads them again."""
        self.requested = False
        was_loaded = engine is not None and engine.loaded
        if engine is not None:
            engine.release()
        log.info("models released (%s)", reason)
        emit(contract.event("released", reason=reason, was_loaded=bool(was_loaded)))
