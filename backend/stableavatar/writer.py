"""The result folder of a job, and writing it:

    frames/000000.png ...   every video frame, written as the VAE decodes them
    video.mp4               H.264 with the driving audio muxed in (output.VideoEncoder)
    latents.safetensors     the final latents, with `--save-latents`
    manifest.json           what ran: parameters, inputs (with hashes), windows, device, weights, versions, timings

Every file appears atomically under its final name (output.atomic_path).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import __version__
from .checkpoints import file_sha256
from .errors import UserInputError
from .job import PreparedJob
from .output import VideoEncoder, atomic_path, to_uint8_frames, write_png
from .contract import JOB_FILES
from .contract import MODEL_FPS as FPS

RESULT_NAMES = tuple(JOB_FILES[k] for k in ("manifest", "video", "latents"))  # what marks a finished result


def check_out_dir(out_dir: Path, may_replace: bool) -> None:
    """Create `out_dir`; refuse one that already holds a result unless it may be replaced."""
    existing = [n for n in RESULT_NAMES if (out_dir / n).exists()]
    if existing and not may_replace:
        raise UserInputError(f"output folder {out_dir} already holds a result ({', '.join(existing)})",
                             hint="choose a new folder, or pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise UserInputError(f"output folder {out_dir} is not writable")


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
    for stale in sorted(frames_dir.glob("*.png"))[written:]:  # leftovers of an earlier, longer run in this dir
        stale.unlink()
    return written


def save_latents(path: Path, latents) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"latents": latents.contiguous()}, str(tmp))
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
