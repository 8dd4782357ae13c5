"""Error types with a one-line message and an actionable hint, and the one mapping from any exception to what
the user is told (`describe`), used by every entry point: the CLI, `resume` and the worker.

Every failure a user can cause (bad files, bad flags, missing weights) is raised as a StableAvatarError or, for
values that break the contract, a contract.ContractError: the CLI prints `error: <message>` plus `hint: <hint>`
and exits with the category's code; the worker turns it into an `error` event with the same category. Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import sys
from dataclasses import dataclass

from .contract import CATEGORIES, ContractError


class StableAvatarError(Exception):
    category = "internal"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserInputError(StableAvatarError):
    """A file or parameter the user supplied cannot be used."""
    category = "bad_input"


class CheckpointError(StableAvatarError):
    """The checkpoint folder is missing, incomplete or not the expected model."""
    category = "missing_weights"


class OutOfMemoryError(StableAvatarError):
    category = "out_of_memory"


class CancelledError(StableAvatarError):
    category = "cancelled"


class BusyError(StableAvatarError):
    category = "busy"


class TooLargeError(StableAvatarError):
    """Over a documented size limit; the message names it."""
    category = "too_large"


class FilesystemError(StableAvatarError):
    """A path cannot be used: read-only, permission, not a folder, a file in the way, a folder not ours."""
    category = "filesystem"


class DiskFullError(StableAvatarError):
    category = "disk_full"


# errno -> (error type, what happened, what to do); every other OSError stays a bug (its traceback is kept)
_OS_ERRORS = {
    errno.EROFS: (FilesystemError, "read-only file system", "choose a folder on a writable drive"),
    errno.EACCES: (FilesystemError, "permission denied", "choose a folder you may write to, or fix its permissions"),
    errno.EPERM: (FilesystemError, "operation not permitted", "choose a folder you may write to, or fix its "
                  "permissions"),
    errno.ENOSPC: (DiskFullError, "no space left on the drive", "free disk space (or choose another drive) and run "
                   "again: what was written so far is kept, and a job folder resumes from its last checkpoint"),
    errno.EDQUOT: (DiskFullError, "disk quota exceeded", "free space within your quota and run again: what was "
                   "written so far is kept, and a job folder resumes from its last checkpoint"),
    errno.EFBIG: (DiskFullError, "file too large for this drive or limit", "choose a drive without a file size "
                  "limit (FAT32 holds at most 4 GB per file)"),
    errno.ENOTDIR: (FilesystemError, "a part of the path is a file, not a folder", "choose a folder path"),
    errno.EISDIR: (FilesystemError, "is a folder, where a file was expected", "name a file, not a folder"),
    errno.EEXIST: (FilesystemError, "already exists", "choose a new name"),
    errno.ENOENT: (FilesystemError, "no such file or folder", "check the path; a drive may have been disconnected"),
    errno.ENAMETOOLONG: (FilesystemError, "the name is too long", "choose a shorter path"),
    errno.ELOOP: (FilesystemError, "too many symbolic links", "check the path's links"),
    errno.EIO: (FilesystemError, "input/output error", "the drive may be failing or disconnected; check it and run "
                "again"),
    errno.ENXIO: (FilesystemError, "no such device", "reconnect the drive"),
    errno.EMFILE: (FilesystemError, "too many open files", "raise the open-file limit (ulimit -n) and run again"),
}


def os_error(exc: OSError, doing: str | None = None) -> StableAvatarError | None:
    """The user-facing error for a filesystem OSError (None when it is not one we can explain)."""
    known = _OS_ERRORS.get(exc.errno)
    if known is None:
        return None
    kind, what, hint = known
    path = exc.filename if exc.filename not in (None, "") else None
    subject = doing or (f"cannot use {path}" if path is not None else "a file operation failed")
    return kind(f"{subject}: {what}", hint=hint)


@dataclass(frozen=True)
class Failure:
    category: str
    message: str     # one line
    hint: str | None
    bug: bool        # not the user's doing: keep the traceback

    @property
    def exit_code(self) -> int:
        return CATEGORIES[self.category].exit_code


def describe(exc: BaseException) -> Failure:
    """What to tell the user about `exc`: its category (whose fault), one line, and what to do."""
    from . import oom

    if isinstance(exc, (StableAvatarError, ContractError)):
        return Failure(exc.category, _one_line(exc.message), exc.hint, False)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("cancelled", "interrupted", None, False)
    if oom.is_oom(exc):
        return Failure("out_of_memory", _one_line(f"out of memory: {exc}"), oom.GENERIC_HINT, False)
    known = os_error(exc) if isinstance(exc, OSError) else None
    if known is not None:
        return Failure(known.category, _one_line(known.message), known.hint, False)
    return Failure("internal", _one_line(f"{type(exc).__name__}: {exc}"), "this is a bug; please report it with "
                   "the traceback", True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_failure(failure: Failure, stream=None) -> int:
    """The CLI's `error:` / `hint:` lines; returns the exit code."""
    stream = stream or sys.stderr
    print(f"error: {failure.message}", file=stream)
    if failure.hint:
        print(f"hint: {failure.hint}", file=stream)
    return failure.exit_code
