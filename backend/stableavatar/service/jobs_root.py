"""A worker's jobs root (`serve --jobs-root DIR`): the one folder a remote worker reads and writes job files in.

A remote client names paths on a machine it does not own, so every path a request names (a submit's job_dir,
image and audio; a put, fetch or files' job folder and file) is resolved here, symbolic links included, and a
path that ends up outside the root is refused with one clear line. Relative paths are taken relative to the root,
so a client does not need to know where the root is.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..contract import ContractError


class JobsRoot:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)

    def inside(self, name: str, what: str, op: str, job_id: str | None = None, base: Path | None = None) -> Path:
        """`name` resolved (relative to `base`, default the root); ContractError when it leaves `base`."""
        base = base or self.path
        p = Path(name).expanduser()
        resolved = (p if p.is_absolute() else base / p).resolve()
        if resolved != base and base not in resolved.parents:
            where = "this worker's jobs root" if base == self.path else "its job folder"
            raise ContractError(f"{op}: {what} {name} is outside {where} {base}", category="bad_request", op=op,
                                id=job_id, hint="a remote backend reads and writes only under its jobs root (serve "
                                "--jobs-root); name a path inside it, or one relative to it")
        return resolved

    def job_dir(self, name: str, op: str, job_id: str | None = None) -> Path:
        """A job folder: strictly inside the root (the root itself is not a job)."""
        resolved = self.inside(name, "job_dir", op, job_id)
        if resolved == self.path:
            raise ContractError(f"{op}: job_dir {name} is the jobs root itself", category="bad_request", op=op,
                                id=job_id, hint="name a folder inside the jobs root, e.g. the job's id")
        return resolved

    def file_in(self, job: Path, name: str, op: str) -> Path:
        """A file named by a relative POSIX path inside `job` (no `..`, no absolute path, no hidden names)."""
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or "\\" in name or any(p in ("..", ".") or p.startswith(".")
                                                                    for p in parts):
            raise ContractError(f"{op}: path {name!r} must be a relative path inside the job folder",
                                category="bad_request", op=op, hint="e.g. frames/000000.png or inputs/audio.wav")
        return self.inside(str(job.joinpath(*parts)), "path", op, base=job)

    def confine_submit(self, cmd: dict) -> dict:
        """A submit with its paths resolved inside the root (the job folder, and image/audio when given)."""
        job_id = cmd.get("id")
        out = dict(cmd, job_dir=str(self.job_dir(cmd["job_dir"], "submit", job_id)))
        for key in ("image", "audio"):
            if isinstance(cmd.get(key), str):
                out[key] = str(self.inside(cmd[key], key, "submit", job_id))
        return out

    def __str__(self) -> str:
        return str(self.path)


def from_args(args) -> JobsRoot | None:
    """The root `serve --jobs-root` names (None: not confined)."""
    return JobsRoot(args.jobs_root) if getattr(args, "jobs_root", None) else None


def log_dir(args) -> str | None:
    """Where a worker logs: --log-dir, else inside its jobs root when it has one (it writes nothing elsewhere)."""
    if args.log_dir or not getattr(args, "jobs_root", None):
        return args.log_dir
    return os.path.join(os.path.expanduser(args.jobs_root), "logs")
