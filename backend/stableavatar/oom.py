"""Out-of-memory: recognise it whatever raised it, release the memory, and say what would fit."""
from __future__ import annotations

import gc

from .contract import NEXT_MEMORY_MODE as NEXT_MODE

GENERIC_HINT = "use a lighter memory mode (model_offload, fp8, sequential_offload) or a smaller resolution"


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or getattr(exc, "category", None) == "out_of_memory":  # ours: errors.py
        return True
    try:
        import torch
        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def smaller_resolution(width: int, height: int) -> tuple[int, int]:
    """About half the pixels (activations scale with area), same aspect, multiples of 16, at least 256 on a side
    where the input allows."""
    w = max(16, int(width * 0.71) // 16 * 16)
    h = max(16, int(height * 0.71) // 16 * 16)
    return w, h


def suggestion(memory_mode: str, width: int, height: int) -> dict:
    nxt = NEXT_MODE.get(memory_mode)
    w, h = smaller_resolution(width, height)
    return {"memory_mode": nxt, "width": w, "height": h}


def hint(memory_mode: str, width: int, height: int) -> str:
    s = suggestion(memory_mode, width, height)
    res = f"a smaller resolution such as {s['width']}x{s['height']}"
    if s["memory_mode"]:
        return (f"restart the backend with memory mode {s['memory_mode']} (now {memory_mode}) and submit the same "
                f"job directory again to continue from its checkpoint, or use {res}")
    return f"already in {memory_mode}: use {res}, or close other programs that use the GPU"


def release() -> None:
    """Give cached blocks back after the failed job's tensors are unreferenced (call after dropping the
    exception and its traceback, which pin the frames holding them)."""
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - best effort, never mask the OOM report
        pass
