"""Engine settings (contract.EngineSettings) made concrete for this machine: one home for the device and dtype
defaults, shared by `generate`, `serve` and `resume`."""
from __future__ import annotations

import dataclasses

from .contract import EngineSettings


def default_device() -> str:
    """The GPU when PyTorch sees one, else the CPU (also when torch itself is missing: the load then says so)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve(settings: EngineSettings) -> EngineSettings:
    """A copy with device and dtype filled in: bfloat16 on a GPU (as released), float32 on the CPU."""
    device = settings.device or default_device()
    dtype = settings.dtype or ("bfloat16" if device == "cuda" else "float32")
    return dataclasses.replace(settings, device=device, dtype=dtype).validate()
