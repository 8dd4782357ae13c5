"""StableAvatar inference backend: audio-driven avatar video from a still and a voice track.

Public API (used by the CLI, the service and the benchmark):

    from stableavatar import Engine, GenerationParams
    from stableavatar.job import prepare_job

    job = prepare_job("face.png", "voice.wav", GenerationParams(steps=50))  # validates; loads no model
    engine = Engine.load("checkpoints/", device="cuda", dtype="bfloat16")
    result = engine.generate(job, "out/")
"""
import os as _os

__version__ = "0.1.0"

# CPU runs share the machine (with Blender, or other jobs): OpenMP's default spin-waiting makes torch's CPU
# kernels up to 10x slower under contention (measured on the tiny VAE decode: 50 s -> 8 s). Must be set before
# torch initialises OpenMP, so it lives here, ahead of every torch import in this package.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import StableAvatarError, UserInputError, CheckpointError  # noqa: E402
from .contract import GenerationParams  # noqa: E402

__all__ = ["Engine", "GenerationParams", "GenerationResult", "Hooks", "StableAvatarError", "UserInputError",
           "CheckpointError"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name in ("Engine", "GenerationResult", "Hooks"):
        from . import engine
        return getattr(engine, name)
    raise AttributeError(name)
