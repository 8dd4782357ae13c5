"""Where the extension keeps what must outlive it. No bpy.

Blender deletes an extension's own folder and its user folder (`extension_path_user`) when the extension is
uninstalled, so nothing a user would miss lives there: job folders go beside the saved .blend (relative, so
the project moves as a whole), or, for a file not saved yet, into this machine's data folder; the weights and
the backend environment also live in the data folder, shared by every Blender version and every
(re)installation of the extension.
"""
from __future__ import annotations

import os
import sys

HOME_ENV = "STABLEAVATAR_HOME"     # overrides the data folder (tests, shared disks)
JOBS_BESIDE_BLEND = "//stableavatar_jobs"  # the default jobs folder of a saved .blend
UNSAVED = "unsaved"                # data/jobs/unsaved/<job id>: jobs of files not saved yet


def data_home(env=None, platform: str = sys.platform) -> str:
    """This machine's StableAvatar data folder (weights, backend environment, jobs of unsaved files)."""
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return os.path.abspath(os.path.expanduser(env[HOME_ENV]))
    home = os.path.expanduser("~")
    if platform == "win32":
        return os.path.join(env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local"), "StableAvatar")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "StableAvatar")
    return os.path.join(env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "stableavatar")


def checkpoints_dir(env=None) -> str:
    """Where Download Weights puts the weights when no Checkpoints folder is set."""
    return os.path.join(data_home(env), "checkpoints")


def backend_dir(env=None) -> str:
    """The managed backend: envs/<stamp>/ (one per install), `current` (which one is in use), tools/, logs."""
    return os.path.join(data_home(env), "backend")


def unsaved_jobs_dir(env=None) -> str:
    """Job folders of .blend files that were never saved; moved beside the file when it is saved."""
    return os.path.join(data_home(env), "jobs", UNSAVED)


def within(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies inside it (both made absolute, symlinks resolved)."""
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)
