"""What the service reports about this machine without an engine (the `ready` message of a worker whose engine
failed to load, `resume`'s defaults): device and dtype defaults, package versions, the GPU, where weights were
looked for. Imports torch only when it is installed and asked for."""
from __future__ import annotations

import sys

from .. import __version__


def resolve_device(args) -> None:
    """Fill device/dtype defaults: the GPU when there is one, bf16 there, float32 on the CPU."""
    if not args.device:
        try:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            args.device = "cpu"
    if not args.dtype:
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"


def searched_paths(checkpoints) -> list[str]:
    if checkpoints:
        return [str(checkpoints)]
    try:
        from ..checkpoints import default_search_paths
        return [str(p) for p in default_search_paths()]
    except Exception:  # noqa: BLE001
        return []


def versions() -> dict:
    from importlib import metadata
    out = {"stableavatar": __version__, "python": sys.version.split()[0]}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import torch
        out["cuda"] = torch.version.cuda
    except ImportError:
        out["cuda"] = None
    return out


def gpu() -> dict | None:
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return {"name": torch.cuda.get_device_name(), "total_mb": total >> 20, "free_mb": free >> 20}
    except Exception:  # noqa: BLE001
        return None
