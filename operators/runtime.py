"""The backend session and the one timer tick that turns backend events into Blender data.

Threads never touch bpy: the client's reader thread only fills `SESSION.events`. `tick()` (a persistent
`bpy.app.timers` function; tests call it directly because timers never fire headless) drains the queue,
updates job rows, imports finished frames and tags the sequencer for redraw.
"""
from __future__ import annotations

import os
import queue
import sys
import time

import bpy

from ..blender_addon import compat, jobs as jobmodel, timing
from ..blender_addon.client import BackendClient, backend_command
from ..ui.props import ADDON_ID, prefs

TICK_BUSY_S = 0.1
TICK_IDLE_S = 0.5
CANCEL_GRACE_S = 20.0  # protocol: cancel lands within one denoising step; then kill
TAG_JOB = "stableavatar_job"
TAG_SOURCE = "stableavatar_source"


class BackendConfigError(Exception):
    pass


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

def user_dir(*parts: str, create: bool = True) -> str:
    return bpy.utils.extension_path_user(ADDON_ID, path=os.path.join(*parts) if parts else "", create=create)


def jobs_root() -> str:
    p = prefs().jobs_dir
    root = bpy.path.abspath(p) if p else user_dir("jobs")
    os.makedirs(root, exist_ok=True)
    return root


def managed_python() -> str:
    venv = user_dir("venv", create=False)
    return os.path.join(venv, "Scripts", "python.exe") if sys.platform == "win32" \
        else os.path.join(venv, "bin", "python")


def backend_python() -> str:
    p = prefs().python
    return bpy.path.abspath(p) if p else managed_python()


def log_path() -> str:
    return os.path.join(user_dir("logs"), "backend.log")


def ensure_client() -> BackendClient:
    """The running backend, started on first use from the preferences (and restarted when they changed,
    once it has no jobs)."""
    argv = _argv_from_prefs()
    client = SESSION.client
    if client is not None and client.alive:
        if client.argv == argv or SESSION.sent:
            return client
        stop_backend(settle=False)  # idle, and the preferences changed: start over with the new ones
    elif client is not None:  # died and its exit event not handled yet: settle its jobs first
        from ..blender_addon.client import tail
        _backend_exited({"returncode": client.proc.returncode, "log_tail": tail(log_path())})
    SESSION.client = BackendClient(argv, log_path(), SESSION.events, cwd=user_dir()).start()
    SESSION.sent = set()
    SESSION.info = None
    SESSION.last_error = ""
    ensure_timer()
    return SESSION.client


def _argv_from_prefs() -> list[str]:
    p = prefs()
    python = backend_python()
    if not os.path.isfile(python):
        raise BackendConfigError(f"backend Python not found: {python!r}. Set Preferences > Add-ons > "
                                 "StableAvatar > Backend Python, or press Install Backend")
    checkpoints = bpy.path.abspath(p.checkpoints) if p.checkpoints else ""
    if not checkpoints or not os.path.isdir(checkpoints):
        raise BackendConfigError(f"checkpoints folder not found: {checkpoints!r}. Set it in the preferences, "
                                 "or press Download Weights")
    return backend_command(python, checkpoints, p.device, "" if p.dtype == "AUTO" else p.dtype,
                           p.memory_mode, user_dir("logs"))


def stop_backend(timeout: float = 5.0, settle: bool = True):
    """Stop the backend. settle: turn its jobs into error rows that Retry resumes (the Stop button);
    unregister/quit leave the rows as they are so the next session re-attaches them."""
    client = SESSION.client
    if client is None:
        return
    client.stop(timeout)
    if settle:
        _backend_exited({"returncode": client.proc.returncode, "log_tail": ""})
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


def set_error(job, message: str, **report):
    job.status = jobmodel.ERROR
    job.message = message.splitlines()[0][:300] if message else "error"
    job.error_text = jobmodel.error_report(message, **report)


def submit(job, record: jobmodel.JobRecord | None = None) -> bool:
    """Send a job row to the backend: a new job with its inputs, or (record None) a resume of its folder."""
    try:
        client = ensure_client()
    except BackendConfigError as exc:
        set_error(job, str(exc))
        return False
    if record is not None:
        ok = client.submit(record.id, record.job_dir, record.image, record.audio, record.params)
    else:
        ok = client.submit(job.job_id, job.job_dir)
    # when the write failed the backend is dying: its exit event turns the row into an error row
    SESSION.sent.add(job.job_id)
    job.status = jobmodel.QUEUED
    job.message = "queued"
    return ok


def cancel(job):
    if job.status not in jobmodel.ACTIVE:
        return
    client = SESSION.client
    if client is None or not client.alive or job.job_id not in SESSION.sent:
        job.status = jobmodel.CANCELLED
        job.message = "cancelled"
        return
    job.status = jobmodel.CANCELLING
    job.message = "cancelling..."
    client.cancel(job.job_id)
    SESSION.cancel_deadline[job.job_id] = time.monotonic() + CANCEL_GRACE_S


def reattach():
    """After a file load or (re)enable: resume jobs that were running, import ones that finished meanwhile."""
    for scene, job in list(iter_jobs()):
        if job.status not in jobmodel.ACTIVE:
            continue
        if job.status == jobmodel.CANCELLING:
            job.status, job.message = jobmodel.CANCELLED, "cancelled"
            continue
        if jobmodel.finished_result(job.job_dir):
            SESSION.sent.discard(job.job_id)  # its done event (if still queued) must not import it twice
            import_result(scene, job)
        elif SESSION.client is not None and SESSION.client.alive and job.job_id in SESSION.sent:
            continue  # the same Blender session: events keep coming for it
        elif os.path.isfile(os.path.join(job.job_dir, "job.json")):
            submit(job)
        else:
            set_error(job, f"job folder {job.job_dir} has no job.json: it cannot be resumed")


# ---------------------------------------------------------------- importing results

def free_channel(se, start: int, end: int, above: int) -> int:
    """Lowest channel above `above` with nothing in [start, end)."""
    strips = list(compat.top_strips(se))
    for ch in range(above + 1, 129):
        if not any(s.channel == ch and compat.left(s) < end and compat.right(s) > start for s in strips):
            return ch
    raise RuntimeError("no free channel above %d for frames %d-%d" % (above, start, end))


def import_result(scene, job, done_event: dict | None = None):
    """Add the result as a new image-sequence strip. Existing strips are only removed when the user asked
    to replace this source's previous take, and then only strips this add-on made for that source."""
    try:
        record = jobmodel.JobRecord.load(job.job_dir)
        frames_dir = (done_event or {}).get("frames_dir") or os.path.join(job.job_dir, "frames")
        names = jobmodel.frame_files(frames_dir)
        if not names:
            raise RuntimeError(f"the backend reported done but {frames_dir} holds no PNG frames")
        pl = record.placement
        target = bpy.data.scenes.get(pl.scene) or scene
        se = target.sequence_editor or target.sequence_editor_create()
        fps = timing.scene_fps(pl.fps, pl.fps_base)
        indices = timing.element_indices(pl.n_scene_frames, len(names), fps)
        start, end = pl.frame_start, pl.frame_start + len(indices)

        old = []
        if pl.replace_previous:
            old = [s for s in compat.all_strips(se)
                   if s.get(TAG_SOURCE) == pl.source and s.get(TAG_JOB) not in (None, job.job_id)]
        prefetch = getattr(se, "use_prefetch", None)
        if prefetch:
            se.use_prefetch = False  # the prefetch thread may read strips while we add/remove them
        try:
            for s in old:
                compat.remove_strip(se, s)
            channel = free_channel(se, start, end, pl.channel_above)
            name = f"{pl.source} avatar" + (f" take {pl.take}" if pl.take > 1 else "")
            strip = compat.new_image_strip(se, name, os.path.join(frames_dir, names[indices[0]]), channel, start)
            for i in indices[1:]:
                strip.elements.append(names[i])
            strip[TAG_JOB] = job.job_id
            strip[TAG_SOURCE] = pl.source
        finally:
            if prefetch:
                se.use_prefetch = True
        job.result_strip = strip.name
        job.status = jobmodel.IMPORTED
        job.fraction = 1.0
        job.message = f"imported as '{strip.name}' (channel {channel}, {len(indices)} frames)"
    except Exception as exc:  # noqa: BLE001 - any failure must land in the row, not the console
        import traceback
        set_error(job, f"import failed: {exc}", log_tail=traceback.format_exc())


# ---------------------------------------------------------------- the tick

def _handle(event: dict):
    kind = event.get("type")
    if kind == "task":  # install / download progress from the preferences buttons
        try:
            prefs().backend_report = event.get("message", "")
        except KeyError:
            pass
        return
    if event.get("_client") != (SESSION.client.generation if SESSION.client else None):
        return  # a backend we already gave up on
    if kind == "ready":
        SESSION.info = event
        try:
            prefs().backend_report = format_report(event)
        except KeyError:
            pass
        return
    if kind == "exit":
        _backend_exited(event)
        return
    job_id = event.get("id")
    scene, job = find_job(job_id) if job_id else (None, None)
    if kind == "error" and job is None:
        SESSION.last_error = jobmodel.error_report(event.get("message", "error"), hint=event.get("hint") or "",
                                                   traceback_path=event.get("traceback") or "")
        return
    if job is None:
        if kind in ("done", "error", "cancelled"):
            SESSION.sent.discard(job_id)  # its row is in a file that is not open: reattach() handles it later
        return
    if kind == "accepted":
        if job.status in (jobmodel.PREPARING, jobmodel.QUEUED):
            job.status = jobmodel.RUNNING if event.get("position", 0) == 0 else jobmodel.QUEUED
            job.message = "resumed" if event.get("resumed") else (
                "running" if job.status == jobmodel.RUNNING else f"queued ({event.get('position')} ahead)")
    elif kind == "progress":
        if job.status in (jobmodel.QUEUED, jobmodel.RUNNING):
            job.status = jobmodel.RUNNING
        job.phase = str(event.get("phase") or "")
        job.fraction = float(event.get("fraction") or 0.0)
        for k in ("step", "steps", "window", "windows"):
            setattr(job, k, int(event.get(k) or 0))
        eta = event.get("eta_s")
        job.eta_s = float(eta) if eta is not None else -1.0
        if job.status == jobmodel.RUNNING:
            job.message = progress_text(job)
    elif kind == "done":
        SESSION.sent.discard(job.job_id)
        if job.status == jobmodel.CANCELLING:
            job.status, job.message = jobmodel.CANCELLED, "finished before the cancel arrived: Re-import adds it"
        elif job.status in jobmodel.ACTIVE:
            import_result(scene, job, event)
    elif kind == "cancelled":
        SESSION.sent.discard(job.job_id)
        SESSION.cancel_deadline.pop(job.job_id, None)
        job.status, job.message = jobmodel.CANCELLED, "cancelled"
    elif kind == "error":
        SESSION.sent.discard(job.job_id)
        set_error(job, f"{event.get('category', 'error')}: {event.get('message', '')}",
                  hint=event.get("hint") or "", traceback_path=event.get("traceback") or "",
                  log_path=os.path.join(job.job_dir, "log"))


def _backend_exited(event: dict):
    code = event.get("returncode")
    SESSION.client = None
    sent, SESSION.sent = SESSION.sent, set()
    resubmit = SESSION.resubmit_after_exit
    SESSION.resubmit_after_exit = set()
    for scene, job in iter_jobs():
        if job.job_id not in sent or job.status not in jobmodel.ACTIVE:
            continue
        if job.status == jobmodel.CANCELLING:
            job.status, job.message = jobmodel.CANCELLED, "cancelled (backend stopped)"
        elif job.job_id in resubmit:
            submit(job)
        else:
            set_error(job, f"the backend stopped (exit code {code}) while this job was "
                           f"{job.status.lower()}", hint="press Retry to resume it from its last step",
                      log_path=log_path(), log_tail=(SESSION.last_error + "\n" if SESSION.last_error else "")
                      + event.get("log_tail", ""))


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


def progress_text(job) -> str:
    parts = [job.phase or "working"]
    if job.windows:
        parts.append(f"window {job.window}/{job.windows}")
    if job.steps:
        parts.append(f"step {job.step}/{job.steps}")
    if job.eta_s >= 0:
        m, s = divmod(int(job.eta_s + 0.5), 60)
        parts.append(f"ETA {m}:{s:02d}")
    return " · ".join(parts)


def format_report(ready: dict) -> str:
    v = ready.get("versions") or {}
    gpu = ready.get("gpu")
    w = ready.get("weights") or {}
    caps = ready.get("capabilities") or {}
    lines = [f"Python {v.get('python', '?')}, torch {v.get('torch', '?')}, diffusers {v.get('diffusers', '?')}, "
             f"transformers {v.get('transformers', '?')}, stableavatar {v.get('stableavatar', '?')}",
             f"device {ready.get('device', '?')}" + (
                 f", GPU {gpu.get('name')} ({gpu.get('free_mb')} of {gpu.get('total_mb')} MB free)" if gpu
                 else ", no GPU"),
             ("weights found at " + str(w.get("path")) + (" (tiny test weights)" if w.get("tiny") else ""))
             if w.get("found") else ("weights NOT found: " + str(w.get("error") or "searched " + ", ".join(
                 map(str, w.get("searched") or []))) + " - set Checkpoints or press Download Weights"),
             f"memory mode {ready.get('memory_mode', '?')} (modes: {', '.join(caps.get('memory_modes') or [])})"]
    return "\n".join(lines)


def _redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("SEQUENCE_EDITOR", "PREFERENCES"):
                area.tag_redraw()


def tick() -> float | None:
    """Drain backend events into Blender data. The only code that writes Blender data for jobs."""
    if SESSION.in_tick or bpy.app.is_job_running("RENDER"):
        return TICK_BUSY_S  # a render pumps the event loop: never mutate strips in the middle of it
    SESSION.in_tick = True
    handled = 0
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
            _handle(event)
        _enforce_cancel_deadlines()
    finally:
        SESSION.in_tick = False
    if handled:
        _redraw()
    busy = SESSION.client is not None or any(j.status in jobmodel.ACTIVE for _, j in iter_jobs())
    return TICK_BUSY_S if busy else TICK_IDLE_S


def ensure_timer():
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_BUSY_S, persistent=True)


def remove_timer():
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
