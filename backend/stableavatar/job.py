"""The prepared job: validated inputs and the window plan, computed once and needing no model.

    job = prepare_job("face.png", "voice.wav", GenerationParams())   # fails fast on bad input
    engine.generate(job, "out/")

`job_fingerprint` names everything that determines the result; a sampler checkpoint made for one fingerprint
is refused for any other.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import compat as compat_modes
from . import guidance as guidance_modes
from .audio import load_audio, num_video_frames
from .image import load_reference
from .contract import SAMPLE_RATE, GenerationParams
from .errors import TooLargeError
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
    check_state_fits(params, num_latents, wave.size / SAMPLE_RATE)
    windows = tuple(plan_windows(num_latents, params.overlap, wave.size, compat))
    num_frames = frames_of_audio if compat.trim_to_audio else 4 * (num_latents - 1) + 1
    return PreparedJob(params, compat, guidance_modes.get(params.guidance), wave, reference, num_frames,
                       num_latents, windows, image_path, audio_path)


def fingerprint_parts(job: PreparedJob, transformer: Path, dtype, checkpoints: Path) -> dict[str, str]:
    """What a sampler checkpoint records beside the fingerprint, so that a refused resume can say what differs:
    the inputs and parameters (a hash), the model dtype, the transformer file and the checkpoint folder."""
    h = hashlib.sha256(json.dumps(job.params.to_dict(), sort_keys=True).encode())
    h.update(job.image_path.read_bytes())
    h.update(job.wave.tobytes())
    return {"inputs": h.hexdigest(), "dtype": str(dtype).removeprefix("torch."),
            "transformer": f"{transformer.name}|{transformer.stat().st_size}", "checkpoints": str(checkpoints)}


STATE_COPIES = 4  # the latents, a step's prediction, the initial noise, the checkpoint's CPU copy


def state_bytes(params: GenerationParams, num_latents: int) -> int:
    """Bytes of one float32 latent state [1, 16, T, H/8, W/8]: it grows with the audio's length."""
    return 16 * num_latents * (params.height // 8) * (params.width // 8) * 4


def check_state_fits(params: GenerationParams, num_latents: int, seconds: float, memory: int | None = None) -> None:
    """Refuse, before anything is allocated, a job whose latent state alone cannot fit this machine's memory
    (`memory`: bytes of RAM, default the machine's). Everything else a job needs does not grow with length."""
    memory = host_memory() if memory is None else memory
    need = STATE_COPIES * state_bytes(params, num_latents)
    if memory and need > memory:
        raise TooLargeError(f"{seconds:.0f} s of audio at {params.width}x{params.height} needs {need / 2**30:.1f} GiB "
                            f"for the sampler's state alone; this machine has {memory / 2**30:.1f} GiB",
                            hint="split the audio into shorter takes (a few minutes each), or use a smaller size")


def host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no bound
        return None


def job_fingerprint(job: PreparedJob, transformer: Path, dtype) -> str:
    """sha256 of the parameters, the image file, the 16 kHz wave, the transformer file (name and size) and the
    model dtype (a torch.dtype, hashed as "torch.bfloat16": the format existing checkpoints were made with)."""
    h = hashlib.sha256()
    h.update(json.dumps(job.params.to_dict(), sort_keys=True).encode())
    h.update(job.image_path.read_bytes())
    h.update(job.wave.tobytes())
    h.update(f"{transformer.name}|{transformer.stat().st_size}|{dtype}".encode())
    return h.hexdigest()
