"""Durable files: every file the backend writes goes through here (atomic replace, fsync, the user's umask),
and every file it hashes (sha256, cached for the 20 GB of weights)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

PARTIAL = ".partial"  # in every temporary name, which also starts with "."; never mistaken for a result


def _umask() -> int:
    mask = os.umask(0o022)  # read it (there is no getter); done once at import, before any thread starts
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def fsync_dir(d: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open directories; NTFS journals the rename
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; on success fsync it and rename it into place (then fsync the
    folder), on failure delete it: a crash leaves the old file or the new one, never a torn one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f"{PARTIAL}{final.suffix}", dir=final.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _MODE)  # mkstemp makes 0600; results follow the user's umask like any other file
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data) -> None:
    write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def require_file(path: str | os.PathLike, what: str, hint: str) -> Path:
    """`path` if it is a readable regular file; else the user is told what it is instead (one line + `hint`).
    Devices, pipes and folders are refused before anything opens them (reading /dev/zero never ends)."""
    from .errors import FilesystemError, UserInputError

    p = Path(path).expanduser()
    if p.is_file():
        if not os.access(p, os.R_OK):
            raise FilesystemError(f"{what} file {p} is not readable (permission denied)",
                                  hint="check the file's permissions")
        return p
    if p.is_dir():
        raise UserInputError(f"{what} {p} is a folder, not a file", hint=hint)
    if p.exists():
        raise UserInputError(f"{what} {p} is not a regular file (a device, pipe or socket)", hint=hint)
    raise UserInputError(f"{what} file {p} does not exist", hint=hint)


def is_partial(name: str) -> bool:
    """A temporary file of `atomic_path` (left behind only by a kill)."""
    return name.startswith(".") and PARTIAL in name


def sha256(path: str | os.PathLike, cache_file: Path | None = None) -> str:
    """sha256 of a file; with `cache_file`, cached by (path, size, mtime), since the real weights are ~20 GB."""
    path = Path(path)
    key = None
    cache = {}
    if cache_file is not None:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        with contextlib.suppress(OSError, ValueError):
            cache = json.loads(cache_file.read_text())
        if key in cache:
            return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if key is not None:
        cache[key] = digest
        with contextlib.suppress(OSError):  # a read-only home only costs a re-hash next time
            write_json(cache_file, cache)
    return digest


def weights_hash_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stableavatar" / "sha256.json"
