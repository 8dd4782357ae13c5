"""The prepared job: validated inputs and the window plan, computed once and needing no model.

    job = prepare_job("face.png", "voice.wav", GenerationParams())   # fails fast on bad input
    engine.generate(job, "out/")

`job_fingerprint` names everything that determines the result; a sampler checkpoint made for one fingerprint
is refused for any other.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import compat as compat_modes
from . import guidance as guidance_modes
from .audio import load_audio, num_video_frames
from .image import load_reference
from .contract import GenerationParams
from .windows import Window, latent_frames, plan_windows


@dataclass(frozen=True, eq=False)
class PreparedJob:
    params: GenerationParams
    compat: compat_modes.Compat
    guidance: guidance_modes.GuidanceMode
    wave: np.ndarray               # float32 mono 16 kHz
    reference: "object"            # torch.Tensor [1, 3, H, W] in [-1, 1], fitted to the output size
    num_frames: int                # frames the video will have
    num_latents: int
    windows: tuple[Window, ...]
    image_path: Path | None = None
    audio_path: Path | None = None  # muxed into the video; None: a silent video


def prepare_job(image, audio, params: GenerationParams) -> PreparedJob:
    """Read and validate the inputs and plan the windows; needs no model, so callers run it before loading any."""
    params.validate()
    image_path, audio_path = Path(image), Path(audio)
    reference = load_reference(image_path, params.width, params.height, params.fit)
    wave = load_audio(audio_path, allow_silent=params.allow_silent)
    return plan_job(params, wave, reference, image_path, audio_path)


def plan_job(params: GenerationParams, wave: np.ndarray, reference, image_path: Path | None = None,
             audio_path: Path | None = None) -> PreparedJob:
    """The job for inputs already in memory (`prepare_job` after reading the files; the benchmark's own audio)."""
    compat = compat_modes.get(params.compat)
    frames_of_audio = num_video_frames(wave.size)
    num_latents = latent_frames(frames_of_audio, compat)
    windows = tuple(plan_windows(num_latents, params.overlap, wave.size, compat))
    num_frames = frames_of_audio if compat.trim_to_audio else 4 * (num_latents - 1) + 1
    return PreparedJob(params, compat, guidance_modes.get(params.guidance), wave, reference, num_frames,
                       num_latents, windows, image_path, audio_path)


def job_fingerprint(job: PreparedJob, transformer: Path, dtype) -> str:
    """sha256 of the parameters, the image file, the 16 kHz wave, the transformer file (name and size) and the
    model dtype (a torch.dtype, hashed as "torch.bfloat16": the format existing checkpoints were made with)."""
    h = hashlib.sha256()
    h.update(json.dumps(job.params.to_dict(), sort_keys=True).encode())
    h.update(job.image_path.read_bytes())
    h.update(job.wave.tobytes())
    h.update(f"{transformer.name}|{transformer.stat().st_size}|{dtype}".encode())
    return h.hexdigest()
