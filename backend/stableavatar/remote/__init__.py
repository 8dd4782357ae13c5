"""The client of a backend on another machine, over the system OpenSSH client (docs/remote.md). Standard library
and the contract only: the add-on loads this same package (`blender_addon/remote.py`), and `stableavatar remote`
uses it from the shell, so both drive one implementation.

ssh.py: the ssh command line and what its failures mean; link.py: one connection speaking JSON lines;
mirror.py: inputs up and results down, verified and resumable; config.py: what a remote backend is;
backend.py: RemoteBackend, the local backend's interface with the connection and reconnects behind it;
jobs.py: what each job's events do on this side (transfers, local paths).
"""
from __future__ import annotations

from .backend import RemoteBackend  # noqa: F401
from .jobs import remote_name  # noqa: F401
from .config import DEFAULT_COMMAND, DEFAULT_JOBS_ROOT, PathMap, RemoteConfig  # noqa: F401
from .ssh import HOST_KEY_POLICIES, Failure, SshTarget, classify  # noqa: F401
