"""Wan2.1 causal video VAE: stock `diffusers.AutoencoderKLWan` loaded from the official `Wan2.1_VAE.pth`.

"""
from __future__ import annotations

import functools
import inspect
import itertools
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor

from .weights import ModelHolder, assign_state_dict, build_on_meta, checked, read_state_dict

# Official per-channel latent statistics (official wan_vae.py L629-639).
LATENT_MEAN: list[float] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]
LATENT_STD: list[float] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]

REAL_VAE_BASE_DIM = 96


# --------------------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------------------

def _vae_key_names(ckpt_keys: Iterable[str]) -> dict[str, str]:
    """diffusers key -> original Wan key, for error messages.

    diffusers' converter is a per-key rename, so converting {name: name} dicts inverts it: the checkpoint's own keys
    plus every name the Wan VAE layout can produce (to name keys that are absent from the file).
    """
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    def residual(prefix: str) -> list[str]:
        return [f"{prefix}.residual.{s}" for s in ("0.gamma", "2.weight", "2.bias", "3.gamma", "6.weight", "6.bias")]

    cands = [f"{p}.{s}" for p in ("conv1", "conv2", "encoder.conv1", "decoder.conv1") for s in ("weight", "bias")]
    for part in ("encoder", "decoder"):
        cands += [f"{part}.head.0.gamma", f"{part}.head.2.weight", f"{part}.head.2.bias"]
        cands += residual(f"{part}.middle.0") + residual(f"{part}.middle.2")
        cands += [f"{part}.middle.1.{s}" for s in ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight",
                                                     "proj.bias")]
        blocks = "downsamples" if part == "encoder" else "upsamples"
        for i in range(24):
            p = f"{part}.{blocks}.{i}"
            cands += residual(p) + [f"{p}.{m}.{s}" for m in ("shortcut", "resample.1", "time_conv")
                                    for s in ("weight", "bias")]
    names: dict[str, str] = {}
    for orig in itertools.chain(cands, ckpt_keys):  # checkpoint keys win over generated candidates
        (new,) = convert_wan_vae_to_diffusers({orig: orig}).keys()
        names[new] = orig
    return names


def vae_config(arch: dict | None) -> dict:
    """diffusers AutoencoderKLWan constructor arguments (built in code: no Hub config)."""
    arch = arch or {}
    return dict(
        base_dim=int(arch.get("base_dim", REAL_VAE_BASE_DIM)),
        z_dim=int(arch.get("z_dim", 16)),
        dim_mult=list(arch.get("dim_mult", [1, 2, 4, 4])),
        num_res_blocks=int(arch.get("num_res_blocks", 2)),
        attn_scales=list(arch.get("attn_scales", [])),
        temperal_downsample=list(arch.get("temporal_downsample", [False, True, True])),  # diffusers' spelling
        latents_mean=list(arch.get("latent_mean", LATENT_MEAN)),
        latents_std=list(arch.get("latent_std", LATENT_STD)),
    )


def load_vae(path, arch: dict | None, device="cpu", dtype=torch.float32) -> "WanVAE":
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path = Path(path)
    raw = read_state_dict(path)
    cfg = vae_config(arch)
    model = build_on_meta(lambda: AutoencoderKLWan(**cfg))
    names = functools.cache(lambda: _vae_key_names(raw.keys()))  # only needed for an error message
    sd = {k: checked(names().get(k, k), v, path).to(dtype) for k, v in convert_wan_vae_to_diffusers(raw).items()}
    assign_state_dict(model, sd, path, name_of=lambda k: names().get(k, k))
    model.eval().requires_grad_(False)
    return WanVAE(model, cfg["latents_mean"], cfg["latents_std"]).to(device)


class WanVAE(ModelHolder):
    """Normalised-latent interface of the official wrapper (`scale = [mean, 1/std]`) around AutoencoderKLWan."""

    def __init__(self, model, latent_mean: list[float], latent_std: list[float]):
        self.model = model
        self._mean = torch.tensor(latent_mean, dtype=torch.float32)
        self._std = torch.tensor(latent_std, dtype=torch.float32)

    def scale(self) -> tuple[Tensor, Tensor]:
        """(mean, 1/std): the official wrapper's `scale`, computed in the model dtype, shaped [1, C, 1, 1, 1]."""
        mean = self._mean.to(self.device, self.dtype).view(1, -1, 1, 1, 1)
        inv_std = 1.0 / self._std.to(self.device, self.dtype).view(1, -1, 1, 1, 1)
        return mean, inv_std

    @torch.no_grad()
    def encode_mode(self, video: Tensor) -> Tensor:
        """[B,3,F,H,W] in [-1,1] -> normalised posterior mode [B,16,(F-1)//4+1,H/8,W/8]."""
        mean, inv_std = self.scale()
        video = video.to(self.device, self.dtype)
        # One sample at a time like the official wrapper (diffusers would batch the causal chunks).
        mus = [self.model.encode(x).latent_dist.mode() for x in video.split(1)]
        # `* (1/std)` rather than `/ std`: bit-identical to the official `scale[1]` multiply (`/std` differs ~1e-7).
        return (torch.cat(mus) - mean) * inv_std

    @torch.no_grad()
    def decode_stream(self, latents: Tensor) -> Iterator[Tensor]:
        """[1,16,T,h,w] normalised latents -> CPU float32 chunks [3,f,H,W] in [-1,1]: f = 1, then 4 per latent.

        Mirrors AutoencoderKLWan._decode (post_quant_conv on the whole sequence, then the decoder one latent frame
        at a time carrying the causal conv cache), but yields each chunk instead of concatenating, so memory stays
        flat in T while the result equals the whole decode bit for bit. The cache lives in local lists, not on the
        model, so the model's own encode/decode state is untouched.
        """
        if latents.dim() != 5 or latents.shape[0] != 1:
            raise ValueError(f"decode_stream expects latents [1,C,T,h,w], got {tuple(latents.shape)}")
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        model = self.model
        if model.config.patch_size is not None or model.use_tiling:
            raise RuntimeError("decode_stream supports the Wan2.1 VAE without tiling (tiling changes results)")
        mean, inv_std = self.scale()
        # `z / (1/std) + mean` reproduces the official decode exactly (`z * std + mean` differs ~2e-6).
        z = latents.to(self.device, self.dtype) / inv_std + mean
        x = model.post_quant_conv(z)  # whole sequence, as _decode does (a 1x1x1 conv: same size as the latents)
        feat_cache = [None] * sum(isinstance(m, WanCausalConv3d) for m in model.decoder.modules())
        first = {"first_chunk": True} if "first_chunk" in inspect.signature(model.decoder.forward).parameters else {}
        for i in range(x.shape[2]):
            # feat_idx restarts at 0 per chunk; feat_cache carries the last frames of every causal conv forward.
            out = model.decoder(x[:, :, i:i + 1], feat_cache=feat_cache, feat_idx=[0], **(first if i == 0 else {}))
            # Wan2.1 has no patch_size (that is Wan2.2), so no unpatchify here.
            yield out.clamp(-1.0, 1.0)[0].float().cpu()

    def decode(self, latents: Tensor) -> Tensor:
        """[1,16,T,h,w] -> [1,3,4(T-1)+1,H,W] (CPU float32)."""
        return torch.cat(list(self.decode_stream(latents)), dim=1).unsqueeze(0)
