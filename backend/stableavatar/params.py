"""Transitional re-exports: the generation parameters and the facts that cross the process boundary live in
contract.py; the window length is the backend's own."""
from __future__ import annotations

from .contract import (COMPAT_MODES, DEFAULT_PROMPT, DEVICES, DTYPES, FIT_MODES, GUIDANCE_MODES,  # noqa: F401
                       MEMORY_MODE_CHOICES, MEMORY_MODES, NEXT_MEMORY_MODE, OFFICIAL_NEGATIVE_PROMPT,
                       OVERLAP_WEIGHTS, RESOLUTION_PRESETS, SAMPLE_RATE, GenerationParams)
from .contract import MODEL_FPS as FPS  # noqa: F401

WINDOW_FRAMES = 81  # pixel frames per sliding window (21 latent frames), the training length
