"""What the add-on keeps about a job, and where: the job folder is the record, the .blend only points at it.

The backend owns the job folder's `job.json` (docs/protocol.md). The add-on puts its own part of the job, the
`Placement` (where the result goes on the timeline), into the submit request's `client` field, which the backend
stores in `job.json` unchanged. So there is one record per job folder, and a reopened .blend (or a Blender
restarted after a crash) can resume a running job or import a finished one from the folder alone.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, fields, replace

from .contract import FRAME_PATTERN, JOB_FILES, input_name


# custom properties on the strips the add-on makes (and the source tag on the strips it animates)
TAG_JOB, TAG_SOURCE, TAG_SOURCE_ID, TAG_TAKE, TAG_SEED = (
    "stableavatar_job", "stableavatar_source", "stableavatar_source_id", "stableavatar_take", "stableavatar_seed")


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class Placement:
    """Where and how the returned frames go on the timeline."""
    scene: str
    source: str                 # the sound strip (or shot strip) the job was made from
    frame_start: int            # first frame of the result strip
    channel_above: int          # the result goes on the lowest free channel above this one
    n_scene_frames: int         # length of the result strip in scene frames (= the audio's length)
    fps: int
    fps_base: float
    take: int = 1
    replace_previous: bool = False
    source_id: str = ""         # the tag on the source strip, so the result follows it when it moves
    source_left: int = 0        # where the source was heard when the job started (the result follows it)
    source_right: int = 0

    def follow(self, left: int, right: int) -> tuple["Placement", str]:
        """This placement moved with its source strip, now heard over [left, right); and a warning when the
        result cannot match it any more (the strip was trimmed or extended since the job started)."""
        moved = self.frame_start + (left - self.source_left)
        warning = ""
        if right - left != self.source_right - self.source_left:
            warning = (f"'{self.source}' changed length since the job started ({self.source_right - self.source_left}"
                       f" -> {right - left} frames): the avatar shows the audio it was made from")
        return replace(self, frame_start=moved, source_left=left, source_right=right), warning

    def client_record(self) -> dict:
        """The submit request's `client` field."""
        return {"placement": asdict(self)}

    @classmethod
    def from_client_record(cls, record: dict) -> "Placement":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (record or {}).get("placement", {}).items() if k in names})


def path(job_dir: str, name: str) -> str:
    """A file of the job folder by its role (contract.JOB_FILES)."""
    return os.path.join(job_dir, JOB_FILES[name])


def input_path(job_dir: str, kind: str, suffix: str) -> str:
    """Where the add-on writes an input, so the backend uses it in place (kind: image or audio)."""
    return os.path.join(job_dir, JOB_FILES["inputs"], input_name(kind, suffix))


def read_request(job_dir: str) -> dict | None:
    """The backend's job.json, or None when the job was never accepted (or the file is unreadable)."""
    try:
        with open(path(job_dir, "request"), encoding="utf-8") as f:
            req = json.load(f)
        return req if isinstance(req, dict) else None
    except (OSError, ValueError):
        return None


def read_placement(job_dir: str) -> Placement:
    req = read_request(job_dir)
    if req is None or not isinstance(req.get("client"), dict):
        raise ValueError(f"{path(job_dir, 'request')} is missing or has no placement: the job cannot be imported")
    return Placement.from_client_record(req["client"])


def frame_files(frames_dir: str) -> list[str]:
    """The frame file names the backend wrote, in order (its temporary files never match)."""
    n = len(FRAME_PATTERN.format(0))
    try:
        return sorted(f for f in os.listdir(frames_dir) if len(f) == n and f.endswith(".png") and f[:-4].isdigit())
    except OSError:
        return []


def finished_result(job_dir: str) -> tuple[str, int] | None:
    """(frames_dir, count) when the backend finished this job (manifest written last), else None."""
    frames_dir = path(job_dir, "frames")
    if not os.path.isfile(path(job_dir, "manifest")):
        return None
    n = len(frame_files(frames_dir))
    return (frames_dir, n) if n else None


def error_report(message: str, hint: str = "", traceback_path: str = "", log_path: str = "",
                 log_tail: str = "") -> str:
    """The full text behind an error row and its Copy button."""
    parts = [message]
    if hint:
        parts.append(f"hint: {hint}")
    if traceback_path:
        try:
            with open(traceback_path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read().rstrip())
        except OSError:
            parts.append(f"traceback: {traceback_path}")
    if log_tail:
        parts.append("backend log (end):\n" + log_tail.rstrip())
    if log_path:
        parts.append(f"log: {log_path}")
    return "\n".join(parts)
