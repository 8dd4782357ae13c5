"""Memory modes for the DiT (the largest model used at every step).

full               weights resident on the GPU (fastest; ~3.5 GB bf16 for the 1.3B DiT)
model_offload      weights on the CPU, moved to the GPU for the denoising phase of each job
sequential_offload accelerate hooks stream each sub-module's weights to the GPU as it runs (slowest, smallest)
fp8                weights stored as float8_e4m3fn on the GPU and up-cast per layer by diffusers' layerwise
                   casting hooks (compute stays bf16); modulation tables, norms and embeddings stay in full
                   precision, as the official fp8 mode excludes "modulation"
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

FP8_SKIP = ("modulation", "norm", "patch_embedding", "time_embedding", "time_projection", "text_embedding",
            "img_emb", "head")


def place_transformer(dit, mode: str, device: torch.device, dtype: torch.dtype):
    dit = dit.eval().requires_grad_(False)  # from_official already cast (keeping the time MLPs in fp32)
    if mode == "full" or device.type == "cpu" and mode != "fp8":
        return dit.to(device)
    if mode == "model_offload":
        return dit  # moved in and out around the denoising phase by dit_on_device
    if mode == "sequential_offload":
        from accelerate import cpu_offload

        cpu_offload(dit, execution_device=device)
        return dit
    if mode == "fp8":
        dit.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype,
                                     skip_modules_pattern=FP8_SKIP)
        return dit.to(device)
    raise ValueError(mode)


@contextmanager
def dit_on_device(dit, mode: str, device: torch.device):
    if mode != "model_offload" or device.type == "cpu":
        yield dit
        return
    dit.to(device)
    try:
        yield dit
    finally:
        dit.to("cpu")
        torch.cuda.empty_cache()
