"""Which backend the preferences describe, and where its Python, weights and log are."""
from __future__ import annotations

import os

import bpy

from ..blender_addon import install, locations
from ..blender_addon.client import BackendClient, backend_command
from ..preferences import ADDON_ID, prefs


class BackendConfigError(Exception):
    pass


def user_dir(*parts: str, create: bool = True) -> str:
    return bpy.utils.extension_path_user(ADDON_ID, path=os.path.join(*parts) if parts else "", create=create)


def managed_python() -> str:
    """The Python of the environment Install Backend made (in the data folder, so it survives the extension)."""
    return install.current_python(locations.backend_dir())


def checkpoints_path() -> str:
    p = prefs().checkpoints
    return os.path.normpath(bpy.path.abspath(p)) if p else locations.checkpoints_dir()


def backend_python() -> str:
    p = prefs().python
    return bpy.path.abspath(p) if p else managed_python()


def log_path() -> str:
    return os.path.join(user_dir("logs"), "backend.log")


def backend_from_prefs(events):
    """(argv, start) of the backend the preferences describe: a local subprocess, or a remote one over SSH
    (blender_addon/remote.py: the same interface, with file transfer and reconnects behind it)."""
    p = prefs()
    if p.remote.backend == "REMOTE":
        config = p.remote.config()
        problems = config.problems()
        if problems:
            raise BackendConfigError("; ".join(problems) + ": set the remote backend in Preferences > Add-ons > "
                                     "StableAvatar")
        backend = config.backend(p.engine_settings(""), log_path(), events)
        return backend.argv, backend.start
    argv = _argv_from_prefs()
    return argv, lambda: BackendClient(argv, log_path(), events, cwd=user_dir()).start()


def _argv_from_prefs() -> list[str]:
    p = prefs()
    python = backend_python()
    if not os.path.isfile(python):
        raise BackendConfigError(f"backend Python not found: {python!r}. Set Preferences > Add-ons > "
                                 "StableAvatar > Backend Python, or press Install Backend")
    checkpoints = checkpoints_path()
    if not os.path.isdir(checkpoints):
        raise BackendConfigError(f"checkpoints folder not found: {checkpoints!r}. Set it in the preferences, "
                                 "or press Download Weights")
    argv = backend_command(python, p.engine_settings(checkpoints), user_dir("logs"))
    return argv + (["--idle-release", str(int(p.idle_release_min * 60))] if p.idle_release_min > 0 else [])
