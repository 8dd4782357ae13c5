"""The backend subprocess and its JSON-lines pipe (docs/protocol.md), without bpy.

One reader thread turns stdout lines into dicts on a `queue.Queue`; the main thread (Blender's timer tick)
drains it. When the process ends the reader posts one `{"type": "exit", ...}` event with the return code
and the tail of the log, so a killed backend always surfaces as an error row.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading

PROTOCOL = 1
_generation = itertools.count(1)


def backend_command(python: str, checkpoints: str, device: str, dtype: str = "", memory_mode: str = "",
                    log_dir: str = "") -> list[str]:
    argv = [python, "-u", "-m", "stableavatar", "serve", "--stdio", "--checkpoints", checkpoints,
            "--device", device]
    if dtype:
        argv += ["--dtype", dtype]
    if memory_mode:
        argv += ["--memory-mode", memory_mode]
    if log_dir:
        argv += ["--log-dir", log_dir]
    return argv


def clean_env() -> dict:
    """Blender's own PYTHONHOME/PYTHONPATH would make the backend venv import Blender's stdlib."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class BackendClient:
    """One running `stableavatar serve --stdio`. Events land on `events` as dicts with `_client` set."""

    def __init__(self, argv: list[str], log_path: str, events: queue.Queue, cwd: str | None = None):
        self.argv = argv
        self.log_path = log_path
        self.events = events
        self.cwd = cwd
        self.generation = next(_generation)
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> "BackendClient":
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "ab")
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True  # so a kill takes the backend's helpers with it
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         cwd=self.cwd, env=clean_env(), **kwargs)
        finally:
            log.close()
        threading.Thread(target=self._read, name="stableavatar-backend-reader", daemon=True).start()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _post(self, event: dict):
        event["_client"] = self.generation
        self.events.put(event)

    def _read(self):
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                event = {"type": "log", "message": line}  # a stray print in the backend; keep it visible
            self._post(event)
        code = self.proc.wait()
        self._post({"type": "exit", "returncode": code, "log_tail": tail(self.log_path)})

    def send(self, op: str, **fields) -> bool:
        """Write one request; False when the backend is gone (its exit event follows)."""
        msg = {"protocol": PROTOCOL, "op": op, **fields}
        data = (json.dumps(msg) + "\n").encode("utf-8")
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
               params: dict | None = None) -> bool:
        fields = {"id": job_id, "job_dir": job_dir}
        if image:
            fields["image"] = image
        if audio:
            fields["audio"] = audio
        if params:
            fields["params"] = params
        return self.send("submit", **fields)

    def cancel(self, job_id: str) -> bool:
        return self.send("cancel", id=job_id)

    def kill(self):
        """Hard stop of the whole process group (cancel that did not answer, unregister)."""
        if not self.alive:
            return
        try:
            if sys.platform == "win32":
                self.proc.kill()
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

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
