"""StableAvatar's timestep-aware audio adapter (docs/method.md §6.1; official `vocal_projector_fantasy_1B.py`).

wav2vec2 tokens [K, L_a, 768] -> per-latent-frame audio context [K, F_w, N_a, D] for the DiT's audio attention:

1. `proj_model`: Linear(768 -> D, no bias) + LayerNorm (eps 1e-5).
2. Split into one widened token window per latent frame (`audio_windows.split_audio_per_latent_frame`).
3. Two `AudioAdapterBlock`s, modulated by the DiT's own timestep projection `e0` (hence "timestep-aware"):
   a modulated residual where a DiT block has self-attention (there is NO attention in that slot), a cross-attention
   in which each latent frame's audio tokens read that frame's patch tokens of the noisy latent (no masks, so in a
   padded final window the surplus audio windows read zero tokens, as official), and a modulated FFN.
4. `final_head`: modulated LayerNorm (by `e`) + Linear.

Module and parameter names are the official ones (`proj_model.proj`, `blocks.j.cross_attn.q`, `final_head.final_proj`,
...), so the official state dict loads under the DiT's `vocal_projector.` prefix without renaming.

Precision: the residual stream runs in float32 and only linears/attention run in the compute dtype. That is what
the official bf16 run does in effect: it runs under `autocast(bf16)`, where the projection LayerNorm returns fp32 and
every residual add then promotes to fp32. In float32 this is simply fp32 throughout.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import FP32LayerNorm, RMSNorm
from torch import Tensor, nn

from .audio_windows import split_audio_per_latent_frame


class VocalProjModel(nn.Module):
    """wav2vec2 features -> adapter width (`proj_model.*`)."""

    def __init__(self, audio_in_dim: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Linear(audio_in_dim, dim, bias=False)
        self.norm = FP32LayerNorm(dim, eps=eps)

    def forward(self, audio: Tensor) -> Tensor:
        return self.norm(self.proj(audio).float())  # float32 out: starts the fp32 residual stream


class VocalCrossAttention(nn.Module):
    """Audio tokens (queries) attend to the patch tokens of their own latent frame (keys/values), per frame."""

    def __init__(self, dim: int, dit_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dit_dim, dim)
        self.v = nn.Linear(dit_dim, dim)
        self.o = nn.Linear(dim, dim)
        # RMSNorm over the full width before the head split, as the DiT's qk-norm
        self.norm_q = RMSNorm(dim, eps=eps)
        self.norm_k = RMSNorm(dim, eps=eps)

    def forward(self, x: Tensor, latent_tokens: Tensor, num_frames: int) -> Tensor:
        # x: [K, F*N_a, dim] (compute dtype); latent_tokens: [1 or K, F*T, dit_dim] with T tokens per latent frame
        batch, heads = x.shape[0], self.num_heads
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(latent_tokens))
        v = self.v(latent_tokens)
        # All K audio rows read the same latent tokens: project them once, broadcast afterwards.
        k, v = (t.expand(batch, -1, -1) for t in (k, v))
        # [K, F*n, dim] -> [K*F, n, heads, head_dim]: one attention problem per (row, latent frame)
        q, k, v = (t.reshape(batch * num_frames, t.shape[1] // num_frames, heads, -1) for t in (q, k, v))
        out = dispatch_attention_fn(q, k, v)
        return self.o(out.reshape(batch, x.shape[1], -1))


class AudioAdapterBlock(nn.Module):
    """`VocalAttentionBlock`: DiT-style block without self-attention, modulated by `e0`."""

    def __init__(self, dim: int, dit_dim: int, ffn_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = FP32LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.cross_attn = VocalCrossAttention(dim, dit_dim, num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, e0: Tensor, latent_tokens: Tensor, num_frames: int) -> Tensor:
        # x: [K, F*N_a, dim] float32; e0: [1 or K, 6, dim] compute dtype
        dtype = latent_tokens.dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e0).chunk(6, dim=1)

        # 1. modulated residual in the slot where a DiT block has self-attention (official: no attention here)
        x = x + (self.norm1(x) * (1 + scale1) + shift1) * gate1

        # 2. per-latent-frame cross-attention to the noisy latent's patch tokens (norm3 affine, not modulated)
        x = x + self.cross_attn(self.norm3(x).to(dtype), latent_tokens, num_frames)

        # 3. modulated feed-forward
        h = (self.norm2(x) * (1 + scale2) + shift2).to(dtype)
        return x + self.ffn(h) * gate2


class AudioAdapterHead(nn.Module):
    """`Final_Head`: modulated LayerNorm (by `e`) + Linear."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.final_proj = nn.Linear(dim, dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: Tensor, e: Tensor, dtype: torch.dtype) -> Tensor:
        shift, scale = (self.modulation + e.unsqueeze(1)).chunk(2, dim=1)
        return self.final_proj((self.norm(x) * (1 + scale) + shift).to(dtype))


class AudioAdapter(nn.Module):
    """`FantasyTalkingVocalCondition1BModel` (the DiT's `vocal_projector`).

    Keys: proj_model.proj.weight, proj_model.norm.{weight,bias}, blocks.{j}.{modulation, norm3.*, cross_attn.*, ffn.*},
    final_head.{modulation, final_proj.*}. The adapter width must equal the DiT width (it adds the DiT's e0/e).
    """

    def __init__(self, audio_in_dim: int = 768, dim: int = 1536, num_blocks: int = 2, num_heads: int = 8,
                 ffn_dim: int | None = None, proj_eps: float = 1e-5, eps: float = 1e-6, expand_length: int = 4):
        super().__init__()
        self.expand_length = expand_length
        self.proj_model = VocalProjModel(audio_in_dim, dim, proj_eps)
        self.blocks = nn.ModuleList(
            AudioAdapterBlock(dim, dim, ffn_dim or 2 * dim, num_heads, eps) for _ in range(num_blocks))
        self.final_head = AudioAdapterHead(dim, eps)

    def forward(self, audio: Tensor, latent_tokens: Tensor, e0: Tensor, e: Tensor, num_latent_frames: int,
                audio_num_frames: int = 81) -> Tensor:
        """audio [K, L_a, in_dim]; latent_tokens [1 or K, seq_len, D] (patch-embedded, zero-padded DiT input,
        compute dtype); e0 [1 or K, 6, D]; e [1 or K, D] -> audio context [K, num_latent_frames, N_a, D].

        `audio_num_frames` is the video length the token sequence is ASSUMED to span (official: always the clip
        length, 81). It gives (audio_num_frames - 1)//4 + 1 windows; when that is more than `num_latent_frames`
        (an unpadded short final window) the surplus windows, which could only meet padding, are dropped.
        """
        dtype = latent_tokens.dtype
        seq_len = latent_tokens.shape[1]
        if seq_len % num_latent_frames:
            raise ValueError(f"{seq_len} latent tokens do not split into {num_latent_frames} latent frames")

        # 1. projection + per-latent-frame token windows -> [K, F, N_a, D] float32
        windows = split_audio_per_latent_frame(self.proj_model(audio.to(dtype)), audio_num_frames,
                                               self.expand_length)
        if windows.shape[1] < num_latent_frames:
            raise ValueError(f"audio_num_frames={audio_num_frames} gives {windows.shape[1]} audio windows, "
                             f"fewer than the {num_latent_frames} latent frames")
        windows = windows[:, :num_latent_frames]
        batch, frames, window_len, dim = windows.shape
        x = windows.reshape(batch, frames * window_len, dim)

        # 2. timestep-modulated blocks reading the noisy latent
        for block in self.blocks:
            x = block(x, e0, latent_tokens, frames)

        # 3. head -> [K, F, N_a, D] in the compute dtype
        return self.final_head(x, e, dtype).reshape(batch, frames, window_len, dim)
