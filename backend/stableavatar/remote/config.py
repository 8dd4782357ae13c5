"""What a remote backend is, as the add-on's preferences and `stableavatar remote` flags both describe it."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from ..contract import EngineSettings
from .ssh import SshTarget

DEFAULT_COMMAND = "stableavatar"
DEFAULT_JOBS_ROOT = "stableavatar-jobs"  # relative: in the remote user's home folder


@dataclass(frozen=True)
class PathMap:
    """Shared storage: the same folder seen as `local` here and `remote` there. Paths under it are sent as they
    are (translated) and nothing is copied."""
    local: str
    remote: str

    def to_remote(self, path: str) -> str | None:
        rest = _under(path.replace("\\", "/"), self.local.replace("\\", "/"))
        return None if rest is None else posixpath.join(self.remote, rest) if rest else self.remote

    def to_local(self, path: str) -> str | None:
        rest = _under(path, self.remote)
        if rest is None:
            return None
        sep = "\\" if "\\" in self.local else "/"
        return self.local.rstrip("/\\") + (sep + rest.replace("/", sep) if rest else "")


def _under(path: str, prefix: str) -> str | None:
    prefix = prefix.rstrip("/")
    if path == prefix:
        return ""
    return path[len(prefix) + 1:] if prefix and path.startswith(prefix + "/") else None


@dataclass(frozen=True)
class RemoteConfig:
    host: str
    user: str = ""
    port: int = 22
    identity: str = ""
    known_hosts: str = ""
    host_keys: str = "yes"
    command: str = DEFAULT_COMMAND       # the remote `stableavatar` (remote shell text)
    checkpoints: str = ""                # on the remote machine (empty: the backend's default there)
    jobs_root: str = ""                  # on the remote machine (empty: the mapped folder, else DEFAULT_JOBS_ROOT)
    local_prefix: str = ""               # shared storage: this folder here ...
    remote_prefix: str = ""              # ... is this folder there
    reconnect_s: float = 300.0           # how long a dropped connection is retried before the job fails

    def target(self) -> SshTarget:
        return SshTarget(host=self.host.strip(), user=self.user.strip(), port=int(self.port),
                         identity=self.identity, known_hosts=self.known_hosts, host_keys=self.host_keys)

    def pathmap(self) -> PathMap | None:
        if self.local_prefix and self.remote_prefix:
            return PathMap(self.local_prefix, self.remote_prefix)
        return None

    def root(self) -> str:
        return self.jobs_root or (self.remote_prefix if self.pathmap() else DEFAULT_JOBS_ROOT)

    def serve_args(self, engine: EngineSettings) -> list[str]:
        """`serve --stdio` confined to the jobs root, with the engine settings (the checkpoints: the remote's)."""
        engine = replace(engine, checkpoints=self.checkpoints or None).validate()
        return ["serve", "--stdio", "--jobs-root", self.root(), *engine.argv()]

    def problems(self) -> list[str]:
        out = self.target().problems()
        if not self.command.strip():
            out.append("the remote backend command is empty")
        if bool(self.local_prefix) != bool(self.remote_prefix):
            out.append("a shared-storage mapping needs both the local and the remote folder")
        return out

    def backend(self, engine: EngineSettings, log_path: str, events):
        """A RemoteBackend for these settings (not started)."""
        from .backend import RemoteBackend
        return RemoteBackend(self, engine, log_path, events)
