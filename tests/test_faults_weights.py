"""Fault classes 4 and 6, weights: a checkpoint with NaN, infinite or integer tensors is refused at load with
the tensor's name (not run into a black video), and umT5 keeps its bf16 matrices in a float32 CPU run (as
released: 11 GB instead of 22.7 GB for the real encoder) with numbers equal to a float32 load."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from faults_kit import copy_tree, generate, speech

pytestmark = pytest.mark.timeout(600)
BASE = "Wan2.1-Fun-V1.1-1.3B-InP"
FILES = {"dit": "StableAvatar-1.3B/transformer3d-square.pt", "vae": f"{BASE}/Wan2.1_VAE.pth",
         "t5": f"{BASE}/models_t5_umt5-xxl-enc-bf16.pth",
         "clip": f"{BASE}/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
         "wav2vec2": "wav2vec2-base-960h/model.safetensors"}
KEYS = {"dit": "blocks.1.ffn.0.weight", "vae": "decoder.head.2.weight", "t5": "blocks.0.ffn.fc1.weight",
        "clip": "visual.transformer.0.mlp.0.weight", "wav2vec2": "wav2vec2.encoder.layers.0.feed_forward.output_dense.weight"}


def _damage(tree, part: str, how: str) -> str:
    path = tree / FILES[part]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file
        sd = load_file(path)
    else:
        sd = torch.load(path, weights_only=True)
    key = KEYS[part]
    t = sd[key]
    if how == "integer":
        sd[key] = torch.ones(t.shape, dtype=torch.int32)
    else:
        t = t.clone()
        t.view(-1)[3] = float("nan") if how == "NaN" else float("inf")
        sd[key] = t
    if path.suffix == ".safetensors":
        save_file(sd, path, metadata={"format": "pt"})
    else:
        torch.save(sd, path)
    return key.removeprefix("wav2vec2.")


CASES = [("dit", "NaN"), ("dit", "integer"), ("dit", "inf"), ("vae", "NaN"), ("t5", "integer"), ("clip", "NaN"),
         ("wav2vec2", "NaN"), ("wav2vec2", "integer")]


@pytest.mark.parametrize("part, how", CASES, ids=[f"{p} {h}" for p, h in CASES])
def test_damaged_weights_are_refused_naming_the_tensor(part, how, tmp_path):
    tree = copy_tree(tmp_path)
    key = _damage(tree, part, how)
    res = generate(tmp_path / "out", speech(tmp_path), tree=tree)
    res.one_error(3, key, "NaN or infinite" if how != "integer" else "not floating point")
    assert not (tmp_path / "out").exists()


def test_umt5_keeps_its_bf16_matrices_in_a_float32_run_with_the_same_numbers():
    from stableavatar.text_encoder import load_text_encoder

    arch = json.loads((TINY / "arch.json").read_text())
    args = (TINY / BASE / "models_t5_umt5-xxl-enc-bf16.pth", TINY / BASE / "google" / "umt5-xxl", arch.get("t5"))
    te = load_text_encoder(*args, dtype=torch.float32)  # what the engine loads on the CPU
    linears = [m.weight for m in te.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(w.dtype == torch.bfloat16 for w in [*linears, te.model.shared.weight])
    norms = [p for n, p in te.model.named_parameters() if "layer_norm" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    full = load_text_encoder(*args, dtype=torch.bfloat16)
    full.model.float()  # every weight up-cast at load: the float32 run as it was
    prompts = ["The protagonist is talking", "色调艳丽，过曝"]
    for a, b in zip(te.encode(prompts), full.encode(prompts)):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    stored = sum(p.numel() * p.element_size() for p in te.model.parameters())
    upcast = sum(p.numel() * p.element_size() for p in full.model.parameters())
    assert stored < 0.55 * upcast, (stored, upcast)
