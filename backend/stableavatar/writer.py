"""The result folder of a job, and writing it:

    frames/000000.png ...   every video frame, written as the VAE decodes them
    video.mp4               H.264 with the driving audio muxed in (output.VideoEncoder)
    latents.safetensors     the final latents, with `--save-latents`
    manifest.json           what ran: parameters, inputs (with hashes), windows, device, weights, versions, timings
    stableavatar-files.json the files above, recorded before they are written (ownership.py): only they are
                            ever replaced or deleted in this folder

Every file appears atomically under its final name (files.atomic_path).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import __version__, ownership
from .checkpoints import file_sha256
from .errors import FilesystemError, UserInputError, os_error
from .job import PreparedJob
from .output import VideoEncoder, to_uint8_frames, write_png
from .contract import JOB_FILES
from .contract import MODEL_FPS as FPS

RESULT_NAMES = tuple(JOB_FILES[k] for k in ("manifest", "video", "latents"))  # what marks a finished result
CHOOSE = "choose an empty or new folder (it is created)"


def out_path(out_dir) -> Path:
    """`--out` as a path; an empty name would mean the current folder, which is refused."""
    if out_dir is None or not str(out_dir).strip():
        raise UserInputError("the output folder name is empty", hint=f"{CHOOSE}, e.g. --out shot01")
    return Path(out_dir).expanduser()


def check_out_dir(out_dir, may_replace: bool) -> Path:
    """Refuse an output folder that cannot or must not be written, before anything is loaded or created: a
    file, an unwritable place, a finished result (unless it may be replaced), files that are not ours (unless
    we may write beside them: `--overwrite`; even then none of them is replaced)."""
    out_dir = out_path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FilesystemError(f"output folder {out_dir} is a file, not a folder", hint=CHOOSE)
    _check_writable(out_dir)
    folder = ownership.inspect(out_dir)
    existing = [n for n in RESULT_NAMES if (out_dir / n).exists() and folder.owns(n)]
    if existing and not may_replace:
        raise UserInputError(f"output folder {out_dir} already holds a result ({', '.join(existing)})",
                             hint="choose a new folder, or pass --overwrite to replace it")
    if not may_replace:
        ownership.refuse_foreign(out_dir, folder.foreign(), "output folder",
                                 f"{CHOOSE}, or pass --overwrite to write beside them (stableavatar never "
                                 "replaces or deletes a file it did not write)")
    return out_dir


def prepare_out_dir(out_dir: Path, names) -> None:
    """Create `out_dir` and record `names` (relative) as ours before any of them is written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        ownership.claim(out_dir, names)  # first: it refuses a frames/ that links elsewhere
        (out_dir / JOB_FILES["frames"]).mkdir(exist_ok=True)
    except OSError as exc:
        raise (os_error(exc, f"cannot write the output folder {out_dir}") or exc) from exc


def result_names(num_frames: int, latents: bool) -> list[str]:
    names = [ownership.frame_name(i) for i in range(num_frames)] + [JOB_FILES["video"], JOB_FILES["manifest"]]
    return names + ([JOB_FILES["latents"]] if latents else [])


def _check_writable(out_dir: Path) -> None:
    """The nearest existing folder on the way to `out_dir` must be a folder we may write into."""
    here = out_dir.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise FilesystemError(f"cannot create output folder {out_dir}: {here} is a file, not a folder", hint=CHOOSE)
    if not os.access(here, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(here).f_flag & getattr(os, "ST_RDONLY", 1)
        what = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise FilesystemError(f"cannot write output folder {out_dir}: {here} {what}",
                              hint="choose a folder on a writable drive that you may write to")


def write_frames(chunks: Iterable, frames_dir: Path, encoder: VideoEncoder, num_frames: int, *,
                 preview: Callable[[int, np.ndarray], None] | None = None,
                 on_frames: Callable[[int], None] | None = None) -> int:
    """Write the first `num_frames` frames of the decoded `chunks` ([3, f, H, W] in [-1, 1]) as PNGs and into
    `encoder`; stops pulling chunks once enough frames are written. preview(index, rgb) gets the last frame of
    each chunk, on_frames(written) the running count. Returns the frames written."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for chunk in chunks:
        frames = to_uint8_frames(chunk)[: num_frames - written]
        for k, frame in enumerate(frames):
            write_png(frames_dir / f"{written + k:06d}.png", frame)
        encoder.write(frames)
        written += len(frames)
        if len(frames) and preview:
            preview(written - 1, frames[-1])
        if on_frames:
            on_frames(written)
        if written >= num_frames:
            break
    # leftovers of an earlier, longer run of ours in this folder (never a file we did not write)
    stale = [f"{frames_dir.name}/{n}" for n in os.listdir(frames_dir)
             if ownership.is_frame_name(f"{frames_dir.name}/{n}") and int(n[:-4]) >= written]
    ownership.remove(frames_dir.parent, stale)
    return written


def save_latents(path: Path, latents) -> Path:
    from safetensors.torch import save

    from .files import write_bytes

    write_bytes(path, save({"latents": latents.contiguous().cpu()}))  # OSError (disk full) as Python raises it
    return path


def manifest(job: PreparedJob, fingerprint: str, timings: dict, runtime: dict) -> dict:
    """manifest.json's content. `runtime`: the engine's part (device, dtype, memory_mode, memory_mode_requested,
    attention, checkpoints, versions; Engine.runtime)."""
    p = job.params
    return {
        "stableavatar_backend": __version__,
        "params": p.to_dict(),
        "seed": p.seed, "compat": p.compat, "guidance": p.guidance,
        "inputs": {"image": str(job.image_path.resolve()), "image_sha256": file_sha256(job.image_path),
                   "audio": str(job.audio_path.resolve()), "audio_sha256": file_sha256(job.audio_path),
                   "audio_samples_16k": int(job.wave.size)},
        "video": {"frames": job.num_frames, "fps": FPS, "latent_frames": job.num_latents,
                  "width": p.width, "height": p.height},
        "windows": [vars(w) for w in job.windows],
        **runtime,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "fingerprint": fingerprint,
    }
