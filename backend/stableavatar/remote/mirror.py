"""The client's side of file transfer (the worker's side: service/transfer.py): inputs up, results down.

Every file is verified by its sha256 and appears under its final name only then (atomically: a partial file
beside it, fsync, rename), and an interrupted transfer continues from the bytes already held: an upload from
what the worker reports (`stored.have`), a download from the local partial file. `send(op, **fields)` writes a
request; `reply()` returns the next transfer answer, in request order (or raises). Downloads keep a few requests
in flight, so a slow link's round trips overlap.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Callable

from .. import contract
from ..contract import FRAME_PATTERN, JOB_FILES, TRANSFER_CHUNK_BYTES

WINDOW = 8           # fetch requests in flight
RESTARTS = 5         # a file replaced this often while it is fetched is refused
Send = Callable[..., None]
Reply = Callable[[], dict]


class LinkLost(Exception):
    """The connection ended (or stopped answering) in the middle of a transfer: it resumes after a reconnect."""


class TransferError(Exception):
    """A transfer failed on the other side (the worker's `error` event is in `event`)."""

    def __init__(self, event: dict):
        super().__init__(event.get("message", "transfer failed"))
        self.event = event


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def partial_of(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}.download.partial")


def finalize(partial: str, final: str) -> None:
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    if os.name == "posix":
        fd = os.open(os.path.dirname(final) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str, data: dict) -> None:
    tmp = partial_of(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    finalize(tmp, path)


def local_frames(frames_dir: str) -> int:
    """How many frames 000000.png, 000001.png ... are already here (each arrived whole and verified)."""
    n = 0
    while os.path.isfile(os.path.join(frames_dir, FRAME_PATTERN.format(n))):
        n += 1
    return n


def frame_name(i: int) -> str:
    return f"{JOB_FILES['frames']}/{FRAME_PATTERN.format(i)}"


def upload(send: Send, reply: Reply, job_dir: str, local: str, name: str, stop: Callable[[], bool]) -> int:
    """Put `local` as `name` (inputs/...) into the remote job folder; returns the bytes sent."""
    size, sha = os.path.getsize(local), sha256_file(local)
    send("put", job_dir=job_dir, path=name, size=size, sha256=sha)
    answer = _expect(reply(), "stored")
    have, sent = answer["have"], 0
    with open(local, "rb") as f:
        while not answer["complete"]:
            if stop():
                return sent
            f.seek(have)
            data = f.read(TRANSFER_CHUNK_BYTES)
            send("put", job_dir=job_dir, path=name, size=size, sha256=sha, offset=have,
                 data=base64.b64encode(data).decode("ascii"))
            answer = _expect(reply(), "stored")
            sent += len(data)
            have = answer["have"]
    return sent


def download(send: Send, reply: Reply, job_dir: str, items: list[tuple[str, str]], fresh: bool = False) -> int:
    """Fetch each (remote name, local path) of the job folder; returns the bytes received. Files already
    complete locally are skipped (unless `fresh`: the preview is replaced all the time); partial ones continue
    where they stopped."""
    pending = [(n, p) for n, p in items if fresh or not os.path.isfile(p)]
    active: dict[str, dict] = {}
    order: list[str] = []  # the names of the requests in flight, oldest first (answers come in this order)
    received = 0

    def ask(name: str):
        send("fetch", job_dir=job_dir, path=name, offset=active[name]["have"])
        order.append(name)

    while pending or active:
        while pending and len(active) < WINDOW:
            name, path = pending.pop(0)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            part = partial_of(path)
            have = os.path.getsize(part) if os.path.isfile(part) else 0
            active[name] = {"path": path, "part": part, "have": have, "sha": None, "restarts": 0}
            ask(name)
        name = order.pop(0)
        st = active[name]
        ev = _expect(reply(), "chunk")
        data = base64.b64decode(ev["data"])
        if st["sha"] not in (None, ev["sha256"]) or ev["offset"] != st["have"]:
            _restart(st, ev)  # replaced meanwhile on the remote: from the start
            ask(name)
            continue
        st["sha"] = ev["sha256"]
        with open(st["part"], "r+b" if os.path.exists(st["part"]) else "wb") as f:
            f.truncate(st["have"])
            f.seek(st["have"])
            f.write(data)
        st["have"] += len(data)
        received += len(data)
        if not ev["eof"]:
            ask(name)
            continue
        if sha256_file(st["part"]) != ev["sha256"]:  # a partial file from a different version of the file
            _restart(st, ev)
            ask(name)
            continue
        finalize(st["part"], st["path"])
        del active[name]
    return received


def _restart(st: dict, ev: dict):
    st["restarts"] += 1
    if st["restarts"] > RESTARTS:
        raise TransferError(contract.error_event("bad_input", f"{ev['path']} kept changing while it was fetched",
                                                 hint="fetch it again once the job is done", path=ev["path"]))
    st["have"], st["sha"] = 0, None
    with open(st["part"], "wb"):
        pass


def _expect(event: dict, kind: str) -> dict:
    if event.get("type") == "error":
        raise TransferError(event)
    if event.get("type") != kind:  # cannot happen with an in-order worker; a clear failure if it does
        raise TransferError(contract.error_event("internal", f"expected a {kind} answer, got {event.get('type')}"))
    return event
