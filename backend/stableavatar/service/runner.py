"""Run one job on a loaded Engine: engine hooks -> protocol events, a checkpoint after every denoising step,
a small preview JPEG per decoded chunk. Shared by the stdio worker and `stableavatar resume`."""
from __future__ import annotations

import logging
import time
from typing import Callable

from .. import contract
from ..contract import GenerationParams
from ..errors import CancelledError, os_error
from .jobdir import JobDir

log = logging.getLogger("stableavatar.service")

PROGRESS_FIELDS = tuple(f.name for f in contract.EVENTS["progress"].fields if f.name != "id")


class CheckpointStats:
    def __init__(self):
        self.saves, self.seconds, self.bytes = 0, 0.0, 0

    def as_dict(self) -> dict:
        return {"saves": self.saves, "seconds": round(self.seconds, 4), "bytes": self.bytes}


def run(engine, jd: JobDir, req: dict, emit: Callable[[dict], None], should_cancel: Callable[[], bool], *,
        checkpoint_interval_s: float = 0.0, fault: str | None = None):
    """Generate `req` (a job.json dict) into `jd`, resuming from jd.state when present. Raises what
    engine.generate raises (CancelledError, OutOfMemoryError, UserInputError, ...). Returns GenerationResult."""
    from ..engine import Hooks
    from ..job import prepare_job
    from ..state import SamplerState

    # from the job directory's own copies of the inputs (job.json), which outlive the caller's files
    job = prepare_job(req["image"], req["audio"], GenerationParams.from_dict(req["params"]))
    params = job.params
    job_id = req["id"]
    resume = None
    if jd.has_checkpoint():
        try:
            resume = SamplerState.load(jd.state)
            log.info("job %s: resuming from checkpoint at step %d/%d", job_id, resume.step, params.steps)
        except Exception as exc:  # noqa: BLE001 - a torn/corrupt checkpoint costs only the steps it held
            log.warning("job %s: checkpoint %s unreadable (%s); starting from step 0", job_id, jd.state, exc)
            jd.state.unlink(missing_ok=True)
    stats = CheckpointStats()
    last_save = [time.monotonic()]
    fault_step = _fault_step(fault, "oom")

    def progress(p: dict) -> None:
        # The engine polls should_cancel only around denoising forwards; honour cancel in the other phases here.
        if p.get("phase") != "denoise" and should_cancel():
            raise CancelledError(f"job {job_id} cancelled during {p.get('phase')}")
        emit(contract.event("progress", id=job_id, **{k: p.get(k) for k in PROGRESS_FIELDS}))

    def preview(frame_index: int, rgb) -> None:
        from ..output import write_jpeg
        write_jpeg(jd.preview, rgb)  # atomic replace: a client reading it sees a whole JPEG
        emit(contract.event("preview", id=job_id, path=str(jd.preview), frame=int(frame_index)))

    def step_done(state) -> None:
        if fault_step is not None and state.step >= fault_step:
            _raise_injected_oom()
        now = time.monotonic()
        if state.step < params.steps and checkpoint_interval_s and now - last_save[0] < checkpoint_interval_s:
            return  # bounded interval for huge jobs; the final step is always saved
        t0 = time.perf_counter()
        try:
            state.save(jd.state)
        except OSError as exc:  # disk full, folder gone, permissions: the previous checkpoint is still whole
            raise (os_error(exc, f"cannot write the checkpoint {jd.state}") or exc) from exc
        stats.saves += 1
        stats.seconds += time.perf_counter() - t0
        stats.bytes = jd.state.stat().st_size
        last_save[0] = now

    hooks = Hooks(progress=progress, preview=preview, step_done=step_done, should_cancel=should_cancel)
    t0 = time.perf_counter()
    # overwrite: the job dir is ours; a same-request resubmit regenerates the identical result in place
    result = engine.generate(job, jd.path, hooks=hooks, resume=resume, overwrite=True)
    log.info("job %s: done in %.1fs, %d frames; checkpoints %s", job_id, time.perf_counter() - t0,
             result.num_frames, stats.as_dict())
    jd.state.unlink(missing_ok=True)  # finished: the frames and video are the durable result now
    return result


def done_message(job_id: str, jd: JobDir, result) -> dict:
    return contract.event("done", id=job_id, job_dir=str(jd.path), frames_dir=str(result.frames_dir),
                            frames=int(result.num_frames), video=str(result.video) if result.video else None,
                            manifest=str(result.manifest))


def _fault_step(fault: str | None, kind: str) -> int | None:
    """Test-only fault injection ("oom@2"): the worker accepts it only with STABLEAVATAR_SERVICE_FAULTS=1."""
    if not isinstance(fault, str) or not fault.startswith(kind + "@"):
        return None
    try:
        return int(fault.split("@", 1)[1])
    except ValueError:
        return None


def _raise_injected_oom():
    import torch
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by test fault)")
