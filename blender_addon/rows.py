"""The job row: its states, how backend events move it between them, and the text it shows. No bpy.

A row is any object with the attributes of `ui/props.py`'s STABLEAVATAR_PG_job (status, message, phase,
fraction, step, steps, window, windows, eta_s, seed, error_text, warning, preview); the tests use plain objects. The bpy layer
(`operators/runtime.py`) finds the row an event belongs to, calls `apply`, and performs the action it returns.
"""
from __future__ import annotations

import re

from . import contract, jobs, startup

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


def panel_hint(hint: str) -> str:
    """A backend hint in the panel's words: a generation parameter's command-line flag becomes its label in the
    Avatar panel (the artist has no command line)."""
    def label(m):
        spec = next((p for p in contract.PARAMS.values() if p.flag == m.group(0)), None)
        return f"'{spec.ui_label}' in the Avatar panel" if spec is not None and spec.panel else m.group(0)
    return re.sub(r"--[a-z][a-z-]*", label, hint or "")


def set_error(row, message: str, **report) -> None:
    row.status = ERROR
    row.message = (message.splitlines() or ["error"])[0][:300] if message else "error"
    if report.get("hint"):
        report["hint"] = panel_hint(report["hint"])
    row.error_text = jobs.error_report(message, **report)


def queued(row) -> None:
    row.status, row.message = QUEUED, "queued"


def cancel_requested(row) -> None:
    row.status, row.message = CANCELLING, "cancelling..."


def cancelled(row, why: str = "") -> None:
    row.status, row.message = CANCELLED, "cancelled" + (f" ({why})" if why else "")


def imported(row, strip_name: str, channel: int, frames: int, warning: str = "") -> None:
    row.status, row.fraction = IMPORTED, 1.0
    row.message = f"imported as '{strip_name}' (channel {channel}, {frames} frames)"
    row.warning = warning


def strip_missing(row) -> None:
    """The row's avatar strip is gone from the timeline (an undo, or deleted): say so; Re-import brings it back."""
    row.message = f"the avatar strip '{row.result_strip}' is no longer on the timeline: Re-import adds it again"
    row.result_strip = ""


def starting_text(seconds: float, stage: str = "") -> str:
    """What a job row waiting for the backend's cold start shows."""
    return f"starting backend ({stage or 'loading models'})... {int(seconds)} s"


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
    elif kind == "preview":
        row.preview = str(event.get("path") or "")
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


def version_mismatch(ready: dict, extension_version: str) -> str | None:
    """Why the backend should be updated: its stableavatar version differs from the extension's."""
    theirs = (ready.get("versions") or {}).get("stableavatar")
    if extension_version and theirs and theirs != extension_version:
        return (f"the backend is stableavatar {theirs}, the extension {extension_version}: press Update Backend "
                "so that both are the same version")
    return None


def format_ready(ready: dict, extension_version: str = "") -> str:
    """The preferences' backend report from a `ready` event: what the backend really uses, whether its engine
    and weights loaded, and its error when they did not."""
    v = ready.get("versions") or {}
    gpu = ready.get("gpu")
    w = ready.get("weights") or {}
    caps = ready.get("capabilities") or {}
    failed = ready.get("engine_error") if isinstance(ready.get("engine_error"), dict) else None
    lines = [f"Python {v.get('python', '?')}, torch {v.get('torch', '?')}"
             + (f" (CUDA {v['cuda']})" if v.get("cuda") else " (no CUDA)")
             + f", diffusers {v.get('diffusers', '?')}, transformers {v.get('transformers', '?')}, "
               f"stableavatar {v.get('stableavatar', '?')}"]
    if failed:
        lines.append(f"ENGINE ERROR ({failed.get('category', 'error')}): {failed.get('message', '')}")
        if failed.get("hint"):
            lines.append("hint: " + str(failed["hint"]))
        lines.append(f"device {ready.get('device', '?')} requested, not in use (the engine did not start)")
    else:
        lines.append(f"device in use: {ready.get('device', '?')}" + (
            f", GPU {gpu.get('name')} ({gpu.get('free_mb')} of {gpu.get('total_mb')} MB free)"
            if isinstance(gpu, dict) else ", no GPU"))
    where = str(w.get("path"))
    if not failed and w.get("found"):
        lines.append(f"weights load from {where}" + (" (tiny test weights)" if w.get("tiny") else "")
                     + ": VAE and wav2vec2 loaded, the transformer loads with the first job")
    elif w.get("found"):
        lines.append(f"weights found at {where}, not loaded (the engine failed before them)")
    else:
        lines.append("weights NOT usable: " + str(w.get("error") or "searched " + ", ".join(
            map(str, w.get("searched") or []))) + " - set Checkpoints or press Download Weights")
    lines.append(f"memory mode {ready.get('memory_mode', '?')} (modes: {', '.join(caps.get('memory_modes') or [])})")
    why = version_mismatch(ready, extension_version)
    if why:
        lines.append(why)
    return "\n".join(lines)
