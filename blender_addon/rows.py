"""The job row: its states, how backend events move it between them, and the text it shows. No bpy.

A row is any object with the attributes of `ui/props.py`'s STABLEAVATAR_PG_job (status, message, phase,
fraction, step, steps, window, windows, eta_s, seed, error_text); the tests use plain objects. The bpy layer
(`operators/runtime.py`) finds the row an event belongs to, calls `apply`, and performs the action it returns.
"""
from __future__ import annotations

from . import jobs, startup

PREPARING, QUEUED, RUNNING, CANCELLING, IMPORTED, CANCELLED, ERROR = (
    "PREPARING", "QUEUED", "RUNNING", "CANCELLING", "IMPORTED", "CANCELLED", "ERROR")
STATUSES = (PREPARING, QUEUED, RUNNING, CANCELLING, IMPORTED, CANCELLED, ERROR)
ACTIVE = (PREPARING, QUEUED, RUNNING, CANCELLING)
IMPORT = "import"  # the action `apply` returns when the row's frames should go on the timeline


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value, default: float) -> float:
    try:
        v = float(value)
        return v if v == v and abs(v) != float("inf") else default
    except (TypeError, ValueError):
        return default


def set_error(row, message: str, **report) -> None:
    row.status = ERROR
    row.message = (message.splitlines() or ["error"])[0][:300] if message else "error"
    row.error_text = jobs.error_report(message, **report)


def queued(row) -> None:
    row.status, row.message = QUEUED, "queued"


def cancel_requested(row) -> None:
    row.status, row.message = CANCELLING, "cancelling..."


def cancelled(row, why: str = "") -> None:
    row.status, row.message = CANCELLED, "cancelled" + (f" ({why})" if why else "")


def imported(row, strip_name: str, channel: int, frames: int) -> None:
    row.status, row.fraction = IMPORTED, 1.0
    row.message = f"imported as '{strip_name}' (channel {channel}, {frames} frames)"


def progress_text(row) -> str:
    parts = [row.phase or "working"]
    if row.windows:
        parts.append(f"window {row.window}/{row.windows}")
    if row.steps:
        parts.append(f"step {row.step}/{row.steps}")
    if row.eta_s >= 0:
        m, s = divmod(int(row.eta_s + 0.5), 60)
        parts.append(f"ETA {m}:{s:02d}")
    return " · ".join(parts)


def apply(row, event: dict, log_path: str = "") -> str | None:
    """Move `row` by one backend event of its job. Returns IMPORT when the frames are ready to import.
    Never raises: fields of the wrong type count as missing (the client already checked the contract)."""
    kind = event.get("type")
    if kind == "accepted":
        row.seed = _int(event.get("seed"), row.seed)
        if row.status in (PREPARING, QUEUED):
            position = _int(event.get("position"))
            row.status = RUNNING if position == 0 else QUEUED
            row.message = "resumed" if event.get("resumed") else (
                "running" if position == 0 else f"queued ({position} ahead)")
    elif kind == "progress":
        if row.status in (QUEUED, RUNNING):
            row.status = RUNNING
        row.phase = str(event.get("phase") or "")
        row.fraction = min(1.0, max(0.0, _float(event.get("fraction"), row.fraction)))
        for k in ("step", "steps", "window", "windows"):
            setattr(row, k, max(0, _int(event.get(k))))
        row.eta_s = _float(event.get("eta_s"), -1.0)
        if row.status == RUNNING:
            row.message = progress_text(row)
    elif kind == "done":
        if row.status == CANCELLING:
            row.status, row.message = CANCELLED, "finished before the cancel arrived: Re-import adds it"
        elif row.status in ACTIVE:
            return IMPORT
    elif kind == "cancelled":
        cancelled(row)
    elif kind == "error":
        set_error(row, f"{event.get('category', 'error')}: {event.get('message', '')}",
                  hint=str(event.get("hint") or ""), traceback_path=str(event.get("traceback") or ""),
                  log_path=log_path)
    return None


def backend_stopped(row, code, log_path: str, log_tail: str, resubmit: bool, ready: bool = True, reason: str = "",
                    hint: str = "") -> bool:
    """The backend this row's job was sent to exited (`ready`: after it had started; `reason`, `hint`: why, when
    the backend knows it, e.g. a remote one that could not connect). Returns whether the job should be submitted
    again."""
    if row.status not in ACTIVE:
        return False
    if row.status == CANCELLING:
        cancelled(row, "backend stopped")
        return False
    if resubmit and ready:
        return True
    if reason:  # one line from the backend itself (a remote one classifies ssh's failures)
        set_error(row, reason, hint=hint or "press Retry to resume it from its last step", log_path=log_path,
                  log_tail=log_tail)
        return False
    if not ready:  # it never started: say why (from its log), not "press Retry to resume"
        message, hint = startup.exited_before_ready(code, log_tail)
        set_error(row, message, hint=hint, log_path=log_path, log_tail=log_tail)
        return False
    set_error(row, f"the backend stopped (exit code {code}) while this job was {row.status.lower()}",
              hint="press Retry to resume it from its last step", log_path=log_path, log_tail=log_tail)
    return False


def connection_note(row, message: str) -> None:
    """A remote backend's connection news (reconnecting ..., reconnected) on the rows it serves."""
    if row.status in (QUEUED, RUNNING) and message:
        row.message = message.splitlines()[0][:300]


def format_ready(ready: dict) -> str:
    """The preferences' backend report from a `ready` event."""
    v = ready.get("versions") or {}
    gpu = ready.get("gpu")
    w = ready.get("weights") or {}
    caps = ready.get("capabilities") or {}
    lines = [f"Python {v.get('python', '?')}, torch {v.get('torch', '?')}, diffusers {v.get('diffusers', '?')}, "
             f"transformers {v.get('transformers', '?')}, stableavatar {v.get('stableavatar', '?')}",
             f"device {ready.get('device', '?')}" + (
                 f", GPU {gpu.get('name')} ({gpu.get('free_mb')} of {gpu.get('total_mb')} MB free)"
                 if isinstance(gpu, dict) else ", no GPU"),
             ("weights found at " + str(w.get("path")) + (" (tiny test weights)" if w.get("tiny") else ""))
             if w.get("found") else ("weights NOT found: " + str(w.get("error") or "searched " + ", ".join(
                 map(str, w.get("searched") or []))) + " - set Checkpoints or press Download Weights"),
             f"memory mode {ready.get('memory_mode', '?')} (modes: {', '.join(caps.get('memory_modes') or [])})"]
    return "\n".join(lines)
