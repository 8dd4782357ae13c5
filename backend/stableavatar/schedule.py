"""Flow-matching noise schedule (docs/method.md §7.1): diffusers' FlowMatchEulerDiscreteScheduler with the official
settings, used only as the source of the sigma table. The Euler update itself is one line in the sampler
(x_next = x + (sigma_next - sigma) * v), which keeps the schedule plain data, k-diffusion style."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def flow_sigmas(steps: int, shift: float = 5.0):
    """(sigmas [steps + 1] ending in 0, timesteps [steps] = sigma * 1000 as floats), float32 on the CPU.
    For 50 steps: 1.0, 0.99587, ..., 0.11482, 0.02441, 0 (sigma_min is shifted twice, as released)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False,
                                            base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                            max_image_seq_len=4096)
    sched.set_timesteps(steps)
    return sched.sigmas.float().clone(), sched.timesteps.float().clone()
