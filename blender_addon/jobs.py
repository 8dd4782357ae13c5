"""Job model: what the add-on remembers about a job, in the .blend and in the job's directory.

The backend owns `job.json`, `frames/`, `manifest.json` (docs/protocol.md). The add-on adds
`blender_job.json`: where the result goes on the timeline. With both, a reopened .blend (or a Blender
restarted after a crash) can resubmit a running job to resume it, or import a finished one.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

BLENDER_JOB_FILE = "blender_job.json"

# Status values, shared by the .blend PropertyGroup enum and the job file.
PREPARING, QUEUED, RUNNING, CANCELLING, IMPORTED, CANCELLED, ERROR = (
    "PREPARING", "QUEUED", "RUNNING", "CANCELLING", "IMPORTED", "CANCELLED", "ERROR")
ACTIVE = (PREPARING, QUEUED, RUNNING, CANCELLING)


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


@dataclass
class JobRecord:
    id: str
    job_dir: str
    image: str
    audio: str
    params: dict
    placement: Placement
    samples: int = 0
    created: float = field(default_factory=time.time)

    def save(self):
        os.makedirs(self.job_dir, exist_ok=True)
        tmp = os.path.join(self.job_dir, BLENDER_JOB_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, os.path.join(self.job_dir, BLENDER_JOB_FILE))

    @classmethod
    def load(cls, job_dir: str) -> "JobRecord":
        with open(os.path.join(job_dir, BLENDER_JOB_FILE), encoding="utf-8") as f:
            d = json.load(f)
        d["placement"] = Placement(**d["placement"])
        return cls(**d)


def frame_files(frames_dir: str) -> list[str]:
    """The frame file names the backend wrote, in order."""
    try:
        return sorted(n for n in os.listdir(frames_dir) if n.lower().endswith(".png"))
    except OSError:
        return []


def finished_result(job_dir: str) -> tuple[str, int] | None:
    """(frames_dir, count) when the backend finished this job (manifest written last), else None."""
    frames_dir = os.path.join(job_dir, "frames")
    if not os.path.isfile(os.path.join(job_dir, "manifest.json")):
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
