"""StableAvatar's audio-conditioned DiT: Wan2.1-Fun-1.3B-InP + per-latent-frame audio cross-attention (docs/method.md §5).

Parameter names are the ORIGINAL Wan names (`blocks.i.self_attn.q`, `blocks.i.cross_attn.k_vocal`,
`vocal_projector.blocks.j.cross_attn.q`, ...), so the official `transformer3d-*.pt` (1143 keys) loads with
`strict=True` and no renaming. The base class is diffusers' `ModelMixin` + `ConfigMixin`, so diffusers' model-level
features (`enable_layerwise_casting`, `enable_group_offload`, model CPU offload, attention backends through
`dispatch_attention_fn`, `compile_repeated_blocks`) apply unchanged.

Why not the stock `diffusers.WanTransformer3DModel.forward`: its blocks reproduce the Wan maths,
but its forward
1. has no audio term: the per-latent-frame audio attention needs a custom attn2 processor plus `k_vocal`/`v_vocal`;
2. does not expose what the audio adapter reads: the patch-embedded, zero-padded tokens of the last branch and its
   `e0`/`e`, which would need hooks on `patch_embedding` and `condition_embedder`;
3. cannot reproduce the official short final window: tokens are zero-padded AFTER patch embedding to `seq_len`,
   padding stays unrotated and unmasked (two more hooks plus zero-padded latents and an output slice);
4. uses a float32 sinusoid (official: float64, cos first; within tolerance but not exact);
and loading the official checkpoints would need a key conversion whose substring rules mangle the 48 audio keys.
An own forward over modules with the original names is shorter than those hooks and loads the file as released.

Precision (docs/method.md §10): weights and activations in the model dtype (float32 for parity, bfloat16 on GPU as official),
LayerNorm/RMSNorm computed in float32 and cast back, RoPE applied in float32, the timestep sinusoid in float64 and the
time MLPs in float32 (`_keep_in_fp32_modules`, as official under `autocast(float32)`), then `e`/`e0` cast to the model
dtype. The audio adapter keeps its small residual stream in float32 (see adapter.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm, RMSNorm
from torch import Tensor, nn

from .adapter import AudioAdapter
from .audio_windows import audio_token_ranges
from .weights import check_keys, checked, read_state_dict
from .errors import CheckpointError

AUDIO_WEIGHTS_HINT = ("download StableAvatar-1.3B/transformer3d-square.pt (or transformer3d-rec-vec.pt) from the "
                      "Hugging Face repo FrancisRing/StableAvatar and pass it as the transformer checkpoint")


# --------------------------------------------------------------------------------------------------------------------
# Time and position embeddings
# --------------------------------------------------------------------------------------------------------------------

def sinusoidal_embedding_1d(dim: int, t: Tensor) -> Tensor:
    """Official `sinusoidal_embedding_1d`: float64, cos first, frequencies 10000^(-k/(dim/2)). [B] -> [B, dim] fp64."""
    half = dim // 2
    position = t.to(torch.float64)
    freqs = torch.pow(10000, -torch.arange(half, device=t.device, dtype=torch.float64).div(half))
    sinusoid = torch.outer(position, freqs)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def rope_cos_sin(head_dim: int, grid: tuple[int, int, int], seq_len: int, device: torch.device,
                 theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables [seq_len, 1, head_dim/2] (fp32) of the 3-D RoPE for a (f, h, w) token grid in row-major order.

    The head_dim/2 complex pairs are split [c - 2(c//3), c//3, c//3] over (time, height, width) (22/21/21 for 128),
    with theta^(-2j/d_axis) frequencies per axis. Positions restart at 0 in every window. Tokens past f*h*w (the
    zero padding of a short final window) get cos=1, sin=0: left unrotated, as official. Angles in float64.
    """
    f, h, w = grid
    c = head_dim // 2
    split = [c - 2 * (c // 3), c // 3, c // 3]
    axes = []
    for n, pairs in zip(grid, split):
        inv_freq = 1.0 / torch.pow(theta, torch.arange(0, 2 * pairs, 2, device=device, dtype=torch.float64)
                                   .div(2 * pairs))
        axes.append(torch.outer(torch.arange(n, device=device, dtype=torch.float64), inv_freq))
    angles = torch.cat([axes[0][:, None, None].expand(f, h, w, -1),
                        axes[1][None, :, None].expand(f, h, w, -1),
                        axes[2][None, None, :].expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, c)
    angles = F.pad(angles, (0, 0, 0, 0, 0, seq_len - f * h * w))  # angle 0 = identity for padding tokens
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of x [B, S, heads, head_dim] in float32; returns float32."""
    x = x.float().unflatten(-1, (-1, 2))
    real, imag = x[..., 0], x[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


# --------------------------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------------------------

class WanSelfAttention(nn.Module):
    """Self-attention over all seq_len tokens (padding included and unmasked, as official), qk RMSNorm + 3-D RoPE."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=eps)  # over the full width, before the head split
        self.norm_k = RMSNorm(dim, eps=eps)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(2, heads)
        k = self.norm_k(self.k(x)).unflatten(2, heads)
        v = self.v(x).unflatten(2, heads)
        q, k = apply_rope(q, *rope).to(v.dtype), apply_rope(k, *rope).to(v.dtype)
        return self.o(dispatch_attention_fn(q, k, v).flatten(2))


class WanAudioCrossAttention(nn.Module):
    """`WanI2VTalkingCrossAttention`: one query, three sources summed before the output projection.

    text and image: ordinary cross-attention (qk RMSNorm). audio: per latent frame, the tokens of frame f attend only
    to frame f's audio window, with NO norm on the audio keys.
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=eps)
        self.norm_k = RMSNorm(dim, eps=eps)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_k_img = RMSNorm(dim, eps=eps)
        self.k_vocal = nn.Linear(dim, dim)
        self.v_vocal = nn.Linear(dim, dim)

    def forward(self, x: Tensor, text: Tensor, image: Tensor, audio: Tensor) -> Tensor:
        # x [B, S, D]; text [B, text_len, D]; image [B, 257, D]; audio [B, F_w, N_a, D] with S = F_w * tokens/frame
        batch, seq_len, _ = x.shape
        frames = audio.shape[1]
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(2, heads)

        text_out = dispatch_attention_fn(q, self.norm_k(self.k(text)).unflatten(2, heads),
                                         self.v(text).unflatten(2, heads))
        image_out = dispatch_attention_fn(q, self.norm_k_img(self.k_img(image)).unflatten(2, heads),
                                          self.v_img(image).unflatten(2, heads))
        # audio: [B, S, heads, hd] -> [B*F_w, S/F_w, heads, hd] against [B*F_w, N_a, heads, hd]
        audio_out = dispatch_attention_fn(
            q.reshape(batch * frames, seq_len // frames, *q.shape[2:]),
            self.k_vocal(audio).flatten(0, 1).unflatten(2, heads),
            self.v_vocal(audio).flatten(0, 1).unflatten(2, heads),
        ).reshape(batch, seq_len, -1)
        return self.o(text_out.flatten(2) + image_out.flatten(2) + audio_out)


# --------------------------------------------------------------------------------------------------------------------
# Transformer block, head, image projection
# --------------------------------------------------------------------------------------------------------------------

class WanAttentionBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps=eps, elementwise_affine=True)  # cross_attn_norm=True
        self.cross_attn = WanAudioCrossAttention(dim, num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, e0: Tensor, rope: tuple[Tensor, Tensor], text: Tensor, image: Tensor,
                audio: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e0).chunk(6, dim=1)

        # 1. self-attention (modulated)
        x = x + self.self_attn(self.norm1(x) * (1 + scale1) + shift1, rope) * gate1

        # 2. cross-attention to text, image and this frame's audio (affine norm3, not modulated)
        x = x + self.cross_attn(self.norm3(x), text, image, audio)

        # 3. feed-forward (modulated)
        return x + self.ffn(self.norm2(x) * (1 + scale2) + shift2) * gate2


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float = 1e-6):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        shift, scale = (self.modulation + e.unsqueeze(1)).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class MLPProj(nn.Module):
    """`img_emb`: CLIP tokens -> DiT width (LayerNorm, Linear, exact GELU, Linear, LayerNorm; torch eps 1e-5)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(FP32LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
                                  nn.Linear(in_dim, out_dim), FP32LayerNorm(out_dim))

    def forward(self, image_embeds: Tensor) -> Tensor:
        return self.proj(image_embeds)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------

class StableAvatarDiT(ModelMixin, ConfigMixin):
    """`WanTransformer3DFantasyModel` (1.3B): I2V Wan DiT + audio adapter (`vocal_projector`) + per-block `k/v_vocal`.

    Defaults are the released 1.3B model. Use `from_official` to load the official checkpoint files.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["WanAttentionBlock"]
    _repeated_blocks = ["WanAttentionBlock"]
    _keep_in_fp32_modules = ["time_embedding", "time_projection"]
    _skip_layerwise_casting_patterns = ["patch_embedding", "text_embedding", "img_emb", "norm"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        in_dim: int = 36,
        dim: int = 1536,
        ffn_dim: int = 8960,
        freq_dim: int = 256,
        text_dim: int = 4096,
        text_len: int = 512,
        image_dim: int = 1280,
        out_dim: int = 16,
        num_heads: int = 12,
        num_layers: int = 30,
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        audio_in_dim: int = 768,
        audio_num_blocks: int = 2,
        audio_num_heads: int = 8,
        audio_ffn_dim: int | None = None,
        audio_proj_eps: float = 1e-5,
        audio_eps: float = 1e-6,
        audio_expand_length: int = 4,
    ):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim {dim} must split into {num_heads} heads of even size")
        patch_size = tuple(patch_size)

        # embeddings
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.img_emb = MLPProj(image_dim, dim)

        # audio adapter (its width is the DiT width: it adds the DiT's e0/e to its own modulation tables)
        self.vocal_projector = AudioAdapter(audio_in_dim, dim, audio_num_blocks, audio_num_heads,
                                            audio_ffn_dim or 2 * dim, audio_proj_eps, audio_eps, audio_expand_length)

        # blocks and head
        self.blocks = nn.ModuleList(WanAttentionBlock(dim, ffn_dim, num_heads, eps) for _ in range(num_layers))
        self.head = Head(dim, out_dim, patch_size, eps)

    # ---------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: list[Tensor],
        clip_fea: Tensor,
        y: Tensor,
        audio_features: Tensor,
        audio_index: list[int | None],
        seq_len: int | None = None,
        audio_num_frames: int = 81,
    ) -> Tensor:
        """Velocity for a batch of guidance branches that share one latent window.

        x [B, 16, F, H, W] noisy latents; t [B] float timesteps (sigma*1000); context: B un-padded text embeddings
        [L_i, text_dim]; clip_fea [B, 257, image_dim]; y [B, 20, F, H, W] (mask + reference latents);
        audio_features [K, L_a, 768] wav2vec2 tokens; audio_index (len B): branch b gets the adapter output of
        audio_features[audio_index[b]], or an all-zero audio context (after the adapter) for None.
        seq_len: token count to zero-pad to (official: 21*h*w, so a short final window is padded); None = no padding.
        audio_num_frames: video frames the audio tokens are assumed to span (official: the clip length, 81).
        The adapter reads the LAST branch's tokens and e0/e (all branches share x and y in the official sampler).
        Returns [B, 16, F, H, W] in the model dtype.
        """
        cfg = self.config
        batch = x.shape[0]
        if len(context) != batch or len(audio_index) != batch or clip_fea.shape[0] != batch or y.shape[0] != batch:
            raise ValueError(f"batch mismatch: x {batch}, context {len(context)}, audio_index {len(audio_index)}, "
                             f"clip_fea {clip_fea.shape[0]}, y {y.shape[0]}")
        dtype = self.patch_embedding.weight.dtype  # compute dtype (patch_embedding is never layerwise-cast)

        # 1. patch embedding -> tokens [B, L, D] in (f, h, w) order, zero-padded to seq_len AFTER embedding
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])
        frame_tokens = grid[1] * grid[2]
        num_tokens = math.prod(grid)
        tokens = tokens.flatten(2).transpose(1, 2)
        seq_len = num_tokens if seq_len is None else seq_len
        if seq_len < num_tokens or seq_len % frame_tokens:
            raise ValueError(f"seq_len {seq_len} must be a multiple of {frame_tokens} tokens per frame and >= "
                             f"{num_tokens}")
        if max(grid) > cfg.rope_max_seq_len:
            raise ValueError(f"token grid {grid} exceeds the RoPE table length {cfg.rope_max_seq_len}")
        tokens = F.pad(tokens, (0, 0, 0, seq_len - num_tokens))
        latent_frames = seq_len // frame_tokens  # per-frame audio attention groups, padding frames included

        # 2. time: float64 sinusoid -> float32 MLPs -> e [B, D], e0 [B, 6, D] in the model dtype
        time_dtype = self.time_embedding[0].weight.dtype
        e = self.time_embedding(sinusoidal_embedding_1d(cfg.freq_dim, t).to(time_dtype))
        e0 = self.time_projection(e).unflatten(1, (6, cfg.dim)).to(dtype)
        e = e.to(dtype)

        # 3. text (zero-padded to text_len rows, all attended as official) and image context
        if max(u.shape[0] for u in context) > cfg.text_len:
            raise ValueError(f"text embeddings longer than text_len={cfg.text_len}")
        text = torch.stack([F.pad(u.to(dtype), (0, 0, 0, cfg.text_len - u.shape[0])) for u in context])
        text = self.text_embedding(text)
        image = self.img_emb(clip_fea.to(dtype))

        # 4. audio context [B, F_w, N_a, D]: adapter once over the K feature rows, on the last branch's tokens
        audio = self._audio_context(audio_features, audio_index, tokens[-1:], e0[-1:], e[-1:], latent_frames,
                                    audio_num_frames)

        # 5. transformer blocks
        rope = rope_cos_sin(cfg.dim // cfg.num_heads, grid, seq_len, tokens.device)
        for block in self.blocks:
            tokens = block(tokens, e0, rope, text, image, audio)

        # 6. head on the real tokens (padding is dropped anyway) and unpatchify
        out = self.head(tokens[:, :num_tokens], e)
        return self._unpatchify(out, grid)

    def _audio_context(self, audio_features: Tensor, audio_index: list[int | None], latent_tokens: Tensor,
                       e0: Tensor, e: Tensor, latent_frames: int, audio_num_frames: int) -> Tensor:
        num_rows = audio_features.shape[0]
        if any(i is not None and not 0 <= i < num_rows for i in audio_index):
            raise ValueError(f"audio_index {audio_index} out of range for {num_rows} audio feature rows")
        if all(i is None for i in audio_index):  # no branch hears audio: zero context of the usual window size
            start, end = audio_token_ranges(audio_features.shape[1], audio_num_frames)[0]
            window = end - start + 1 + 2 * self.config.audio_expand_length
            return latent_tokens.new_zeros(len(audio_index), latent_frames, window, self.config.dim)
        vocal = self.vocal_projector(audio_features, latent_tokens, e0, e, latent_frames, audio_num_frames)
        zeros = vocal.new_zeros(vocal.shape[1:])  # official unconditional audio: zeros AFTER the adapter
        return torch.stack([zeros if i is None else vocal[i] for i in audio_index])

    def _unpatchify(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """[B, f*h*w, pt*ph*pw*C] -> [B, C, f*pt, h*ph, w*pw] (official einsum 'fhwpqrc->cfphqwr')."""
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, self.config.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], self.config.out_dim, f * pt, h * ph, w * pw)

    # ---------------------------------------------------------------------------------------------------------------
    @staticmethod
    def config_from_official(base_config: dict, arch: dict | None = None) -> dict:
        """Constructor kwargs from the official Wan `config.json`, overridden by a parity tree's arch.json."""
        if base_config.get("model_type", "i2v") != "i2v":
            raise CheckpointError(f"the base DiT config is model_type={base_config['model_type']!r}, "
                                  "StableAvatar needs the Wan2.1-Fun-1.3B-InP (i2v) base",
                                  hint="use the Wan2.1-Fun-V1.1-1.3B-InP folder of the official release")
        keys = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "freq_dim", "text_len", "eps",
                "text_dim")
        config = {k: base_config[k] for k in keys if k in base_config}
        if arch:
            dit, adapter = arch.get("dit", {}), arch.get("audio_adapter", {})
            for src, dst in (("hidden_dim", "dim"), ("ffn_dim", "ffn_dim"), ("num_heads", "num_heads"),
                             ("num_layers", "num_layers"), ("freq_dim", "freq_dim"), ("text_len", "text_len"),
                             ("in_channels", "in_dim"), ("out_channels", "out_dim"), ("patch_size", "patch_size"),
                             ("text_input_dim", "text_dim"), ("image_input_dim", "image_dim"), ("eps", "eps"),
                             ("rope_table_len", "rope_max_seq_len")):
                if src in dit:
                    config[dst] = dit[src]
            for src, dst in (("audio_input_dim", "audio_in_dim"), ("num_blocks", "audio_num_blocks"),
                             ("num_heads", "audio_num_heads"), ("ffn_dim", "audio_ffn_dim"),
                             ("proj_layernorm_eps", "audio_proj_eps"), ("eps", "audio_eps"),
                             ("expand_length", "audio_expand_length")):
                if src in adapter:
                    config[dst] = adapter[src]
            if "proj_dim" in adapter and adapter["proj_dim"] != config.get("dim", 1536):
                raise CheckpointError(f"arch.json: audio adapter width {adapter['proj_dim']} != DiT width "
                                      f"{config.get('dim', 1536)}", hint="the adapter width must equal the DiT width")
        if "patch_size" in config:
            config["patch_size"] = tuple(config["patch_size"])
        return config

    @classmethod
    def from_official(cls, base_dir: str | Path, transformer: str | Path | None, arch: dict | None = None,
                      dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> "StableAvatarDiT":
        """Build from `base_dir/config.json` and load the StableAvatar `.pt` (full state dict, original Wan names).

        `arch`: a parity tree's arch.json (read from `base_dir/../arch.json` when not given and present).
        The `.pt` is read with `weights_only=True` (memory-mapped); its key set must equal the model's exactly.
        Without a `.pt` only the base safetensors exists, which lacks the audio weights: that is a CheckpointError.
        The time MLPs stay float32 (`_keep_in_fp32_modules`); every other weight is cast to `dtype`.
        """
        base_dir = Path(base_dir)
        config_file = base_dir / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{config_file} not found", hint="point to the Wan2.1-Fun-V1.1-1.3B-InP folder")
        if arch is None and (base_dir.parent / "arch.json").is_file():
            arch = _read_config(base_dir.parent / "arch.json")
        base_config = _read_config(config_file)
        try:
            with torch.device("meta"):
                model = cls(**cls.config_from_official(base_config, arch))
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
            raise CheckpointError(f"{config_file} does not describe a Wan DiT this loader can build "
                                  f"({type(exc).__name__}: {str(exc)[:120]})", hint=CONFIG_HINT) from None
        expected = model.state_dict()

        if transformer is None:
            _raise_without_audio_weights(base_dir / "diffusion_pytorch_model.safetensors", set(expected))
        path = Path(transformer)
        state_dict = read_state_dict(path)  # CheckpointError for missing/corrupt files and non-tensor pickles
        check_keys(path, set(expected) - set(state_dict), set(state_dict) - set(expected),
                   [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state_dict.items()
                    if k in expected and v.shape != expected[k].shape])

        fp32 = tuple(cls._keep_in_fp32_modules)
        state_dict = {k: checked(k, v, path).to(device=device, dtype=torch.float32 if k.startswith(fp32) else dtype)
                      for k, v in state_dict.items()}
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.eval()


CONFIG_HINT = "re-download the Wan2.1-Fun-V1.1-1.3B-InP folder of the official release (its config.json is damaged)"


def _read_config(path: Path) -> dict:
    """A JSON object from `path`, or a CheckpointError that names the file (a damaged or hand-edited config)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})",
                              hint=CONFIG_HINT) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object", hint=CONFIG_HINT)
    return config


def _raise_without_audio_weights(base_file: Path, expected: set[str]) -> None:
    """The base Fun-InP safetensors has the Wan weights only; report what is missing instead of running without."""
    if not base_file.is_file():
        raise CheckpointError(f"no transformer checkpoint given and {base_file} not found", hint=AUDIO_WEIGHTS_HINT)
    from safetensors import safe_open

    try:
        with safe_open(str(base_file), framework="pt") as f:
            found = set(f.keys())
    except Exception as exc:  # noqa: BLE001 - any reader error means an unusable file
        raise CheckpointError(f"cannot read {base_file.name}: {exc}", hint="re-download the base model") from None
    missing = expected - found
    raise CheckpointError(
        f"{base_file.name} is the Wan base without the StableAvatar audio weights ({len(missing)} keys missing, "
        f"e.g. {', '.join(sorted(missing)[:3])}); the StableAvatar transformer checkpoint is required",
        hint=AUDIO_WEIGHTS_HINT)
