"""Speed switches for the sampler that keep its outputs the same, in one place for engine.py and sampler.py.

* `attention_context(name)`: run the DiT under one of diffusers' attention backends. "native" (the default) is
  PyTorch SDPA choosing its own kernel: flash on sm80+ in bf16, which the official code also requires. Every
  backend listed in EXACT_ATTENTION computes exact attention (no approximation); they differ in the last bits only.
  `bench/run.py` measures them; approximate kernels (sage: int8/fp8 QK) are opt-in and not listed here.
* `compile_dit(dit)`: regional torch.compile of the 30 identical transformer blocks (compiled once, reused), an
  opt-in because the first window pays the compile time (about a minute).
* `step_tensors(...)`: the per-step scalars moved to the device once before the loop. A CPU->GPU `.to()` of a
  pageable tensor synchronises the stream (PyTorch waits for a blocking copy), so doing it inside the loop stalls
  the GPU queue once per step (dt) and once per window (fusion weights).
"""
from __future__ import annotations

import contextlib
import importlib.util

import torch

EXACT_ATTENTION = ("native", "_native_flash", "_native_efficient", "_native_cudnn", "_native_math", "flash",
                   "_flash_3")
_NEEDS = {"flash": "flash_attn", "_flash_3": "flash_attn_interface"}


def attention_available(name: str) -> bool:
    module = _NEEDS.get(name)
    return name in EXACT_ATTENTION and (module is None or importlib.util.find_spec(module) is not None)


@contextlib.contextmanager
def attention_context(name: str | None = "native"):
    """Make `dispatch_attention_fn` (used by the DiT and the audio adapter) use backend `name` inside the block."""
    if name in (None, "native"):
        yield
        return
    if name not in EXACT_ATTENTION:
        raise ValueError(f"attention backend {name!r} is not one of {', '.join(EXACT_ATTENTION)}")
    if not attention_available(name):
        raise RuntimeError(f"attention backend {name!r} needs the {_NEEDS[name]} package")
    from diffusers.models.attention_dispatch import attention_backend

    with attention_backend(name):
        yield


def compile_dit(dit, backend: str = "inductor"):
    """Regional compilation: each WanAttentionBlock forward is compiled once (all 30 share the code)."""
    dit.compile_repeated_blocks(fullgraph=False, backend=backend)
    return dit


def step_tensors(sigmas: torch.Tensor, timesteps: torch.Tensor, device: torch.device, branches: int):
    """(dt [steps] float32, t [steps, branches] float32) on `device`, from the CPU schedule.

    dt[i] = sigmas[i+1] - sigmas[i] is computed on the CPU in float32, exactly as the loop did, then copied once.
    """
    dt = (sigmas[1:] - sigmas[:-1]).to(device)
    t = timesteps.float()[:, None].expand(-1, branches).contiguous().to(device)
    return dt, t
