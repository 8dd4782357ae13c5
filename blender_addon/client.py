"""The backend subprocess and its JSON-lines pipe (docs/protocol.md), without bpy.

One reader thread turns stdout lines into events on a `queue.Queue`; the main thread (Blender's timer tick)
drains it. Lines are checked against the contract here, so the tick only ever sees well-formed events: a line
that breaks it becomes `{"type": "log", ...}` (kept visible, never raised). When the process ends the reader
posts one `{"type": "exit", ...}` event with the return code and the tail of the log, so a killed backend
always surfaces as an error row.
"""
from __future__ import annotations

import itertools
import os
import queue
import subprocess
import threading

from . import contract
from .startup import BackendStartError, start_error

_generation = itertools.count(1)


def backend_command(python: str, settings: contract.EngineSettings, log_dir: str = "") -> list[str]:
    """`python -m stableavatar serve --stdio` with the engine settings as flags."""
    argv = [python, "-u", "-m", "stableavatar", "serve", "--stdio", *settings.validate().argv()]
    return argv + (["--log-dir", log_dir] if log_dir else [])


def incompatible(ready: dict) -> str | None:
    """Why this add-on cannot work with the worker that sent `ready` (None when it can)."""
    caps = ready.get("capabilities") if isinstance(ready.get("capabilities"), dict) else {}
    theirs = caps.get("protocol", ready.get("protocol"))
    if theirs != contract.PROTOCOL:
        return (f"the backend speaks protocol {theirs}, this add-on protocol {contract.PROTOCOL}: update the "
                "backend (Install Backend) or the extension so that both are the same version")
    return None


def known_params(params: dict, ready: dict | None) -> dict:
    """The parameters the worker knows (from `ready.capabilities.params`); all of them before `ready`."""
    known = ((ready or {}).get("capabilities") or {}).get("params")
    return params if not isinstance(known, dict) else {k: v for k, v in params.items() if k in known}


def tail(path: str, limit: int = 4000, start: int = 0) -> str:
    """The end of a log file, from byte `start` on (what one backend process wrote into a shared log)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class BackendClient(contract.ChildProcess):
    """One running `stableavatar serve --stdio`. Events land on `events` as dicts with `_client` set."""

    def __init__(self, argv: list[str], log_path: str, events: queue.Queue, cwd: str | None = None):
        self.argv = argv
        self.log_path = log_path
        self.events = events
        self.cwd = cwd
        self.generation = next(_generation)
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.log_start = 0  # where this process's part of the (appended) log begins

    def start(self) -> "BackendClient":
        """Start the process; a Backend Python that cannot be run raises startup.BackendStartError."""
        try:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            log = open(self.log_path, "ab")
            self.log_start = log.seek(0, os.SEEK_END)
        except OSError as exc:
            raise BackendStartError(f"cannot write the backend log {self.log_path}: {exc.strerror or exc}",
                                    "check that the add-on's user folder is writable") from None
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         cwd=self.cwd, env=contract.clean_env(), **contract.detached())
        except OSError as exc:  # not executable, not a program, missing interpreter
            raise start_error(self.argv[0], exc) from None
        finally:
            log.close()
        threading.Thread(target=self._read, name="stableavatar-backend-reader", daemon=True).start()
        return self

    def _post(self, event: dict):
        event["_client"] = self.generation
        self.events.put(event)

    def _read(self):
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            if not raw.strip():
                continue
            try:
                event = contract.parse_event(raw)
            except Exception as exc:  # noqa: BLE001 - a stray print, a newer worker's event: never end the reader,
                # or the exit event below would never come and the rows would wait forever
                event = {"type": "log", "message": raw.decode("utf-8", "replace").strip()[:500],
                         "reason": getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"}
            self._post(event)
        code = self.proc.wait()
        self._post({"type": "exit", "returncode": code, "log_tail": tail(self.log_path, start=self.log_start)})

    def send(self, op: str, **fields) -> bool:
        """Write one request (checked against the contract); False when the backend is gone (its exit event
        follows)."""
        data = contract.encode(contract.request(op, **fields))
        with self._lock:
            if not self.alive or self.proc.stdin is None or self.proc.stdin.closed:
                return False
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def submit(self, job_id: str, job_dir: str, image: str | None = None, audio: str | None = None,
               params: dict | None = None, client: dict | None = None) -> bool:
        return self.send("submit", id=job_id, job_dir=job_dir, image=image, audio=audio, params=params,
                         client=client)

    def cancel(self, job_id: str) -> bool:
        return self.send("cancel", id=job_id)

    def stop(self, timeout: float = 5.0):
        """Ask politely (shutdown checkpoints the running job so it can resume), then kill."""
        if not self.alive:
            return
        self.send("shutdown")
        with self._lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
