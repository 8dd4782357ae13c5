"""Error types with a one-line message and an actionable hint, and the one mapping from any exception to what
the user is told (`describe`), used by every entry point: the CLI, `resume` and the worker.

Every failure a user can cause (bad files, bad flags, missing weights) is raised as a StableAvatarError or, for
values that break the contract, a contract.ContractError: the CLI prints `error: <message>` plus `hint: <hint>`
and exits with the category's code; the worker turns it into an `error` event with the same category. Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

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
