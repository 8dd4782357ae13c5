"""CLIP ViT-H/14 image encoder: stock `transformers.CLIPVisionModel` loaded from the official open-clip `.pth`.

StableAvatar uses the visual tower's output after all blocks but the last, without post-norm ([1, 257, width]).
The model is built with only those blocks, so the last block, the text tower and the heads are never held.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import ModelHolder, assign_state_dict, build_on_meta, checked, read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Real ViT-H/14 (open-clip xlm-roberta-large-vit-huge-14, visual tower).
_REAL = dict(vision_width=1280, vision_heads=16, vision_layers=32, vision_mlp_ratio=4,
             image_size=224, patch_size=14, layernorm_eps=1e-5, mean=CLIP_MEAN, std=CLIP_STD)

# Checkpoint keys that exist but are never used (the text tower, heads, post-norm and the unused last block).
_IGNORED_PREFIXES = ("textual.", "log_scale", "visual.head", "visual.post_norm.")


def _arch(arch: dict | None) -> dict:
    a = dict(_REAL)
    a.update(arch or {})
    a.setdefault("vision_layers_used", a["vision_layers"] - 1)  # official use_31_block: all but the last
    return a


def _vision_config(a: dict):
    from transformers import CLIPVisionConfig

    width = int(a["vision_width"])
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * a["vision_mlp_ratio"]),
        num_attention_heads=int(a["vision_heads"]),
        num_hidden_layers=int(a["vision_layers_used"]),
        image_size=int(a["image_size"]),
        patch_size=int(a["patch_size"]),
        hidden_act="gelu",  # open-clip ViT-H uses exact GELU; the CLIPVisionConfig default quick_gelu is wrong here
        layer_norm_eps=float(a["layernorm_eps"]),
        attn_implementation="sdpa",  # measured bit-exact vs the official code (eager: ~2e-6)
    )


def _convert(raw: dict[str, Tensor], layers_used: int, dtype, path=None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """open-clip `visual.*` -> HF CLIPVisionModel (5.x, unprefixed) keys; returns (state dict, hf->original names).
    With `path`, every tensor used is checked (weights.checked) before it is converted."""
    sd: dict[str, Tensor] = {}
    names: dict[str, str] = {}

    def put(hf: str, orig: str, t: Tensor | None) -> None:
        names[hf] = orig
        if t is not None:
            sd[hf] = (checked(orig, t, path) if path is not None else t).to(dtype)

    get = raw.get
    cls, pos = get("visual.cls_embedding"), get("visual.pos_embedding")
    put("embeddings.class_embedding", "visual.cls_embedding", None if cls is None else cls.reshape(-1))
    put("embeddings.position_embedding.weight", "visual.pos_embedding", None if pos is None else pos.flatten(0, 1))
    put("embeddings.patch_embedding.weight", "visual.patch_embedding.weight", get("visual.patch_embedding.weight"))
    for s in ("weight", "bias"):
        put(f"pre_layrnorm.{s}", f"visual.pre_norm.{s}", get(f"visual.pre_norm.{s}"))
    for i in range(layers_used):
        o, h = f"visual.transformer.{i}", f"encoder.layers.{i}"
        for s in ("weight", "bias"):
            put(f"{h}.layer_norm1.{s}", f"{o}.norm1.{s}", get(f"{o}.norm1.{s}"))
            put(f"{h}.layer_norm2.{s}", f"{o}.norm2.{s}", get(f"{o}.norm2.{s}"))
            put(f"{h}.self_attn.out_proj.{s}", f"{o}.attn.proj.{s}", get(f"{o}.attn.proj.{s}"))
            put(f"{h}.mlp.fc1.{s}", f"{o}.mlp.0.{s}", get(f"{o}.mlp.0.{s}"))
            put(f"{h}.mlp.fc2.{s}", f"{o}.mlp.2.{s}", get(f"{o}.mlp.2.{s}"))
            qkv = get(f"{o}.attn.to_qkv.{s}")  # [3W, ...] rows = q | k | v
            parts = qkv.chunk(3, dim=0) if qkv is not None else (None,) * 3
            for p, t in zip(("q", "k", "v"), parts):
                put(f"{h}.self_attn.{p}_proj.{s}", f"{o}.attn.to_qkv.{s}", t)
    return sd, names


def _rebuild_position_ids(model) -> None:
    emb = getattr(model, "vision_model", model).embeddings
    emb.position_ids = torch.arange(emb.num_positions).expand((1, -1))


def load_image_encoder(path, arch: dict | None, device="cpu", dtype=torch.float32) -> "ImageEncoder":
    from transformers import CLIPVisionModel

    path = Path(path)
    a = _arch(arch)
    raw = read_state_dict(path)
    used, total = int(a["vision_layers_used"]), int(a["vision_layers"])
    sd, names = _convert(raw, used, dtype, path)
    # Keys of the checkpoint we neither load nor knowingly ignore (blocks >= used are the unused last block).
    skipped = tuple(f"visual.transformer.{i}." for i in range(used, total))
    used_keys = set(names.values())
    unexpected = [k for k in raw if k not in used_keys and not k.startswith(_IGNORED_PREFIXES + skipped)]
    del raw  # drop the (memory-mapped) text tower before building the model

    model = build_on_meta(lambda: CLIPVisionModel(_vision_config(a)))
    vision = getattr(model, "vision_model", model)  # transformers 4.x nests the tower; 5.x flattens it
    vision.post_layernorm = nn.Identity()  # only feeds the pooled output, which is unused
    if vision is not model:
        sd = {f"vision_model.{k}": v for k, v in sd.items()}
        names = {f"vision_model.{k}": v for k, v in names.items()}
    assign_state_dict(model, sd, path, name_of=lambda k: names.get(k, k), unexpected=unexpected,
                      rebuild_buffers=_rebuild_position_ids)
    model.eval().requires_grad_(False)
    return ImageEncoder(model, a["mean"], a["std"], int(a["image_size"])).to(device)


class ImageEncoder(ModelHolder):
    def __init__(self, model, mean, std, image_size: int = 224):
        self.model = model
        self.image_size = image_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, image: Tensor) -> Tensor:
        """[1,3,H,W] or [3,1,H,W] in [-1,1] -> [1,3,224,224] normalised pixel values.

        Official: squash (no crop) with bicubic F.interpolate (align_corners=False, no antialias), then [0,1], then
        CLIP mean/std. CLIPImageProcessor would resize the short side and centre-crop instead.
        """
        if image.dim() != 4 or 3 not in image.shape[:2]:
            raise ValueError(f"expected an image [1,3,H,W] or [3,1,H,W], got {tuple(image.shape)}")
        if image.shape[1] != 3:  # the pipeline's clip_image layout [3, 1, H, W]
            image = image.transpose(0, 1)
        x = image.to(self.device, self.dtype)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        x = x.mul(0.5).add(0.5)
        return (x - self._mean.to(x)) / self._std.to(x)

    @torch.no_grad()
    def encode(self, image: Tensor) -> Tensor:
        """Image in [-1,1] -> [1, 257, width]: hidden state after all blocks but the last, no post-norm."""
        return self.model(pixel_values=self.preprocess(image)).last_hidden_state
