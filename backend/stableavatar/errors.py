"""Error types with a one-line message and an actionable hint.

Every failure a user can cause (bad files, bad flags, missing weights) is raised as a StableAvatarError:
the CLI prints `error: <message>` plus `hint: <hint>` and exits non-zero; the service turns it into an
`error` event with the same category. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


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
