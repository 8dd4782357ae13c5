"""The job directory, the unit of durability: everything needed to finish a job lives in it.

    job.json           the request: input copies, params, worker settings (written once at submit)
    inputs/            copies of the image and audio, so a job survives the caller deleting its temp files
    lock               OS lock + pid of the owning process
    state.safetensors  sampler checkpoint (written by the runner after every denoising step)
    frames/ video.mp4 manifest.json preview.jpg log traceback.txt

No torch here: the add-on and the tests use it to inspect job dirs cheaply.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

from .. import files, ownership
from ..contract import JOB_FILES, input_name
from ..errors import BusyError, FilesystemError, UserInputError

REQUEST_VERSION = 1
# what a new, different request in the folder replaces (besides the frames; only files that are ours)
RESULT_NAMES = tuple(JOB_FILES[k] for k in ("state", "video", "manifest", "latents", "preview", "traceback",
                                            "owned"))


class JobLockedError(BusyError):

    def __init__(self, path: Path, pid: int | None):
        owner = f"process {pid}" if pid else "another process"
        super().__init__(f"job directory {path} is in use by {owner}",
                         hint="wait for that job to finish or cancel it; a dead owner's lock is taken over "
                              "automatically")
        self.pid = pid


class JobLock:
    """An OS-level exclusive lock on JOB_DIR/lock. The kernel drops it when the owner dies (even kill -9),
    so a stale lock is taken over without guessing from pids; the pid inside is for messages only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # non-inheritable: ffmpeg children don't hold it
        try:
            _lock_fd(fd)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise JobLockedError(self.path.parent, pid) from None
        stale = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        self.took_over = stale if stale and stale != os.getpid() else None
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # empty = unowned; the file itself stays (unlinking a flock file races)
            _unlock_fd(fd)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self if self.held else self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 64).split()[0])
    except (OSError, ValueError, IndexError):
        return None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _LOCK_OFFSET = 1 << 20  # lock a byte past the pid so other processes can still read who owns it

    def _lock_fd(fd):
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock_fd(fd):
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_fd(fd):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd):
        fcntl.flock(fd, fcntl.LOCK_UN)


class JobDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()

    request = property(lambda self: self.path / JOB_FILES["request"])
    state = property(lambda self: self.path / JOB_FILES["state"])
    lock_path = property(lambda self: self.path / JOB_FILES["lock"])
    frames = property(lambda self: self.path / JOB_FILES["frames"])
    preview = property(lambda self: self.path / JOB_FILES["preview"])
    video = property(lambda self: self.path / JOB_FILES["video"])
    manifest = property(lambda self: self.path / JOB_FILES["manifest"])
    log = property(lambda self: self.path / JOB_FILES["log"])
    traceback = property(lambda self: self.path / JOB_FILES["traceback"])
    inputs = property(lambda self: self.path / JOB_FILES["inputs"])

    def lock(self) -> JobLock:
        return JobLock(self.lock_path).acquire()

    def has_request(self) -> bool:
        return self.request.is_file()

    def has_checkpoint(self) -> bool:
        return self.state.is_file()

    def checkpoint_meta(self) -> dict:
        """The metadata of state.safetensors (step, fingerprint), read from its JSON header: cheap, no torch.
        Empty when there is no readable checkpoint."""
        try:
            with open(self.state, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                meta = json.loads(f.read(min(n, 1 << 20)))["__metadata__"]
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return {}

    def read_request(self) -> dict:
        try:
            req = json.loads(self.request.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserInputError(f"{self.path} is not a job directory (no job.json)",
                                 hint="submit it with image and audio to start a job there") from None
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{self.request} is unreadable ({exc})",
                                 hint="delete the job directory and submit the job again") from None
        for key in ("image", "audio", "params"):
            if key not in req:
                raise UserInputError(f"{self.request} lacks {key!r}", hint="submit the job again with image and audio")
        for key in ("image", "audio"):  # the folder moved (a project on another disk): its own copies are here
            here = self.inputs / Path(str(req[key])).name
            if not Path(str(req[key])).is_file() and here.is_file():
                req[key] = str(here)
        return req

    def clear_results(self) -> None:
        """Forget a previous, different request's outputs: only files that are ours (ownership.py), no folders."""
        frames = [f"{JOB_FILES['frames']}/{n}" for n in _listdir(self.frames)]
        ownership.remove(self.path, [*RESULT_NAMES, *(f for f in frames if ownership.is_frame_name(f))])
        try:
            self.frames.rmdir()  # only when nothing is left in it
        except OSError:
            pass

    def check_ours(self, image: str | None = None, audio: str | None = None) -> None:
        """Refuse a folder that is not ours to write into: a file, or a folder holding anything but our records,
        our files and the inputs this request itself names (the add-on writes those into inputs/ first)."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        if not self.path.is_dir():
            raise FilesystemError(f"job folder {self.path} is a file, not a folder",
                                  hint="choose a new folder for the job (it is created)")
        folder = ownership.inspect(self.path)
        if folder.job:
            return  # our job folder: files we did not write stay untouched (we delete only ours)
        allowed = set()
        for p in (image, audio):
            try:
                allowed.add(Path(p).expanduser().resolve().relative_to(self.path).as_posix())
            except (TypeError, ValueError):
                pass
        ownership.refuse_foreign(self.path, folder.foreign(allowed), "job folder",
                                 "choose an empty or new folder for the job: stableavatar writes only into folders "
                                 "it created, and never deletes a file it did not write")

    def prepare_request(self, image: str, audio: str, params: dict, job_id: str, worker: dict,
                        client: dict | None = None, requested: dict | None = None) -> tuple[dict, bool]:
        """Write job.json (+ input copies) for a new request, or keep the stored one when it is the same
        request (same input contents, same params as requested): returns (request, resumable).
        params: complete and concrete (a drawn seed); requested: as the client sent them (seed -1 stays -1, so
        the same request with a random seed resumes rather than starting over); client: the client's own record."""
        sources = {"image": existing_file(image, "image"), "audio": existing_file(audio, "audio")}
        hashes = {k: files.sha256(p) for k, p in sources.items()}
        requested = params if requested is None else requested
        if self.has_request():
            try:
                old = self.read_request()
            except UserInputError:
                old = None
            if old and old.get("sha256") == hashes and old.get("params_requested", old.get("params")) == requested:
                old["id"] = job_id
                if client is not None:
                    old["client"] = client
                files.write_json(self.request, old)
                return old, self.has_checkpoint()
        self.path.mkdir(parents=True, exist_ok=True)
        self.clear_results()
        copies = {}
        for key, src in sources.items():
            dst = self.inputs / input_name(key, src.suffix)
            if src.resolve() != dst.resolve():  # the add-on writes its inputs here already: used in place
                with files.atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
            copies[key] = str(dst)
        req = {"version": REQUEST_VERSION, "id": job_id, "image": copies["image"], "audio": copies["audio"],
               "source": {k: str(v) for k, v in sources.items()}, "sha256": hashes, "params": params,
               "params_requested": requested, "worker": worker, "client": client,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        files.write_json(self.request, req)
        return req, False


def _listdir(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []


def existing_file(path: str, what: str) -> Path:
    return files.require_file(path, what, hint=f"pass an absolute path to a readable {what} file").resolve()
