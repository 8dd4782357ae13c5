"""The backend session and the one timer tick that turns backend events into Blender data.

Threads never touch bpy: the client's reader thread only fills `SESSION.events`. `tick()` (a persistent
`bpy.app.timers` function; tests call it directly because timers never fire headless) drains the queue, moves
job rows (`blender_addon/rows.py` decides how), imports finished frames (`timeline.py`) and redraws.
"""
from __future__ import annotations

import json
import os
import queue
import time

import bpy

from ..blender_addon import install_state, jobs, rows
from ..blender_addon.client import BackendClient, incompatible, known_params, tail
from ..blender_addon.startup import BackendStartError, exited_before_ready
from ..preferences import EXTENSION_VERSION, prefs
from . import farm_runtime, feedback, paths, timeline, undo_guard
from .backend_config import BackendConfigError, backend_from_prefs, backend_python, log_path

TICK_BUSY_S = 0.1
TICK_IDLE_S = 0.5
CANCEL_GRACE_S = 20.0  # protocol: cancel lands within one denoising step; then kill


class Session:
    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.client: BackendClient | None = None
        self.sent: set[str] = set()           # job ids the current client knows
        self.cancel_deadline: dict[str, float] = {}
        self.resubmit_after_exit: set[str] = set()
        self.info: dict | None = None          # the last `ready` message
        self.last_error: str = ""              # the last error not about a job
        self.in_tick = False
        self.pending: list[dict] = []          # events taken off the queue by wait(), handled first
        self.started_at = 0.0                  # when the current client was started (monotonic)
        self.models_loaded = False             # between `ready` and a `released`
        self.longest_tick_ms = 0.0             # the slowest tick while a job was active (measured)

    def wait(self, timeout: float) -> bool:
        """Block until the backend sends something (or timeout); tests use it to drive tick() without
        sleeping blindly. Returns whether an event arrived."""
        try:
            self.pending.append(self.events.get(timeout=timeout))
            return True
        except queue.Empty:
            return False


SESSION = Session()


# ---------------------------------------------------------------- paths and backend start

def jobs_root() -> str:
    if farm_runtime.enabled() and farm_runtime.jobs_root():
        return farm_runtime.jobs_root()  # the shared folder every farm node sees
    root = paths.jobs_root()
    os.makedirs(root, exist_ok=True)
    return root


def ensure_client() -> BackendClient:
    """The running backend, started on first use from the preferences (and restarted when they changed,
    once it has no jobs)."""
    argv, start = backend_from_prefs(SESSION.events)
    client = SESSION.client
    if client is not None and client.alive:
        if client.argv == argv or SESSION.sent:
            return client
        stop_backend(settle=False)  # idle, and the preferences changed: start over with the new ones
    elif client is not None:  # died and its exit event not handled yet: settle its jobs first
        _backend_exited({"returncode": client.returncode,
                         "log_tail": tail(log_path(), start=client.log_start)})
    SESSION.client = start()
    SESSION.sent = set()
    SESSION.info = None
    SESSION.last_error = ""
    SESSION.started_at = time.monotonic()
    ensure_timer()
    return SESSION.client


def stop_backend(timeout: float = 5.0, settle: bool = True):
    """Stop the backend. settle: turn its jobs into error rows that Retry resumes (the Stop button);
    unregister/quit leave the rows as they are so the next session re-attaches them."""
    if not settle:
        farm_runtime.stop()  # quitting: the farm goes on; the rows keep their batch and follow it next session
    client = SESSION.client
    if client is None:
        return
    client.stop(timeout)
    if settle:
        _backend_exited({"returncode": client.returncode, "log_tail": ""})
    SESSION.client, SESSION.sent = None, set()


# ---------------------------------------------------------------- job rows

def iter_jobs():
    for scene in bpy.data.scenes:
        settings = getattr(scene, "stableavatar", None)
        if settings is None:
            continue
        for job in settings.jobs:
            yield scene, job


def find_job(job_id: str):
    for scene, job in iter_jobs():
        if job.job_id == job_id:
            return scene, job
    return None, None


def submit(job) -> bool:
    """Send a job row to the backend: its stored request until the backend accepted one, then its folder alone
    (which resumes from the last checkpoint). With the farm on, the row goes out with the next batch."""
    if farm_runtime.enabled():
        ensure_timer()
        return farm_runtime.queue(job)
    try:
        client = ensure_client()
    except BackendConfigError as exc:
        rows.set_error(job, str(exc))
        return False
    except BackendStartError as exc:  # not executable, not a program: the row says so, nothing escapes
        rows.set_error(job, exc.message, hint=exc.hint, log_path=log_path())
        return False
    job_dir = paths.job_path(job)
    request = None if jobs.read_request(job_dir) else job.pending_request()
    if request is not None:
        request["params"] = known_params(request.get("params") or {}, SESSION.info)
        ok = client.submit(job.job_id, job_dir, **request)
    else:
        ok = client.submit(job.job_id, job_dir)
    # when the write failed the backend is dying: its exit event turns the row into an error row
    SESSION.sent.add(job.job_id)
    rows.queued(job)
    return ok


def set_request(job, image: str, audio: str, params: dict, placement: jobs.Placement) -> None:
    job.request = json.dumps({"image": image, "audio": audio, "params": params,
                              "client": placement.client_record()})


def cancel(job):
    if job.status not in rows.ACTIVE:
        return
    if job.farm_batch or farm_runtime.is_pending(job):
        farm_runtime.cancel(job)
        return
    client = SESSION.client
    if client is None or not client.alive or job.job_id not in SESSION.sent:
        rows.cancelled(job)
        return
    rows.cancel_requested(job)
    client.cancel(job.job_id)
    SESSION.cancel_deadline[job.job_id] = time.monotonic() + CANCEL_GRACE_S


def reattach():
    """After a file load or (re)enable: resume jobs that were running, import ones that finished meanwhile."""
    for scene, job in list(iter_jobs()):
        if job.status not in rows.ACTIVE:
            continue
        if job.status == rows.CANCELLING:
            rows.cancelled(job)
            continue
        job_dir = paths.job_path(job)
        if jobs.finished_result(job_dir):
            SESSION.sent.discard(job.job_id)  # its done event (if still queued) must not import it twice
            timeline.import_result(scene, job)
        elif SESSION.client is not None and SESSION.client.alive and job.job_id in SESSION.sent:
            continue  # the same Blender session: events keep coming for it
        elif job.farm_batch:
            farm_runtime.follow(job, SESSION.events, backend_python())
            ensure_timer()
        elif jobs.read_request(job_dir) or job.pending_request():
            submit(job)
        else:
            rows.set_error(job, f"job folder {job_dir} has no job.json: it cannot be resumed")


# ---------------------------------------------------------------- the tick

def _report(text: str) -> None:
    try:
        prefs().backend_report = text
    except KeyError:  # the add-on is being disabled
        pass


def _handle(event: dict):
    kind = event.get("type")
    if kind == "task":  # install / download progress from the preferences buttons
        _report(event.get("message", ""))
        return
    farm_event = bool(event.get("_farm"))
    if farm_event and farm_runtime.handle(event, iter_jobs):
        return
    if not farm_event and event.get("_client") != (SESSION.client.generation if SESSION.client else None):
        return  # a backend we already gave up on
    if kind == "ready":
        SESSION.info = event
        SESSION.models_loaded = not event.get("engine_error")
        why = incompatible(event)
        install_state.STATE["update_needed"] = rows.version_mismatch(event, EXTENSION_VERSION) or ""
        _report(why or rows.format_ready(event, EXTENSION_VERSION))
        if why:
            SESSION.last_error = why
            SESSION.client.stop(timeout=5.0)  # its exit event turns the rows sent to it into errors
        for _, job in iter_jobs():
            if job.job_id in SESSION.sent and job.status == rows.QUEUED:
                job.message = "queued"  # no longer waiting for the cold start
        return
    if kind == "released":
        SESSION.models_loaded = False
        feedback.notify(f"StableAvatar: GPU memory released ({event.get('reason')}); models reload with the next job")
        return
    if kind == "exit":
        _backend_exited(event)
        return
    if kind == "connection":  # a remote backend lost its connection and reconnects (or is back)
        _report(event.get("message", ""))
        for _, job in iter_jobs():
            if job.job_id in SESSION.sent:
                rows.connection_note(job, event.get("message", ""))
        return
    if kind == "log":
        return  # a line that is not protocol (already in the backend log)
    job_id = event.get("id")
    scene, job = find_job(job_id) if job_id else (None, None)
    if kind == "error" and job is None:
        SESSION.last_error = jobs.error_report(event.get("message", "error"), hint=event.get("hint") or "",
                                               traceback_path=event.get("traceback") or "")
        return
    if job is None:
        if kind in ("done", "error", "cancelled"):
            SESSION.sent.discard(job_id)  # its row is in a file that is not open: reattach() handles it later
        return
    if kind in ("done", "error", "cancelled"):
        SESSION.sent.discard(job.job_id)
        SESSION.cancel_deadline.pop(job.job_id, None)
    if kind == "accepted":
        job.request = ""  # the job folder's job.json is the record from now on
    if kind == "progress":
        SESSION.models_loaded = True
    if rows.apply(job, event, log_path=jobs.path(paths.job_path(job), "log")) == rows.IMPORT:
        timeline.import_result(scene, job, event)
    if kind == "preview":
        feedback.load_preview(job)
    if kind in ("done", "error", "cancelled"):
        feedback.job_ended(job)


def _backend_exited(event: dict):
    code = event.get("returncode")
    ready = SESSION.info is not None  # it had started; else it died starting, and its log says why
    SESSION.client = None
    SESSION.models_loaded = False
    sent, SESSION.sent = SESSION.sent, set()
    resubmit = SESSION.resubmit_after_exit
    SESSION.resubmit_after_exit = set()
    log_tail = (SESSION.last_error + "\n" if SESSION.last_error else "") + str(event.get("log_tail") or "")
    reason, hint = event.get("message") or "", event.get("hint") or ""
    if reason:  # a remote backend that could not connect says why in one line
        _report(f"{reason}\nhint: {hint}")
    elif not ready and (code or 0) > 0 and not SESSION.last_error:  # died starting (a kill's code is negative)
        message, hint = exited_before_ready(code, str(event.get("log_tail") or ""))
        _report(f"{message}\nhint: {hint}\nlog: {log_path()}")
    for scene, job in iter_jobs():
        if job.job_id in sent and rows.backend_stopped(job, code, log_path(), log_tail, job.job_id in resubmit,
                                                       ready=ready, reason=reason, hint=hint):
            submit(job)
        elif job.job_id in sent and job.status == rows.ERROR:
            feedback.job_ended(job)


def _enforce_cancel_deadlines():
    now = time.monotonic()
    late = [j for j, t in SESSION.cancel_deadline.items() if t < now]
    if not late or SESSION.client is None:
        return
    # the backend did not stop within the grace period: kill it, resume the other jobs on a fresh one
    for job_id in late:
        SESSION.cancel_deadline.pop(job_id, None)
    SESSION.resubmit_after_exit = {j for j in SESSION.sent if j not in late}
    SESSION.client.kill()


def _redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("SEQUENCE_EDITOR", "PREFERENCES", "STATUSBAR"):
                area.tag_redraw()


def _cold_start():
    """While the backend loads its models, say so (with the seconds so far) where the user looks."""
    client = SESSION.client
    if client is None or SESSION.info is not None or not client.alive:
        return
    text = rows.starting_text(time.monotonic() - SESSION.started_at)
    for _, job in iter_jobs():
        if job.job_id in SESSION.sent and job.status == rows.QUEUED and job.message != text:
            job.message = text
    _report(text)


def tick() -> float | None:
    """Drain backend events into Blender data. The only code that writes Blender data for jobs."""
    if SESSION.in_tick or bpy.app.is_job_running("RENDER"):
        return TICK_BUSY_S  # a render pumps the event loop: never mutate strips in the middle of it
    SESSION.in_tick = True
    handled = 0
    t0 = time.perf_counter()
    try:
        while True:
            if SESSION.pending:
                event = SESSION.pending.pop(0)
            else:
                try:
                    event = SESSION.events.get_nowait()
                except queue.Empty:
                    break
            handled += 1
            _guarded(_handle, event)
        _guarded(_enforce_cancel_deadlines)
        _guarded(_cold_start)
        _guarded(feedback.poll_tasks)
        _guarded(undo_guard.snapshot)
        if farm_runtime.FARM.pending:  # the rows queued for the farm since the last tick, as one batch
            _guarded(farm_runtime.flush, SESSION.events, backend_python(), find_job)
    finally:
        SESSION.in_tick = False
    starting = SESSION.client is not None and SESSION.info is None  # the seconds of the cold start move
    if handled or starting:
        _guarded(_redraw)
    try:
        busy = SESSION.client is not None or any(j.status in rows.ACTIVE for _, j in iter_jobs())
    except Exception:  # noqa: BLE001 - e.g. while a file is being loaded
        busy = True
    if busy:
        SESSION.longest_tick_ms = max(SESSION.longest_tick_ms, (time.perf_counter() - t0) * 1000.0)
    return TICK_BUSY_S if busy else TICK_IDLE_S


def _guarded(fn, *args) -> None:
    """Run one step of the tick; an exception never leaves it. A timer function that raises is unregistered by
    Blender, and every job row would wait forever: the failure goes to the console and, when the event names a
    job, into that row."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        import traceback
        text = traceback.format_exc()
        what = repr(args[0])[:200] if args else fn.__name__
        print(f"StableAvatar: the add-on failed to handle {what}\n{text}")
        try:
            event = args[0] if args and isinstance(args[0], dict) else {}
            job_id = event.get("id")
            _, job = find_job(job_id) if isinstance(job_id, str) and job_id else (None, None)
            if job is not None and job.status in rows.ACTIVE:
                rows.set_error(job, f"the add-on failed to handle a {str(event.get('type'))[:40]} event: {exc}",
                               hint="this is a bug; press Retry to resume the job", log_tail=text)
            else:
                SESSION.last_error = f"the add-on failed to handle a backend message: {exc}"
        except Exception:  # noqa: BLE001 - reporting must not raise either
            pass


def ensure_timer():
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_BUSY_S, persistent=True)


def remove_timer():
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
