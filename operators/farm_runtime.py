"""Jobs sent to the shot farm instead of the local backend (Preferences > Farm; docs/scale.md).

Rows submitted in one operator run (Animate Shots / Animate Selected) go out as one batch on the next tick; the
farm's events come back on the session's queue shaped like the worker's (blender_addon/farm.py), so
`runtime._handle` moves the rows and imports results as they land. Only the batch bookkeeping lives here.
"""
from __future__ import annotations

import os

import bpy

from ..blender_addon import farm, jobs, rows
from ..preferences import prefs


class Farm:
    def __init__(self):
        self.client: farm.FarmClient | None = None
        self.key = None
        self.pending: list[tuple[str, dict]] = []   # (job id, shot entry) waiting for the next flush


FARM = Farm()


def enabled() -> bool:
    try:
        return bool(prefs().use_farm)
    except (KeyError, AttributeError):
        return False


def jobs_root() -> str | None:
    """The shared jobs folder as this machine sees it (None until it is set: queue() then says so)."""
    p = prefs()
    if not p.farm_jobs_root:
        return None
    root = bpy.path.abspath(p.farm_jobs_root)
    os.makedirs(root, exist_ok=True)
    return root


class FarmConfigError(Exception):
    pass


def _client(events, python: str) -> farm.FarmClient:
    p = prefs()
    paths = p.farm_paths()
    key = (python, p.farm_address, tuple(p.farm_engine_argv()), paths)
    if FARM.client is None or FARM.key != key:
        if FARM.client is not None:
            FARM.client.stop()
        if jobs_root() is None:
            raise FarmConfigError("no shared jobs folder: set it in Preferences > Farm")
        FARM.client = farm.FarmClient(python, p.farm_address, p.farm_engine_argv(), paths, events,
                                      os.path.join(jobs_root(), ".farm"))
        FARM.key = key
    return FARM.client


def queue(job) -> bool:
    """Keep the row's shot for the next flush. Returns whether it is queued (else the row shows why not)."""
    request = job.pending_request() or jobs.read_request(job.job_dir)
    if jobs_root() is None:
        rows.set_error(job, "no shared jobs folder: set it in Preferences > Farm (a folder every node sees)")
        return False
    if not prefs().farm_address:
        rows.set_error(job, "no farm address: set it in Preferences > Farm (HOST:PORT of `ray start --head`)")
        return False
    if not request or "image" not in request:
        rows.set_error(job, f"job folder {job.job_dir} has no request to send to the farm")
        return False
    FARM.pending.append((job.job_id, farm.shot_entry(job.job_id, job.job_dir, request, prefs().farm_paths())))
    rows.queued(job)
    job.message = "queued for the farm"
    return True


def is_pending(job) -> bool:
    return any(i == job.job_id for i, _ in FARM.pending)


def flush(events, python: str, find_job) -> None:
    """Send the rows queued since the last tick as one batch."""
    if not FARM.pending:
        return
    pending, FARM.pending = FARM.pending, []
    try:
        client = _client(events, python)
    except FarmConfigError as exc:
        for job_id, _ in pending:
            _, job = find_job(job_id)
            if job is not None:
                rows.set_error(job, str(exc))
        return
    client.submit([shot for _, shot in pending])


def cancel(job) -> None:
    if is_pending(job):
        FARM.pending = [(i, s) for i, s in FARM.pending if i != job.job_id]
        rows.cancelled(job)
        return
    if FARM.client is None:
        rows.cancelled(job, "the farm keeps running it: `stableavatar farm cancel --shot " + job.job_id + "`")
        return
    rows.cancel_requested(job)
    FARM.client.cancel(job.job_id)


def follow(job, events, python: str) -> None:
    """After a file load: stream the events of the row's batch again."""
    try:
        _client(events, python).follow(job.farm_batch)
    except FarmConfigError as exc:
        rows.set_error(job, str(exc))


def handle(event: dict, iter_jobs) -> bool:
    """The farm's own events (True: consumed). Job events are left to runtime._handle."""
    kind = event.get("type")
    if kind == "farm_batch":
        ids = set(event.get("ids") or ())
        for _, job in iter_jobs():
            if job.job_id in ids:
                job.farm_batch = event["batch"]
                job.message = f"on the farm (batch {event['batch']})"
        return True
    if kind == "farm_followed":
        for _, job in iter_jobs():
            if job.farm_batch == event.get("batch") and job.status in rows.ACTIVE:
                rows.set_error(job, f"lost the farm's events for batch {job.farm_batch} (exit code "
                                    f"{event.get('returncode')})", hint="check the farm address; Retry follows "
                                                                       "the shot again or resubmits its folder")
        return True
    return False


def stop() -> None:
    if FARM.client is not None:
        FARM.client.stop()
    FARM.client, FARM.key, FARM.pending = None, None, []
