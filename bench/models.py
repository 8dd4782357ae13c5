"""Random-weight models at the real StableAvatar sizes (or tiny ones for --smoke), and the FLOP model.

Speed does not depend on the weights' values, so the real architectures with random weights measure it honestly.
Weights are drawn with std 1/sqrt(fan_in) (norm scales 1, biases 0) so activations stay finite in bf16 and fp8.
Models are built on the meta device and materialised with `to_empty`, which skips PyTorch's slow default init.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stableavatar.guidance import MAX_BRANCHES

REPO = Path(__file__).resolve().parent.parent
TINY_ARCH = REPO / "tests" / "data" / "parity" / "checkpoints" / "arch.json"


@dataclass
class Scale:
    """Architecture dims and benchmark sizes of one harness run."""
    name: str                                   # "real" or "smoke"
    dit: dict                                   # StableAvatarDiT kwargs
    vae: dict | None                            # arch dict for stableavatar.vae.vae_config (None = real)
    wav2vec: dict                               # transformers Wav2Vec2Config kwargs
    t5: dict | None                             # arch dict for stableavatar.text_encoder._config (None = real)
    clip: dict | None                           # arch dict for stableavatar.image_encoder._arch (None = real)
    sizes: list[tuple[int, int]] = field(default_factory=list)   # (width, height)
    steps: int = 2                              # timed denoising steps per configuration
    warmup: int = 1
    pipeline_seconds: float = 5.0               # audio length of the baseline-vs-ours pipeline rows
    text_tokens: tuple[int, int] = (126, 9)     # real token counts of the official negative / default prompts
    factor_sizes: int = 2                       # how many sizes get the one-factor-at-a-time rows
    vae_frames: int = 81                        # frames of the conditioning clip the VAE encodes
    vae_latents: int = 21                       # latents the VAE decode rows decode (one window)
    threads: int | None = None                  # torch CPU threads (smoke: 1, the CI box is shared)


def real_scale() -> Scale:
    return Scale("real", dit={}, vae=None, wav2vec={}, t5=None, clip=None,
                 sizes=[(512, 512), (480, 832)], steps=2, warmup=1)


def smoke_scale() -> Scale:
    """The parity tree's tiny architecture (tests/data/parity/checkpoints/arch.json) at tiny sizes, one thread."""
    arch = json.loads(TINY_ARCH.read_text())
    from stableavatar.dit import StableAvatarDiT

    dit = StableAvatarDiT.config_from_official({}, arch)
    w = arch["wav2vec2"]
    wav2vec = dict(hidden_size=w["hidden_size"], num_hidden_layers=w["num_hidden_layers"],
                   num_attention_heads=w["num_attention_heads"], intermediate_size=w["intermediate_size"],
                   conv_dim=tuple(w["conv_dim"]), conv_kernel=tuple(w["conv_kernel"]),
                   conv_stride=tuple(w["conv_stride"]), num_conv_pos_embeddings=w["num_conv_pos_embeddings"],
                   num_conv_pos_embedding_groups=w["num_conv_pos_embedding_groups"], conv_bias=w["conv_bias"],
                   feat_extract_norm=w["feat_extract_norm"], do_stable_layer_norm=w["do_stable_layer_norm"])
    # 3.6 s of audio: 2 windows in both compat modes (official needs > 21 latents)
    return Scale("smoke", dit=dit, vae=arch["vae"], wav2vec=wav2vec, t5=arch["t5"], clip=arch["clip"],
                 sizes=[(32, 32), (32, 48)], steps=1, warmup=1, pipeline_seconds=3.6, text_tokens=(126, 9),
                 factor_sizes=1, vae_frames=9, vae_latents=3, threads=1)


# ------------------------------------------------------------------------------------------------------------------
def random_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and buffer in place: N(0, 1/fan_in) matrices, ones for norm scales, zeros for biases."""
    gens: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            g = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            leaf = name.rsplit(".", 1)[-1]
            if "modulation" in name:
                _normal_(p, 1 / math.sqrt(p.shape[-1]), g)
            elif p.ndim >= 2:
                _normal_(p, 1 / math.sqrt(max(1, p[0].numel())), g)
            elif leaf in ("weight", "gamma", "g") or "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        for _name, b in module.named_buffers():
            if b.is_floating_point():
                b.zero_()
    return module


def _normal_(p: torch.Tensor, std: float, g: torch.Generator) -> None:
    # drawn in float32 on the parameter's device in slices (bounded temporary memory), then copied in
    flat = p.view(-1)
    step = 1 << 24
    for i in range(0, flat.numel(), step):
        n = min(step, flat.numel() - i)
        flat[i:i + n].copy_(torch.randn(n, generator=g, device=p.device).mul_(std))


def build_dit(scale: Scale, dtype: torch.dtype, init_device="cpu"):
    """StableAvatarDiT with random weights, returned on the CPU: model dtype `dtype`, time MLPs float32 (as
    from_official). The numbers are drawn on `init_device` (a GPU draws 1.7 B numbers in well under a second,
    one CPU core needs about a minute)."""
    from stableavatar.dit import StableAvatarDiT

    with torch.device("meta"):
        model = StableAvatarDiT(**scale.dit)
    fp32 = tuple(StableAvatarDiT._keep_in_fp32_modules)
    for name, mod in model.named_children():
        mod.to_empty(device=init_device).to(torch.float32 if name.startswith(fp32) else dtype)
        random_init_(mod)
        mod.to("cpu")
    return model.eval().requires_grad_(False)


def clone_dit(master, scale: Scale):
    """A fresh module sharing nothing mutable with `master` (placement modes move/cast/hook their model)."""
    from stableavatar.dit import StableAvatarDiT

    with torch.device("meta"):
        model = StableAvatarDiT(**scale.dit)
    model.load_state_dict({k: v.clone() for k, v in master.state_dict().items()}, assign=True)
    return model.eval().requires_grad_(False)


def build_vae(scale: Scale, device):
    from diffusers import AutoencoderKLWan
    from stableavatar.vae import WanVAE, vae_config

    cfg = vae_config(scale.vae)
    with torch.device("meta"):
        model = AutoencoderKLWan(**cfg)
    model = random_init_(model.to_empty(device=device).float()).eval().requires_grad_(False)  # no buffers
    return WanVAE(model, cfg["latents_mean"], cfg["latents_std"])


def build_audio_encoder(scale: Scale, device):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from stableavatar.audio_features import AudioEncoder

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config(**scale.wav2vec))
    model = random_init_(model.to_empty(device=device).float()).eval().requires_grad_(False)  # no buffers
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=False)
    return AudioEncoder(model, extractor).to(device)


def build_text_encoder(scale: Scale, device, dtype):
    from transformers import UMT5EncoderModel
    from stableavatar.text_encoder import _config

    _a, config = _config(scale.t5)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model = model.to_empty(device=device).to(dtype)
    model.encoder.embed_tokens.weight = model.shared.weight
    return random_init_(model).eval().requires_grad_(False)


def build_image_encoder(scale: Scale, device):
    from transformers import CLIPVisionModel
    from stableavatar.image_encoder import ImageEncoder, _arch, _rebuild_position_ids, _vision_config

    a = _arch(scale.clip)
    with torch.device("meta"):
        model = CLIPVisionModel(_vision_config(a))
    model = random_init_(model.to_empty(device=device).float()).eval().requires_grad_(False)
    _rebuild_position_ids(model)
    vision = getattr(model, "vision_model", model)
    vision.embeddings.position_ids = vision.embeddings.position_ids.to(device)
    vision.post_layernorm = nn.Identity()
    return ImageEncoder(model, a["mean"], a["std"], int(a["image_size"]))


# ------------------------------------------------------------------------------------------------------------------
def dit_flops(cfg, width: int, height: int, branches: int = MAX_BRANCHES, audio_rows: int = 1,
              audio_tokens: int = 161, text_tokens: int = 512, image_tokens: int = 257, latents: int = 21) -> dict:
    """Matmul FLOPs (2 per multiply-add) of ONE DiT forward over one window with `branches` guidance branches.

    Counted: every Linear/Conv matmul and the attention matmuls (QK^T and PV) of the DiT blocks, the embeddings, the
    head and the audio adapter. Not counted: norms, RoPE, softmax, GELU, modulation and other elementwise work
    (< 1 % of the total at the real sizes). Text is zero-padded to `text_tokens` (512) rows, all attended, as official.

    per branch, per block, L = latents*(H/16)*(W/16) tokens, D = dim, F = ffn_dim:
        self-attention   q,k,v,o: 4*2*L*D^2            scores + weighted sum: 2*2*L^2*D
        cross-attention  q,o: 2*2*L*D^2; k,v of text / image / audio context: 2*2*(512+257+latents*N_a)*D^2
                         attention to text, image and the frame's N_a audio tokens: 2*2*L*(512+257+N_a)*D
        FFN              2*2*L*D*F
    audio adapter (once per forward over `audio_rows` rows; keys/values from the last branch's L tokens):
        projection 2*rows*L_a*768*D; per block q,o: 2*2*rows*n*D^2 (n = latents*N_a), k,v: 2*2*L*D^2,
        attention 2*2*rows*N_a*L*D, FFN 2*2*rows*n*D*F_a; head 2*rows*n*D^2
    """
    c = dict(cfg)
    D, Fd, layers = c["dim"], c["ffn_dim"], c["num_layers"]
    pt, ph, pw = c["patch_size"]
    L = latents * (height // 8 // ph) * (width // 8 // pw)
    ctx = text_tokens + image_tokens
    n_a = _audio_window_len(audio_tokens, c.get("audio_expand_length", 4))
    audio_ctx = latents * n_a
    blk_self_lin = 8 * L * D * D
    blk_self_att = 4 * L * L * D
    blk_cross_lin = 4 * L * D * D + 4 * (ctx + audio_ctx) * D * D
    blk_cross_att = 4 * L * (ctx + n_a) * D
    blk_ffn = 4 * L * D * Fd
    per_branch_blocks = layers * (blk_self_lin + blk_self_att + blk_cross_lin + blk_cross_att + blk_ffn)
    embed = (2 * L * c["in_dim"] * pt * ph * pw * D
             + 2 * text_tokens * (c["text_dim"] * D + D * D)
             + 2 * image_tokens * (c["image_dim"] ** 2 + c["image_dim"] * D)
             + 2 * L * D * pt * ph * pw * c["out_dim"])
    fa = c.get("audio_ffn_dim") or 2 * D
    n = latents * n_a
    ab = c.get("audio_num_blocks", 2)
    adapter = (2 * audio_rows * audio_tokens * c.get("audio_in_dim", 768) * D
               + ab * (4 * audio_rows * n * D * D + 4 * L * D * D + 4 * audio_rows * n_a * L * D
                       + 4 * audio_rows * n * D * fa)
               + 2 * audio_rows * n * D * D)
    attention = branches * layers * (blk_self_att + blk_cross_att) + ab * 4 * audio_rows * n_a * L * D
    total = branches * (per_branch_blocks + embed) + adapter
    return {"total": total, "attention": attention, "linear": total - attention, "tokens": L}


def _audio_window_len(audio_tokens: int, expand: int) -> int:
    from stableavatar.audio_windows import audio_token_ranges

    s, e = audio_token_ranges(audio_tokens, 81)[0]
    return e - s + 1 + 2 * expand
