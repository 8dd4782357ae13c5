"""Why a backend did not start, told as one line and a hint: a Backend Python that cannot be run, a Python
without the backend installed, a backend that crashed while importing. No bpy.
"""
from __future__ import annotations

import errno
import re

SETUP_HINT = ("set Preferences > Add-ons > StableAvatar > Backend Python to the python of a venv with the backend "
              "installed, or press Install Backend; then press Retry")
# the last line of a Python traceback: "ModuleNotFoundError: No module named 'torch'", "OSError: libcuda..."
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$")


class BackendStartError(Exception):
    """The backend process could not be started at all."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def start_error(python: str, exc: OSError) -> BackendStartError:
    """What to tell about `Popen([python, ...])` raising `exc`."""
    if isinstance(exc, PermissionError) or exc.errno == errno.EACCES:
        return BackendStartError(f"the Backend Python {python} cannot be run: permission denied (not executable)",
                                 "make it executable (chmod +x) or " + SETUP_HINT)
    if exc.errno == errno.ENOEXEC:
        return BackendStartError(f"the Backend Python {python} is not a program this system can run",
                                 SETUP_HINT)
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return BackendStartError(f"the Backend Python {python} (or the interpreter its first line names) does not "
                                 "exist", SETUP_HINT)
    return BackendStartError(f"cannot start the Backend Python {python}: {exc.strerror or exc}", SETUP_HINT)


def exited_before_ready(code, log_tail: str) -> tuple[str, str]:
    """(message, hint) for a backend that exited with `code` before it said `ready`, from its log."""
    lines = [line.strip() for line in (log_tail or "").splitlines() if line.strip()]
    if any(re.search(r"No module named '?stableavatar\b", line) for line in lines):
        return "the Backend Python has no StableAvatar backend installed (no module named stableavatar)", SETUP_HINT
    last = next((m for m in map(_EXCEPTION_LINE.match, reversed(lines)) if m), None)
    if last is not None:
        what = f"{last.group(1)}: {last.group(2)}"[:300]
        return (f"the backend crashed while starting ({what})",
                "reinstall the backend (Install Backend) or repair its venv; the log has the full traceback; "
                "then press Retry")
    return (f"the backend exited (code {code}) before it was ready",
            "check that Backend Python is the python of the backend's venv (the log may say more); then press Retry")
