"""Memory modes for the DiT (the largest model used at every step), and the "auto" choice between them.

full               weights resident on the GPU (fastest; ~3.5 GB bf16 for the 1.3B DiT)
model_offload      weights on the CPU, moved to the GPU for the denoising phase of each job (exact; costs one
                   3.5 GB host-to-device copy per job)
sequential_offload accelerate hooks stream each sub-module's weights to the GPU as it runs (exact; slowest, smallest)
fp8                weights stored as float8_e4m3fn on the GPU and up-cast per layer by diffusers' layerwise
                   casting hooks (compute stays bf16); modulation tables, norms and embeddings stay in full
                   precision, as the official fp8 mode excludes "modulation". APPROXIMATE: fp8 storage rounds every
                   weight to 3 mantissa bits, so outputs change; it is never picked by "auto" unless allowed.

Memory model used by `choose_memory_mode` ("auto"), in bytes, for one job at W x H (docs/performance.md has the
derivation and the measurements behind the coefficients):

    peak = max(phase peaks) * (1 + FRAGMENTATION) + RESERVE

    y-encode phase  = resident + VAE weights + VAE_ENCODE_BYTES_PER_PIXEL * W*H    (81-frame clip, causal chunks)
    denoise phase   = resident + DiT weights(mode) + activations(B guidance branches, 21-latent window)
    decode phase    = resident + DiT weights left on the GPU(mode) + VAE weights + VAE_DECODE_BYTES_PER_PIXEL * W*H

    resident        = VAE (fp32) + wav2vec2 (fp32) in `full` mode (the engine keeps them on the GPU); 0 otherwise
                      (the engine moves them in only while they run: they are counted in their own phase)
    DiT weights     = full / model_offload: all parameters in the model dtype (time MLPs fp32)
                      fp8: the layerwise-cast Linear weights at 1 byte, the rest as full
                      sequential_offload: the largest single module, twice (current + the one being fetched)
    DiT weights left on the GPU for decode: full and fp8 keep them, the offload modes do not
    activations     = ACT_BYTES_PER_ELEMENT * B * L * D + ACT_CONSTANT   (B branches, L=21*(H/16)*(W/16), D=1536)
                      for bf16; float32 doubles both

Coefficients were measured with `bench.memtrack.LiveBytes` (peak live tensor bytes) on the real-size DiT block and
the real-size Wan VAE (base_dim 96) at two small sizes each, then extrapolated linearly in tokens / pixels (the
flash/efficient SDPA kernels need O(L) memory; the math kernel needs O(L^2) and is not modelled). They were rounded
UP (DiT 26.7 -> 32 B/element, VAE encode 14.3 -> 16 KB/px, decode 19.7 -> 22 KB/px); FRAGMENTATION covers the
caching allocator and kernel workspaces, RESERVE the CUDA context of a process that has not created one yet.
The text (umT5, ~11.4 GB bf16) and image (CLIP, ~2.5 GB fp32) encoders run once per job before the DiT and are
freed after use; they are not part of the mode choice (see `encoder_fits`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .guidance import MAX_BRANCHES

FP8_SKIP = ("modulation", "norm", "patch_embedding", "time_embedding", "time_projection", "text_embedding",
            "img_emb", "head")

# fastest first; fp8 is approximate (changes outputs), so "auto" only considers it when allowed
EXACT_MODES_BY_SPEED = ("full", "model_offload", "sequential_offload")
APPROX_MODES_BY_SPEED = ("full", "model_offload", "fp8", "sequential_offload")

# --- the 1.3B model, counted on the meta device (tests/test_memory_modes.py re-counts them) -----------------------
DIT_PARAMS = 1_747_426_112          # StableAvatarDiT() incl. audio adapter
DIT_PARAMS_FP32 = 16_920_576        # time_embedding + time_projection (kept float32)
DIT_PARAMS_FP8 = 1_714_917_888      # parameters of the Linear layers that fp8 layerwise casting stores in 1 byte
DIT_LARGEST_MODULE = 14_164_992     # time_projection.1 (fp32); the FFN linears are 13.8 M
DIT_DIM = 1536
VAE_PARAMS = 126_892_531            # Wan2.1 VAE, base_dim 96
WAV2VEC_PARAMS = 94_371_712         # wav2vec2-base-960h (Wav2Vec2Model)
T5_BYTES = 11_400_000_000           # umT5-XXL encoder, bf16 file size
CLIP_BYTES = 2_530_000_000          # open-clip ViT-H/14 visual tower, fp32

# --- activation coefficients (measured, rounded up; see the module docstring) -------------------------------------
ACT_BYTES_PER_ELEMENT = 32          # per (branch x token x 1536) element at the peak of a DiT block, bf16
ACT_CONSTANT = 512 * 2**20          # text embedding input [3, 512, 4096], RoPE tables, audio context, cond tensors
VAE_ENCODE_BYTES_PER_PIXEL = 16_384 + 81 * 3 * 4   # causal-chunk encoder peak + the 81-frame fp32 input clip
VAE_DECODE_BYTES_PER_PIXEL = 22_528
FRAGMENTATION = 0.10
RESERVE = 768 * 2**20
WINDOW_LATENTS = 21
BRANCHES = MAX_BRANCHES             # default branch count: the widest guidance mode (guidance.py), what an engine
                                    # serving every mode must fit


def _bytes_per(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def dit_weight_bytes(mode: str, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of DiT weights on the GPU while it runs, per memory mode."""
    s = _bytes_per(dtype)
    full = (DIT_PARAMS - DIT_PARAMS_FP32) * s + DIT_PARAMS_FP32 * 4
    if mode in ("full", "model_offload"):
        return full
    if mode == "fp8":
        return full - DIT_PARAMS_FP8 * (s - 1)
    if mode == "sequential_offload":
        return 2 * DIT_LARGEST_MODULE * 4
    raise ValueError(f"unknown memory mode {mode!r}")


def activation_bytes(width: int, height: int, dtype: torch.dtype = torch.bfloat16, branches: int = BRANCHES) -> int:
    """Peak DiT activation bytes for one 21-latent window with `branches` guidance branches in one batch."""
    _check_size(width, height)
    tokens = WINDOW_LATENTS * (height // 16) * (width // 16)
    scale = 2 if _bytes_per(dtype) >= 4 else 1
    return scale * (ACT_BYTES_PER_ELEMENT * branches * tokens * DIT_DIM + ACT_CONSTANT)


def estimate_peak_bytes(mode: str, width: int, height: int, dtype: torch.dtype = torch.bfloat16,
                        branches: int = BRANCHES) -> dict:
    """Per-phase peak GPU bytes of one job and the overall requirement (`total`, margins included)."""
    _check_size(width, height)
    pixels = width * height
    vae = VAE_PARAMS * 4
    resident = vae + WAV2VEC_PARAMS * 4 if mode == "full" else 0
    vae_if_moved = 0 if mode == "full" else vae
    dit = dit_weight_bytes(mode, dtype)
    dit_kept = dit if mode in ("full", "fp8") else 0
    phases = {
        "encode": resident + vae_if_moved + VAE_ENCODE_BYTES_PER_PIXEL * pixels,
        "denoise": resident + dit + activation_bytes(width, height, dtype, branches),
        "decode": resident + dit_kept + vae_if_moved + VAE_DECODE_BYTES_PER_PIXEL * pixels,
    }
    phases["total"] = int(max(phases.values()) * (1 + FRAGMENTATION) + RESERVE)
    return phases


def choose_memory_mode(free_bytes: int, width: int, height: int, dtype: torch.dtype = torch.bfloat16, *,
                       allow_approximate: bool = False, branches: int = BRANCHES) -> str:
    """The fastest memory mode whose modelled peak fits in `free_bytes` of free GPU memory.

    Order (fastest first): full, model_offload, sequential_offload (fp8 before sequential_offload only with
    `allow_approximate`, because fp8 weight storage changes the outputs). When nothing fits, the smallest mode,
    sequential_offload, is returned: the job may still run out of memory, and the engine reports that as usual.
    """
    if free_bytes < 0:
        raise ValueError(f"free_bytes must be >= 0, not {free_bytes}")
    order = APPROX_MODES_BY_SPEED if allow_approximate else EXACT_MODES_BY_SPEED
    for mode in order:
        if estimate_peak_bytes(mode, width, height, dtype, branches)["total"] <= free_bytes:
            return mode
    return "sequential_offload"


def encoder_fits(kind: str, free_bytes: int, mode: str, width: int, height: int,
                 dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether the umT5 ("text") or CLIP ("image") encoder fits next to what `mode` keeps on the GPU during encode
    (in `full` mode the DiT, VAE and wav2vec2 are already resident). If not, run that encoder on the CPU."""
    need = {"text": T5_BYTES, "image": CLIP_BYTES}[kind]
    resident = 0
    if mode in ("full", "fp8"):
        resident += dit_weight_bytes(mode, dtype)
    if mode == "full":
        resident += (VAE_PARAMS + WAV2VEC_PARAMS) * 4
    return (resident + need) * (1 + FRAGMENTATION) + RESERVE <= free_bytes


def fits_now(nbytes: int, device: torch.device | str) -> bool:
    """Whether `nbytes` more (plus the fragmentation margin) fit in the device's free memory right now; always
    True off CUDA. For placing a model that runs once (umT5: ~11.4 GB, does not fit next to the DiT on 12-16 GB cards)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes * (1 + FRAGMENTATION) + 256 * 2**20 <= free


def resolve_memory_mode(mode: str, device: torch.device | str, width: int, height: int,
                        dtype: torch.dtype = torch.bfloat16, branches: int = BRANCHES) -> str:
    """`mode` itself, or for "auto" the mode `choose_memory_mode` picks for the device's free memory now
    ("full" on the CPU, where the modes make no difference)."""
    if mode != "auto":
        return mode
    device = torch.device(device)
    if device.type != "cuda":
        return "full"
    free, _total = torch.cuda.mem_get_info(device)
    return choose_memory_mode(free, width, height, dtype, branches=branches)


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise ValueError(f"width and height must be positive multiples of 16, not {width}x{height}")


# ------------------------------------------------------------------------------------------------------------------
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
