"""Frame-rate maths: scene fps (incl. 29.97 = 30 / 1.001) <-> seconds <-> 16 kHz samples <-> 25 fps model frames.

Everything is exact (`fractions.Fraction`): Blender stores `fps_base` as a 32-bit float (1.001 reads back
as 1.00100004673), so it is snapped to 6 decimals before use.
"""
from __future__ import annotations

import math
from fractions import Fraction

from .contract import MODEL_FPS, SAMPLE_RATE


def scene_fps(fps: int, fps_base: float) -> Fraction:
    """Exact frames per second of a scene from `render.fps` / `render.fps_base`."""
    return Fraction(int(fps)) / Fraction(f"{float(fps_base):.6f}")


def frames_to_samples(frames: float, fps: Fraction, rate: int = SAMPLE_RATE) -> int:
    """Number of samples in `frames` scene frames (rounded to the nearest sample)."""
    return round(Fraction(frames) * rate / fps)


def model_frames_for_samples(samples: int, rate: int = SAMPLE_RATE) -> int:
    """Model (25 fps) frames needed to cover `samples` of audio: 640 samples per frame at 16 kHz."""
    return math.ceil(Fraction(samples * MODEL_FPS, rate))


def scene_frames_for_model_frames(n_model: int, fps: Fraction) -> int:
    """Scene frames that show `n_model` frames of 25 fps video for the same duration."""
    return math.ceil(Fraction(n_model) * fps / MODEL_FPS)


def element_indices(n_scene: int, n_model: int, fps: Fraction) -> list[int]:
    """For each scene frame, the model frame shown at that instant (nearest-earlier, sample-exact).

    Scene frame i starts at i / fps seconds; the model frame on screen then is floor(i * 25 / fps).
    Indices past the last model frame hold the last frame.
    """
    if n_model <= 0:
        raise ValueError("no frames to map")
    ratio = Fraction(MODEL_FPS) / fps
    return [min(math.floor(i * ratio), n_model - 1) for i in range(n_scene)]
