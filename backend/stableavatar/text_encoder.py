"""umT5-XXL text encoder: stock `transformers.UMT5EncoderModel` loaded from the official Wan `.pth` + HF tokenizer.

The Wan T5 has the same maths as HF UMT5 (no attention scaling, per-layer relative position bias, gated tanh-GELU
FFN, RMS norms eps 1e-6); only the key names differ.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import CheckpointError
from .weights import ModelHolder, assign_state_dict, build_on_meta, checked, read_state_dict

TEXT_LEN = 512

# Real umT5-XXL encoder (Wan `models_t5_umt5-xxl-enc-bf16.pth`).
_REAL = dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24, num_buckets=32,
             relative_attention_max_distance=128, layernorm_eps=1e-6, text_length=TEXT_LEN)


def _config(arch: dict | None):
    from transformers import UMT5Config

    a = dict(_REAL)
    a.update(arch or {})
    if a.get("shared_pos", False):
        raise CheckpointError("shared_pos=True T5 variants are not supported (umT5 has per-layer position bias)")
    return a, UMT5Config(
        vocab_size=int(a["vocab"]),
        d_model=int(a["dim"]),
        d_kv=int(a["dim_attn"]) // int(a["num_heads"]),
        d_ff=int(a["dim_ffn"]),
        num_layers=int(a["num_layers"]),
        num_heads=int(a["num_heads"]),
        relative_attention_num_buckets=int(a["num_buckets"]),
        relative_attention_max_distance=int(a.get("relative_attention_max_distance", 128)),
        feed_forward_proj="gated-gelu",  # -> gelu_new (tanh), as the Wan T5
        layer_norm_epsilon=float(a["layernorm_eps"]),
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        attn_implementation="eager",  # bit-exact vs the official code; sdpa differs ~8e-6 (UMT5 has no 1/sqrt(d))
    )


def _hf_names(num_layers: int) -> dict[str, str]:
    """HF UMT5EncoderModel key -> Wan key (weights only; no biases anywhere)."""
    m = {"shared.weight": "token_embedding.weight", "encoder.final_layer_norm.weight": "norm.weight"}
    for i in range(num_layers):
        b, w = f"encoder.block.{i}.layer", f"blocks.{i}"
        m[f"{b}.0.layer_norm.weight"] = f"{w}.norm1.weight"
        for p in "qkvo":
            m[f"{b}.0.SelfAttention.{p}.weight"] = f"{w}.attn.{p}.weight"
        m[f"{b}.0.SelfAttention.relative_attention_bias.weight"] = f"{w}.pos_embedding.embedding.weight"
        m[f"{b}.1.layer_norm.weight"] = f"{w}.norm2.weight"
        m[f"{b}.1.DenseReluDense.wi_0.weight"] = f"{w}.ffn.gate.0.weight"  # GELU branch
        m[f"{b}.1.DenseReluDense.wi_1.weight"] = f"{w}.ffn.fc1.weight"  # linear branch
        m[f"{b}.1.DenseReluDense.wo.weight"] = f"{w}.ffn.fc2.weight"
    return m


def _load_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise CheckpointError(f"tokenizer folder not found: {tokenizer_dir}",
                              "the base model folder must contain google/umt5-xxl/ from the official release")
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot load the tokenizer from {tokenizer_dir}: {first[:200]}",
                              "re-download google/umt5-xxl/ (tokenizer.json, tokenizer_config.json)") from e


def load_text_encoder(path, tokenizer_dir, arch: dict | None, device="cpu", dtype=torch.float32) -> "TextEncoder":
    from transformers import UMT5EncoderModel

    path = Path(path)
    tokenizer = _load_tokenizer(tokenizer_dir)
    a, config = _config(arch)
    raw = read_state_dict(path)
    to_wan = _hf_names(config.num_layers)
    # The file is bf16 (as released). In a float32 run the matrices stay bf16 and are up-cast per block
    # (_compute_in); the small norms and position biases are converted here. Both up-casts are exact.
    keep = dtype == torch.float32 and all(raw[w].dtype == torch.bfloat16 for h, w in to_wan.items()
                                          if w in raw and _is_matrix(h))
    sd = {hf: checked(wan, raw[wan], path).to(raw[wan].dtype if keep and _is_matrix(hf) else dtype)
          for hf, wan in to_wan.items() if wan in raw}
    if "shared.weight" in sd:  # encoder.embed_tokens is tied to shared: assign the same tensor to both
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    to_wan["encoder.embed_tokens.weight"] = "token_embedding.weight"
    unexpected = sorted(set(raw) - set(to_wan.values()))
    del raw
    model = build_on_meta(lambda: UMT5EncoderModel(config))
    assign_state_dict(model, sd, path, name_of=lambda k: to_wan.get(k, k), unexpected=unexpected)
    # Re-tie as one Parameter: two Parameters sharing storage would be copied twice by `.to(device)`.
    model.encoder.embed_tokens.weight = model.shared.weight
    model.eval().requires_grad_(False)
    if keep:
        _compute_in(model, dtype)
    return TextEncoder(model, tokenizer, int(a.get("text_length", TEXT_LEN))).to(device)


def _is_matrix(hf_key: str) -> bool:
    """The Linear weights and the token embedding: 99.9 % of umT5's 5.7 B parameters."""
    return hf_key == "shared.weight" or ".SelfAttention." in hf_key and "relative_attention_bias" not in hf_key \
        or ".DenseReluDense." in hf_key


def _compute_in(model, dtype: torch.dtype) -> None:
    """Keep umT5's matrices in bf16 (11 GB instead of 22.7 GB in float32: what lets a real tree run on a 24 GB
    machine's CPU) and up-cast them for one attention or feed-forward block at a time. The up-cast is exact,
    so the result equals a float32 load. Hooks sit on the block, not on each Linear: HF's feed-forward casts
    its input to `wo.weight.dtype` before calling wo, so the block must already see float32 weights."""
    for block in model.modules():
        linears = [c for c in block.children() if isinstance(c, nn.Linear)]
        if not linears:
            continue
        stored: dict[int, nn.Parameter] = {}

        def upcast(_mod, _args, linears=linears, stored=stored):
            for lin in linears:
                stored[id(lin)] = lin.weight
                lin.weight = nn.Parameter(lin.weight.to(dtype), requires_grad=False)

        def restore(_mod, _args, _out, linears=linears, stored=stored):
            for lin in linears:
                lin.weight = stored.pop(id(lin))

        block.register_forward_pre_hook(upcast)
        block.register_forward_hook(restore, always_call=True)
    model.encoder.embed_tokens.register_forward_hook(lambda _mod, _args, out: out.to(dtype))


class TextEncoder(ModelHolder):
    def __init__(self, model, tokenizer, text_len: int = TEXT_LEN):
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """-> (ids, mask), both [N, 512] int64. The official pipeline does no prompt cleaning."""
        out = self.tokenizer(list(prompts), padding="max_length", max_length=self.text_len, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return out.input_ids.long(), out.attention_mask.long()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[Tensor]:
        """One [L_i, dim] tensor per prompt, trimmed to its true token count (as the official pipeline keeps)."""
        ids, mask = self.tokenize(prompts)
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        return [h[:n] for h, n in zip(hidden, mask.sum(dim=1).tolist())]
