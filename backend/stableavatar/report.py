"""What a backend reports about itself (in `ready`, Check Backend and every manifest): package versions and
the GPU. Works before torch is importable, so a broken install is still described."""
from __future__ import annotations

import platform
from importlib import metadata

from . import __version__


def versions() -> dict:
    out = {"stableavatar": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import torch
        out["torch"], out["cuda"] = torch.__version__, torch.version.cuda
    except ImportError:
        out["cuda"] = None
    return out


def gpu(device=None) -> dict | None:
    """name, total_mb, free_mb of the CUDA device (the current one by default), or None without CUDA."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info(device)
        return {"name": torch.cuda.get_device_name(device), "total_mb": total >> 20, "free_mb": free >> 20}
    except Exception:  # noqa: BLE001 - a report must not fail because the driver is unwell
        return None
