"""Whose files are in an output folder: the backend writes only into folders it created or that carry its own
record, and deletes or replaces only files it wrote.

A folder is ours when it is empty, or holds our record `stableavatar-files.json` (the files a `generate` wrote
or is about to write, written before them), or our job record `job.json` (a job folder: its layout is ours). Our
temporary files (`files.is_partial`) are ours wherever they are. Anything else is the user's: a folder holding
such files is refused unless the caller allows writing beside them, and even then none of them is replaced.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .contract import FRAME_PATTERN, JOB_FILES
from .errors import UserInputError

RECORD = JOB_FILES["owned"]
FORMAT = "stableavatar-files-1"
FRAMES = JOB_FILES["frames"]
INPUTS = JOB_FILES["inputs"]
# what a job folder holds besides frames/ and inputs/ (docs/protocol.md "Job directory")
JOB_LAYOUT = frozenset(v for k, v in JOB_FILES.items() if k not in ("frames", "inputs"))
SHOWN = 3  # foreign names quoted in a message


def frame_name(index: int) -> str:
    return f"{FRAMES}/{FRAME_PATTERN.format(index)}"


def is_frame_name(rel: str) -> bool:
    folder, _, name = rel.partition("/")
    n = len(FRAME_PATTERN.format(0))
    return folder == FRAMES and len(name) == n and name.endswith(".png") and name[:-4].isdigit()


@dataclass
class Folder:
    path: Path
    listed: set[str] = field(default_factory=set)  # relative posix paths our record names
    job: bool = False                                # holds our job.json
    recorded: bool = False                           # our record exists (else RECORD is ours only while absent)

    def owns(self, rel: str) -> bool:
        """Whether the file at `rel` (relative, posix) is ours to replace or delete."""
        if rel == RECORD:
            return self.recorded or not _exists(self.path / RECORD)
        if rel in self.listed or files.is_partial(rel.rsplit("/", 1)[-1]):
            return True
        if self.job and (rel in JOB_LAYOUT or is_frame_name(rel) or rel.startswith(INPUTS + "/")):
            return True
        return False

    def foreign(self, allowed=(), limit: int = SHOWN + 1) -> list[str]:
        """Up to `limit` files (relative) in the folder that are not ours and not in `allowed`; symbolic links
        count as foreign unless our record names them (writing through one would land outside the folder)."""
        found: list[str] = []
        if not self.path.is_dir():
            return found
        allowed = set(allowed)
        for top, dirs, names in os.walk(self.path):
            base = Path(top).relative_to(self.path).as_posix()
            base = "" if base == "." else base + "/"
            for d in list(dirs):
                if os.path.islink(os.path.join(top, d)):
                    dirs.remove(d)
                    names.append(d)
            for n in sorted(names):
                rel = base + n
                if rel not in allowed and not self.owns(rel):
                    found.append(rel)
                    if len(found) >= limit:
                        return found
        return found


def inspect(path: str | os.PathLike) -> Folder:
    """What of `path` is ours (reads our records; writes nothing)."""
    path = Path(path)
    folder = Folder(path)
    record = _read_json(path / RECORD)
    if isinstance(record, dict) and record.get("format") == FORMAT and isinstance(record.get("files"), list):
        folder.listed = {f for f in record["files"] if isinstance(f, str)}
        folder.recorded = True
    job = _read_json(path / JOB_FILES["request"])
    folder.job = isinstance(job, dict) and {"version", "image", "audio", "params"} <= set(job)
    if not folder.listed and not folder.job:
        manifest = _read_json(path / JOB_FILES["manifest"])
        if isinstance(manifest, dict) and "stableavatar_backend" in manifest:  # a result written before records
            folder.listed = {JOB_FILES[k] for k in ("manifest", "video", "latents")}
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                count = int(manifest.get("video", {}).get("frames", 0))
                folder.listed |= {frame_name(i) for i in range(min(count, 10**6))}
    return folder


def describe_foreign(found: list[str]) -> str:
    shown = ", ".join(found[:SHOWN])
    return shown + (" and more" if len(found) > SHOWN else "")


def refuse_foreign(path: Path, found: list[str], what: str, hint: str) -> None:
    if found:
        raise UserInputError(f"{what} {path} holds files stableavatar did not write ({describe_foreign(found)})",
                             hint=hint)


def claim(path: str | os.PathLike, names) -> Folder:
    """Add `names` (relative posix paths) to the folder's record before they are written. Refuses a name whose
    file exists and is not ours: that file is never replaced."""
    path = Path(path)
    folder = check_claim(path, names)
    names = set(names)
    if not all(folder.owns(n) for n in names) or not folder.recorded and not folder.job:
        folder.listed |= names
        folder.recorded = True
        files.write_json(path / RECORD, {"format": FORMAT, "files": sorted(folder.listed)})
    return folder


def check_claim(path: Path, names) -> Folder:
    """What `claim` refuses, without writing anything: a name whose file is not ours, a sub-folder that links
    elsewhere. Returns the folder as inspected."""
    folder = inspect(path)
    links = sorted({n.rsplit("/", 1)[0] for n in names if "/" in n and (path / n).parent.is_symlink()})
    if links:
        raise UserInputError(f"{path}: {', '.join(links)} is a link to another folder; stableavatar writes only "
                             "into folders of its own", hint="choose an empty or new folder (it is created)")
    taken = sorted(n for n in names if _exists(path / n) and not folder.owns(n))
    if taken:
        raise UserInputError(f"{path} holds files of the same names that stableavatar did not write "
                             f"({describe_foreign(taken)}); it never replaces a file it did not write",
                             hint="choose an empty or new folder (it is created), or move those files away")
    return folder


def remove(path: str | os.PathLike, names) -> int:
    """Delete those of `names` that exist and are ours (nothing else, no folders); returns how many."""
    path = Path(path)
    folder = inspect(path)
    gone = 0
    for rel in sorted(set(names)):
        p = path / rel
        if folder.owns(rel) and (p.is_file() or p.is_symlink()):
            p.unlink()
            gone += 1
    return gone


def sweep_partials(path: str | os.PathLike) -> int:
    """Delete our temporary files left by a kill (in the folder, frames/ and inputs/); returns how many."""
    path = Path(path)
    gone = 0
    for d in (path, path / FRAMES, path / INPUTS):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(d):
                if files.is_partial(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    gone += 1
    return gone


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _read_json(p: Path):
    try:
        with open(p, "rb") as f:
            return json.loads(f.read(1 << 22))
    except (OSError, ValueError):
        return None
