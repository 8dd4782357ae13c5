"""Parity of the stock-library component wrappers (VAE, CLIP, umT5, wav2vec2) against the official fixtures.

Fixtures and tolerances: tests/data/parity/README.md §4.1-4.4 and §7. Models are the tiny official-format
checkpoints in tests/data/parity/checkpoints/, loaded through the production loaders with that tree's arch.json.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stableavatar.audio_features import load_audio_encoder
from stableavatar.errors import CheckpointError
from stableavatar.image_encoder import load_image_encoder
from stableavatar.text_encoder import load_text_encoder
from stableavatar.vae import load_vae

PARITY = Path(__file__).parent / "data" / "parity"
CKPT = PARITY / "checkpoints"
BASE = CKPT / "Wan2.1-Fun-V1.1-1.3B-InP"
VAE_PTH = BASE / "Wan2.1_VAE.pth"
CLIP_PTH = BASE / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
T5_PTH = BASE / "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER = BASE / "google" / "umt5-xxl"
W2V = CKPT / "wav2vec2-base-960h"

TOL = dict(atol=1e-4, rtol=1e-4)  # README §7: wav2vec2 / T5 / CLIP / VAE outputs


def assert_parity(actual: torch.Tensor, expected: torch.Tensor, **tol) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.float() - expected.float()).abs().max().item()
    print(f"max abs diff {diff:.3g}")
    torch.testing.assert_close(actual.float(), expected.float(), **(tol or TOL))


@pytest.fixture(scope="module")
def arch():
    return json.loads((CKPT / "arch.json").read_text())


@pytest.fixture(scope="module")
def manifest():
    return json.loads((PARITY / "manifest.json").read_text())


def fixture(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(PARITY / "fixtures" / f"{name}.safetensors"))


# ---------------------------------------------------------------------------------------------------------------- VAE

@pytest.fixture(scope="module")
def vae(arch):
    return load_vae(VAE_PTH, arch["vae"])


def test_vae_encode_9f(vae):
    f = fixture("vae")
    assert_parity(vae.encode_mode(f["encode_9f_input"]), f["encode_9f_latent_mode"])


def test_vae_encode_81f_pipeline_style(vae):
    f = fixture("vae")
    frame0 = f["encode_81f_pipeline_style_input_frame0"]
    clip = torch.cat([frame0, torch.zeros(1, 3, 80, *frame0.shape[-2:])], dim=2)
    assert_parity(vae.encode_mode(clip), f["encode_81f_pipeline_style_latent_mode"])


@pytest.fixture(scope="module")
def decoded_chunks(vae):
    return list(vae.decode_stream(fixture("vae")["decode_latents"]))  # decoded once, checked twice below


def test_vae_decode(decoded_chunks):
    out = torch.cat(decoded_chunks, dim=1).unsqueeze(0)  # what WanVAE.decode returns
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert_parity(out, fixture("vae")["decode_output"])


def test_vae_decode_stream_equals_whole_decode(vae, decoded_chunks, arch):
    z = fixture("vae")["decode_latents"]
    chunks = decoded_chunks
    assert [c.shape[1] for c in chunks] == [1] + [4] * (z.shape[2] - 1)
    assert all(c.shape[0] == 3 and c.device.type == "cpu" for c in chunks)
    # Reference: diffusers' own whole-sequence decode of the same de-normalised latents.
    mean = torch.tensor(arch["vae"]["latent_mean"]).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(arch["vae"]["latent_std"]).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        whole = vae.model.decode(z / inv_std + mean).sample
    assert torch.equal(torch.cat(chunks, dim=1).unsqueeze(0), whole)


# --------------------------------------------------------------------------------------------------------------- CLIP

@pytest.fixture(scope="module")
def clip(arch):
    return load_image_encoder(CLIP_PTH, arch["clip"])


@pytest.mark.parametrize("case", ["img_64x64", "img_48x80"])
def test_clip_output(clip, case):
    f = fixture("clip")
    assert_parity(clip.encode(f[f"{case}_input"]), f[f"{case}_output"])


def test_clip_accepts_batch_first_layout(clip):
    f = fixture("clip")
    image = f["img_48x80_input"].transpose(0, 1)  # [1, 3, H, W]
    assert_parity(clip.encode(image), f["img_48x80_output"])


def test_clip_preprocessing(clip):
    f = fixture("clip")
    assert_parity(clip.preprocess(f["img_48x80_input"]), f["img_48x80_preprocessed_224"], atol=1e-6, rtol=0)


def test_clip_holds_only_the_used_blocks(clip, arch):
    assert len(clip.model.encoder.layers) == arch["clip"]["vision_layers_used"]


def test_clip_parity_detects_a_wrong_weight_map(arch, tmp_path):
    """Negative control: swapping q and k inside to_qkv must break parity, so the checks above can fail."""
    sd = torch.load(CLIP_PTH, map_location="cpu", weights_only=True)
    w = arch["clip"]["vision_width"]
    for s in ("weight", "bias"):
        qkv = sd[f"visual.transformer.0.attn.to_qkv.{s}"]
        sd[f"visual.transformer.0.attn.to_qkv.{s}"] = torch.cat([qkv[w:2 * w], qkv[:w], qkv[2 * w:]])
    torch.save(sd, tmp_path / "clip.pth")
    f = fixture("clip")
    out = load_image_encoder(tmp_path / "clip.pth", arch["clip"]).encode(f["img_64x64_input"])
    with pytest.raises(AssertionError):
        assert_parity(out, f["img_64x64_output"])


# ----------------------------------------------------------------------------------------------------------------- T5

@pytest.fixture(scope="module")
def t5(arch):
    return load_text_encoder(T5_PTH, TOKENIZER, arch["t5"])


@pytest.fixture(scope="module")
def prompts(manifest):
    p = manifest["t5"]["prompts"]
    return [p["positive"], p["negative"]]


def test_t5_tokenizer_exact(t5, prompts, manifest):
    f = fixture("t5")
    ids, mask = t5.tokenize(prompts)
    assert ids.dtype == mask.dtype == torch.int64
    assert torch.equal(ids, f["input_ids"]) and torch.equal(mask, f["attention_mask"])
    for row, key in enumerate(("positive", "negative")):
        n = manifest["t5"]["lengths"][key]
        assert int(mask[row].sum()) == n
        assert ids[row, :n].tolist() == manifest["t5"]["token_ids"][key]


def test_t5_embeddings(t5, prompts):
    f = fixture("t5")
    pos, neg = t5.encode(prompts)
    assert_parity(pos, f["positive_embeds"])
    assert_parity(neg, f["negative_embeds"])


def test_t5_full_output(t5):
    f = fixture("t5")
    with torch.no_grad():
        out = t5.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).last_hidden_state
    assert_parity(out, f["encoder_out_full"])


# ----------------------------------------------------------------------------------------------------------- wav2vec2

@pytest.fixture(scope="module")
def w2v():
    return load_audio_encoder(W2V)


@pytest.fixture(scope="module")
def audio():
    import librosa

    wave, _ = librosa.load(str(PARITY / "inputs" / "audio.wav"), sr=16000)
    return wave


WINDOWS = {"window0": (0, 53760), "last_window": (81920, 115360)}


@pytest.mark.parametrize("case", list(WINDOWS))
def test_wav2vec2(w2v, audio, case):
    f = fixture("wav2vec2")
    start, stop = WINDOWS[case]
    wave = audio[start:stop]
    np.testing.assert_array_equal(wave, f[f"{case}_waveform"].numpy())
    assert_parity(w2v.normalise(wave), f[f"{case}_input_values"], atol=1e-6, rtol=0)
    hidden = w2v(wave)
    assert hidden.dtype == torch.float32
    assert_parity(hidden, f[f"{case}_last_hidden_state"])


# ------------------------------------------------------------------------------------------------------------- errors

class NotATensor:
    pass


LOADERS = {
    "vae": lambda p, a: load_vae(p, a["vae"]),
    "clip": lambda p, a: load_image_encoder(p, a["clip"]),
    "t5": lambda p, a: load_text_encoder(p, TOKENIZER, a["t5"]),
}


@pytest.mark.parametrize("which", list(LOADERS))
def test_missing_file_raises_checkpoint_error(which, arch, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        LOADERS[which](tmp_path / "nope.pth", arch)


@pytest.mark.parametrize("which", list(LOADERS))
def test_non_tensor_pickle_raises_checkpoint_error(which, arch, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="evil.pt") as e:
        LOADERS[which](path, arch)
    assert "\n" not in str(e.value)


def test_truncated_file_raises_checkpoint_error(arch, tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(VAE_PTH.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="Wan2.1_VAE.pth"):
        load_vae(path, arch["vae"])


@pytest.mark.parametrize("which,src,key", [
    ("vae", VAE_PTH, "decoder.upsamples.4.shortcut.weight"),
    ("clip", CLIP_PTH, "visual.transformer.1.attn.to_qkv.bias"),
    ("t5", T5_PTH, "blocks.1.ffn.gate.0.weight"),
])
def test_missing_key_is_named(which, src, key, arch, tmp_path):
    sd = torch.load(src, map_location="cpu", weights_only=True)
    del sd[key]
    path = tmp_path / src.name
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="missing") as e:
        LOADERS[which](path, arch)
    assert key in str(e.value) and path.name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("which,src", [("vae", VAE_PTH), ("clip", CLIP_PTH), ("t5", T5_PTH)])
def test_unexpected_key_is_named(which, src, arch, tmp_path):
    sd = torch.load(src, map_location="cpu", weights_only=True)
    sd["visual.extra.weight" if which == "clip" else "extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / src.name)
    with pytest.raises(CheckpointError, match="unexpected.*extra.weight"):
        LOADERS[which](tmp_path / src.name, arch)


def test_real_arch_on_tiny_checkpoint_is_a_shape_error(tmp_path):
    # arch=None means the released 1.3B sizes; the tiny VAE must be refused, not half-loaded.
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_vae(VAE_PTH, None)


def test_wav2vec2_missing_key_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_audio_encoder(tmp_path / "nope")
    folder = tmp_path / "w2v"
    shutil.copytree(W2V, folder)
    sd = load_file(str(folder / "model.safetensors"))
    del sd["wav2vec2.feature_projection.projection.weight"]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="feature_projection.projection.weight"):
        load_audio_encoder(folder)
