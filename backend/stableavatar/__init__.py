"""StableAvatar inference backend: audio-driven avatar video from a still and a voice track.

Public API (used by the CLI, the service and the benchmark):

    from stableavatar import Engine, GenerationParams
    engine = Engine.load("checkpoints/", device="cuda", dtype="bfloat16")
    result = engine.generate("face.png", "voice.wav", "out/", GenerationParams(steps=50))
"""
__version__ = "0.1.0"

from .errors import StableAvatarError, UserInputError, CheckpointError  # noqa: E402
from .params import GenerationParams  # noqa: E402

__all__ = ["Engine", "GenerationParams", "GenerationResult", "Hooks", "StableAvatarError", "UserInputError",
           "CheckpointError"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name in ("Engine", "GenerationResult", "Hooks"):
        from . import engine
        return getattr(engine, name)
    raise AttributeError(name)
