"""How one side starts the other (or ssh, uv, a background Blender): a clean environment, its own session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys


def clean_env() -> dict:
    """Blender's own PYTHONHOME/PYTHONPATH would make another Python import Blender's standard library."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def detached() -> dict:
    """Popen arguments for a child in its own session (process group on Windows, without a console window):
    a terminal's Ctrl+C reaches us, not it, so we stop it politely, and a kill of the group takes its helpers."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class ChildProcess:
    """`alive`, `pid` and `returncode` of the subprocess held in `self.proc` (None before it started)."""
    proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        """Hard stop of the whole process group that `detached()` gave it (its helpers go too)."""
        if not self.alive:
            return
        try:
            if sys.platform == "win32":
                self.proc.kill()
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
