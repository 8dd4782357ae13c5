"""The worker's side of file transfer through the protocol itself (docs/remote.md "Files"): `put` stores a job
input chunk by chunk, `fetch` reads any file of a job folder chunk by chunk, `files` lists a job folder.

Everything goes through the jobs root (jobs_root.py), so a remote worker writes only `JOB/inputs/<name>` under
its root. An upload grows a temporary file beside its target (`.<name>.upload.partial`); the target appears,
atomically, only when the whole file arrived and its sha256 matched, and an interrupted upload continues from
the bytes already held. Answers are events (or one `error` naming the op and the path), written by the reader
thread in the order the requests came.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re

from .. import contract, files
from ..contract import FRAME_PATTERN, JOB_FILES, TRANSFER_CHUNK_BYTES, ContractError
from ..errors import StableAvatarError, UserInputError
from .jobdir import JobDir, JobLock
from .jobs_root import JobsRoot

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASHES: dict[tuple, str] = {}  # (device, inode, size, mtime) -> sha256: a file fetched in chunks is hashed once


def answer(root: JobsRoot | None, cmd: dict) -> dict:
    """The event answering a put, fetch or files request (an `error` event when it cannot be done)."""
    op = cmd["op"]
    try:
        if root is None:
            raise ContractError(f"{op}: this worker has no jobs root", category="bad_request", op=op,
                                hint="file transfer needs a worker started with serve --stdio --jobs-root DIR")
        return {"put": _put, "fetch": _fetch, "files": _files}[op](root, cmd)
    except (ContractError, StableAvatarError) as exc:
        category, message, hint = exc.category, exc.message, exc.hint
    except OSError as exc:
        category, message, hint = "bad_input", f"{op} {cmd.get('path', '')}: {exc.strerror or exc}", \
            "check the disk and the permissions of the jobs root on the worker's machine"
    extra = {"path": cmd["path"]} if isinstance(cmd.get("path"), str) else {}
    return contract.error_event(category, message, hint=hint, op=op, **extra)


def _put(root: JobsRoot, cmd: dict) -> dict:
    job = root.job_dir(cmd["job_dir"], "put")
    name = cmd["path"]
    target = root.file_in(job, name, "put")
    if target.parent != job / JOB_FILES["inputs"]:
        raise ContractError(f"put: path {name!r} must be {JOB_FILES['inputs']}/<file name>", category="bad_request",
                            op="put", hint="only a job's inputs are uploaded")
    size, sha = cmd["size"], cmd["sha256"].lower()
    if size < 0 or not _SHA256.fullmatch(sha):
        raise ContractError("put: size must be >= 0 and sha256 64 hex digits", category="bad_request", op="put")
    stored = lambda have, complete: contract.event("stored", job_dir=str(job), path=name, have=have,  # noqa: E731
                                                   size=size, complete=complete)
    if target.is_file() and target.stat().st_size == size and files.sha256(target) == sha:
        return stored(size, True)  # already here: a resumed client asks again
    lock_path = JobDir(job).lock_path
    # busy while a job runs there (its inputs stay as they are); a folder no job has used yet gets no lock file,
    # so that before its submit it holds only what this upload wrote (service/jobdir.py check_ours)
    with JobLock(lock_path) if lock_path.exists() else contextlib.nullcontext():
        partial = target.with_name(f".{target.name}.upload{files.PARTIAL}")
        have = partial.stat().st_size if partial.is_file() else 0
        data = cmd.get("data")
        if data is None and size:
            return stored(have, False)
        raw = _b64(data or "", "put")
        offset = cmd.get("offset", 0)
        if not 0 <= offset <= have or offset + len(raw) > size:
            raise ContractError(f"put: {len(raw)} bytes at offset {offset} do not continue the {have} bytes held of "
                                f"{name} ({size} in all)", category="bad_request", op="put",
                                hint="ask with a put without data and continue from `have`")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "r+b" if partial.exists() else "wb") as f:
            f.truncate(offset)
            f.seek(offset)
            f.write(raw)
            have = offset + len(raw)
            if have < size:
                return stored(have, False)
            f.flush()
            os.fsync(f.fileno())
        got = files.sha256(partial)
        if got != sha:
            partial.unlink()
            raise UserInputError(f"put: {name} arrived with sha256 {got[:12]}…, not the announced {sha[:12]}…; the "
                                 "partial upload was discarded", hint="send the file again from byte 0")
        os.replace(partial, target)
        files.fsync_dir(target.parent)
    return stored(size, True)


def _fetch(root: JobsRoot, cmd: dict) -> dict:
    job = root.job_dir(cmd["job_dir"], "fetch")
    name = cmd["path"]
    path = root.file_in(job, name, "fetch")
    if name == JOB_FILES["lock"]:
        raise ContractError("fetch: the lock is not a job file", category="bad_request", op="fetch")
    offset = cmd.get("offset", 0)
    if offset < 0:
        raise ContractError("fetch: offset must be >= 0", category="bad_request", op="fetch")
    try:
        f = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):
        raise UserInputError(f"fetch: {job.name}/{name} does not exist", hint="list the job folder with `files`") \
            from None
    with f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        sha = _HASHES.get(key)
        if sha is None:  # from this open file: a replacement of the name meanwhile cannot mix two versions
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
            sha = _HASHES[key] = h.hexdigest()
            if len(_HASHES) > 4096:
                _HASHES.pop(next(iter(_HASHES)))
        f.seek(offset)
        data = f.read(TRANSFER_CHUNK_BYTES)
    return contract.event("chunk", job_dir=str(job), path=name, offset=offset, size=st.st_size, sha256=sha,
                          data=base64.b64encode(data).decode("ascii"), eof=offset + len(data) >= st.st_size)


def _files(root: JobsRoot, cmd: dict) -> dict:
    job = root.job_dir(cmd["job_dir"], "files")
    if not job.is_dir():
        raise UserInputError(f"files: there is no job folder {job.name} under {root}",
                             hint="submit the job again with its image and audio")
    frames, frames_dir = [], job / JOB_FILES["frames"]
    while (p := frames_dir / FRAME_PATTERN.format(len(frames))).is_file():
        frames.append(p.stat().st_size)
    other = {}
    for d in (job, job / JOB_FILES["inputs"]):
        for p in sorted(d.iterdir()) if d.is_dir() else ():
            if p.is_file() and not files.is_partial(p.name) and p.name != JOB_FILES["lock"]:
                other[p.relative_to(job).as_posix()] = p.stat().st_size
    step = JobDir(job).checkpoint_meta().get("step")
    return contract.event("files", job_dir=str(job), frames=frames, other=other,
                          finished=(job / JOB_FILES["manifest"]).is_file(),
                          checkpoint_step=int(step) if str(step).isdigit() else None)


def _b64(text: str, op: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ContractError(f"{op}: data is not base64", category="bad_request", op=op) from None
    if len(raw) > TRANSFER_CHUNK_BYTES:
        raise ContractError(f"{op}: a chunk holds at most {TRANSFER_CHUNK_BYTES} bytes, not {len(raw)}",
                            category="bad_request", op=op)
    return raw
