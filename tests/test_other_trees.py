"""Nothing in the package may be specific to the public tiny tree.

A second tiny tree is written at test time in the official on-disk layout and containers (key names, dtypes,
pickle/safetensors, HF folders) but with other hyper-parameters: DiT 96 wide / 3 heads of 32 / 3 layers, text and
image widths 48, adapter 4 heads, VAE base 4, CLIP 48 wide / 3 heads / 4 layers (3 used), T5 3 layers / 2 heads /
dim 48 / attention width 64, wav2vec2 with 2 layers and 16 conv channels, and both a square and a rec-vec `.pt`.
That tree then goes through the real CLI. `test_generator_mirrors_public_layout` guards the generator itself: fed the
public arch.json it must reproduce the public files key for key, shape for shape, dtype for dtype.
"""
import copy
import json
import math
import shutil
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import MEDIA, PARITY, TINY, run_cli
from PIL import Image
from safetensors.torch import load_file, save_file
from stableavatar.checkpoints import AVATAR_DIR, BASE_DIR, BASE_FILES, WAV2VEC_DIR
from stableavatar.dit import StableAvatarDiT
from stableavatar.vae import _vae_key_names, vae_config
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

SEED = 1234
DIT_BASE = "diffusion_pytorch_model.safetensors"
SQUARE, REC = "transformer3d-square.pt", "transformer3d-rec-vec.pt"


def other_arch() -> dict:
    """The public arch.json with other numbers (only what the official code leaves free is changed)."""
    a = copy.deepcopy(json.loads((TINY / "arch.json").read_text()))
    a["note"] = "Second tiny tree, written by tests/test_other_trees.py."
    head_dim = 96 // 3
    c = head_dim // 2
    a["dit"].update(hidden_dim=96, ffn_dim=192, num_heads=3, head_dim=head_dim, num_layers=3, text_input_dim=48,
                    image_input_dim=48, rope_complex_pairs_time_height_width=[c - 2 * (c // 3), c // 3, c // 3])
    a["audio_adapter"].update(proj_dim=96, num_heads=4, head_dim=24, ffn_dim=192)
    a["vae"]["base_dim"] = 4
    a["clip"].update(vision_width=48, vision_heads=3, vision_layers=4, vision_layers_used=3, embed_dim=24,
                     text_vocab_size=60, text_width=40, text_heads=2, text_layers=2)
    a["t5"].update(vocab=384, dim=48, dim_attn=64, dim_ffn=96, num_heads=2, num_layers=3)
    a["wav2vec2"].update(num_hidden_layers=2, intermediate_size=64, conv_dim=[16] * 7, num_conv_pos_embeddings=8)
    return a


# ---------------------------------------------------------------------------------------------------- random weights
def init(name: str, shape: tuple, g: torch.Generator) -> torch.Tensor:
    """The public tree's recipe: N(0, 1/fan_in) weights, N(0, 0.05^2) biases, norm scales 1 + N(0, 0.1^2),
    modulation tables N(0, 1)/sqrt(dim)."""
    r = torch.randn(shape, generator=g)
    leaf = name.rsplit(".", 1)[-1]
    if name == "log_scale":
        return torch.tensor(math.log(1 / 0.07))
    if leaf == "bias":
        return 0.05 * r
    if leaf in ("gamma", "weight_g") or (leaf == "weight" and len(shape) == 1):
        return 1 + 0.1 * r
    if leaf in ("modulation", "cls_embedding", "pos_embedding"):
        return r / math.sqrt(shape[-1])
    return r / math.sqrt(math.prod(shape[1:]) or 1)  # linear [out, in] / conv [out, in, k...]: fan_in


def fill(shapes: dict, g: torch.Generator, dtype: torch.dtype) -> dict:
    return {k: init(k, tuple(s), g).to(dtype).contiguous() for k, s in shapes.items()}


def meta_shapes(factory) -> dict:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in factory().state_dict().items()}


# ---------------------------------------------------------------------------------- official key layouts, by component
def dit_config_json(a: dict) -> dict:
    d = a["dit"]
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": d["hidden_dim"], "eps": d["eps"],
            "ffn_dim": d["ffn_dim"], "freq_dim": d["freq_dim"], "in_dim": d["in_channels"], "model_type": "i2v",
            "num_heads": d["num_heads"], "num_layers": d["num_layers"], "out_dim": d["out_channels"],
            "text_len": d["text_len"], "text_dim": d["text_input_dim"]}


def dit_shapes(a: dict) -> dict:
    # our DiT uses the original Wan / StableAvatar parameter names, so its state dict IS the official key layout
    cfg = StableAvatarDiT.config_from_official(dit_config_json(a), a)
    return meta_shapes(lambda: StableAvatarDiT(**cfg))


def vae_shapes(a: dict) -> dict:
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    ours = meta_shapes(lambda: AutoencoderKLWan(**vae_config(a["vae"])))
    to_wan = _vae_key_names([])  # diffusers name -> original Wan name
    shapes = {to_wan[k]: s for k, s in ours.items()}
    assert set(convert_wan_vae_to_diffusers(dict.fromkeys(shapes))) == set(ours)  # the inverse round-trips
    return shapes


def clip_shapes(c: dict) -> dict:
    """open-clip xlm-roberta-large-vit-huge-14 layout: visual.* + textual.* + log_scale."""
    w, p, tw = c["vision_width"], c["patch_size"], c["text_width"]
    mlp, tokens = w * c["vision_mlp_ratio"], (c["image_size"] // p) ** 2 + 1
    mid = (tw + c["embed_dim"]) // 2  # XLMRobertaWithHead's head width
    s = {"log_scale": (), "visual.cls_embedding": (1, 1, w), "visual.pos_embedding": (1, tokens, w),
         "visual.head": (w, c["embed_dim"]), "visual.patch_embedding.weight": (w, 3, p, p),
         "visual.pre_norm.weight": (w,), "visual.pre_norm.bias": (w,)}
    for i in range(c["vision_layers"]):
        b = f"visual.transformer.{i}"
        for name, out, inp in (("norm1", w, None), ("attn.to_qkv", 3 * w, w), ("attn.proj", w, w), ("norm2", w, None),
                               ("mlp.0", mlp, w), ("mlp.2", w, mlp)):
            s[f"{b}.{name}.weight"] = (out, inp) if inp else (out,)
            s[f"{b}.{name}.bias"] = (out,)
    s |= {"visual.post_norm.weight": (w,), "visual.post_norm.bias": (w,),
          "textual.token_embedding.weight": (c["text_vocab_size"], tw), "textual.type_embedding.weight": (1, tw),
          "textual.pos_embedding.weight": (c["text_max_len"], tw)}
    for i in range(c["text_layers"]):
        b = f"textual.blocks.{i}"
        for name, out, inp in (("attn.q", tw, tw), ("attn.k", tw, tw), ("attn.v", tw, tw), ("attn.o", tw, tw),
                               ("norm1", tw, None), ("ffn.0", 4 * tw, tw), ("ffn.2", tw, 4 * tw), ("norm2", tw, None)):
            s[f"{b}.{name}.weight"] = (out, inp) if inp else (out,)
            s[f"{b}.{name}.bias"] = (out,)
    s |= {"textual.norm.weight": (tw,), "textual.norm.bias": (tw,), "textual.head.0.weight": (mid, tw),
          "textual.head.2.weight": (c["embed_dim"], mid)}
    return s


def t5_shapes(t: dict) -> dict:
    """Wan `T5Encoder` layout (no biases; per-layer relative position bias)."""
    d, da, f = t["dim"], t["dim_attn"], t["dim_ffn"]
    s = {"token_embedding.weight": (t["vocab"], d)}
    for i in range(t["num_layers"]):
        b = f"blocks.{i}"
        s |= {f"{b}.norm1.weight": (d,), f"{b}.attn.q.weight": (da, d), f"{b}.attn.k.weight": (da, d),
              f"{b}.attn.v.weight": (da, d), f"{b}.attn.o.weight": (d, da), f"{b}.norm2.weight": (d,),
              f"{b}.ffn.gate.0.weight": (f, d), f"{b}.ffn.fc1.weight": (f, d), f"{b}.ffn.fc2.weight": (d, f),
              f"{b}.pos_embedding.embedding.weight": (t["num_buckets"], t["num_heads"])}
    return s | {"norm.weight": (d,)}


def wav2vec_config(a: dict) -> dict:
    cfg = json.loads((TINY / WAV2VEC_DIR / "config.json").read_text())
    w = a["wav2vec2"]
    cfg.update({k: w[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                  "conv_dim", "conv_kernel", "conv_stride", "num_conv_pos_embeddings",
                                  "num_conv_pos_embedding_groups")})
    return cfg


def wav2vec_shapes(cfg: dict) -> dict:
    """Wav2Vec2ForCTC as released (facebook/wav2vec2-base-960h): positional conv as weight_g / weight_v."""
    shapes = meta_shapes(lambda: Wav2Vec2ForCTC(Wav2Vec2Config(**cfg)))
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    out = {}
    for k, s in shapes.items():
        for old, new in rename.items():
            k = k.replace(old, new)
        out[k] = s
    return out


def tree_files(a: dict, seed: int) -> dict:
    """relative path -> state dict, in the release's dtypes (DiT and T5 bf16, the rest fp32)."""
    g = torch.Generator().manual_seed(seed)
    dit = dit_shapes(a)
    frozen = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "head", "img_emb")
    shared = fill({k: s for k, s in dit.items() if k.startswith(frozen)}, g, torch.bfloat16)
    # the .pt files re-train the blocks and hold the adapter; the base file has other block values, no audio keys
    square, rec, base = ({**shared, **fill({k: s for k, s in dit.items() if not k.startswith(frozen)}, g,
                                           torch.bfloat16)} for _ in range(3))
    base = {k: v for k, v in base.items() if "vocal" not in k}
    return {
        f"{BASE_DIR}/{DIT_BASE}": base,
        f"{AVATAR_DIR}/{SQUARE}": {k: square[k] for k in dit},
        f"{AVATAR_DIR}/{REC}": {k: rec[k] for k in dit},
        f"{BASE_DIR}/{BASE_FILES['vae']}": fill(vae_shapes(a), g, torch.float32),
        f"{BASE_DIR}/{BASE_FILES['t5']}": fill(t5_shapes(a["t5"]), g, torch.bfloat16),
        f"{BASE_DIR}/{BASE_FILES['clip']}": fill(clip_shapes(a["clip"]), g, torch.float32),
        f"{WAV2VEC_DIR}/model.safetensors": fill(wav2vec_shapes(wav2vec_config(a)), g, torch.float32),
    }


def _params(sd: dict) -> int:
    return sum(v.numel() for v in sd.values())


def parameter_counts(files: dict) -> dict:
    """arch.json's `parameter_counts` block, computed from the files."""
    n = {rel.rsplit("/", 1)[-1]: sd for rel, sd in files.items()}
    full, vae, clip, t5 = n[SQUARE], n[BASE_FILES["vae"]], n[BASE_FILES["clip"]], n[BASE_FILES["t5"]]
    return {"dit_keys_full": len(full), "dit_keys_base": len(n[DIT_BASE]), "dit_params": _params(full),
            "vae_keys": len(vae), "vae_params": _params(vae), "clip_keys": len(clip), "clip_params": _params(clip),
            "t5_keys": len(t5), "t5_params": _params(t5), "tokenizer_len": 253}  # the copied tokenizer's length


def write_tree(root, a: dict, seed: int = SEED):
    files = tree_files(a, seed)
    a = {**a, "parameter_counts": parameter_counts(files)}
    for rel, sd in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            save_file(sd, str(path), metadata={"format": "pt"})
        else:
            torch.save(sd, path)  # plain dict of tensors, zip pickle, as released
    (root / "arch.json").write_text(json.dumps(a, indent=1))
    (root / BASE_DIR / "config.json").write_text(json.dumps(dit_config_json(a), indent=2))
    shutil.copytree(TINY / BASE_DIR / BASE_FILES["tokenizer"], root / BASE_DIR / BASE_FILES["tokenizer"])
    for name in ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TINY / WAV2VEC_DIR / name, root / WAV2VEC_DIR / name)
    (root / WAV2VEC_DIR / "config.json").write_text(json.dumps(wav2vec_config(a), indent=2))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("other_tree"), other_arch())


# ------------------------------------------------------------------------------------------------------------- tests
def _layout(sd: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


def test_generator_mirrors_public_layout(arch):
    """Fed the public arch, the generator writes exactly the public files' keys, shapes and dtypes."""
    files = tree_files(arch, SEED)
    for rel, sd in files.items():
        if rel.endswith(REC):
            continue  # the public tree has only the square .pt
        path = TINY / rel
        public = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        assert _layout(sd) == _layout(public), rel
    assert parameter_counts(files) == arch["parameter_counts"]
    assert dit_config_json(arch) == json.loads((TINY / BASE_DIR / "config.json").read_text())
    assert wav2vec_config(arch) == json.loads((TINY / WAV2VEC_DIR / "config.json").read_text())


def test_dit_from_official_follows_the_trees_arch(tree):
    pt = tree / AVATAR_DIR / SQUARE
    dit = StableAvatarDiT.from_official(tree / BASE_DIR, pt)  # arch.json found next to the base folder
    assert (dit.config.dim, dit.config.num_heads, dit.config.num_layers, len(dit.blocks)) == (96, 3, 3, 3)
    assert dit.blocks[2].self_attn.q.weight.shape == (96, 96) and dit.blocks[0].ffn[0].weight.shape == (192, 96)
    assert dit.text_embedding[0].weight.shape == (96, 48) and dit.img_emb.proj[1].weight.shape == (48, 48)
    assert dit.vocal_projector.blocks[0].cross_attn.num_heads == 4
    assert dit.vocal_projector.proj_model.proj.weight.shape == (96, 768)
    sd = torch.load(pt, weights_only=True)
    assert all(torch.equal(v, sd[k].float()) for k, v in dit.state_dict().items())  # the .pt, not the base file


def _generate(tree, out, image, audio, *args):
    res = run_cli("generate", "--checkpoints", tree, "--image", image, "--audio", audio, "--out", out, "--steps", 2,
                  "--device", "cpu", "--save-latents", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    latents = load_file(str(out / "latents.safetensors"))["latents"]
    assert torch.isfinite(latents).all() and 0 < latents.std() < 100
    pngs = sorted((out / "frames").glob("*.png"))
    assert len(pngs) == manifest["video"]["frames"]
    assert imageio_ffmpeg.count_frames_and_secs(str(out / "video.mp4"))[0] == len(pngs)
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (manifest["video"]["height"], manifest["video"]["width"], 3) and first.std() > 0
    assert manifest["checkpoints"]["root"] == str(tree) and manifest["checkpoints"]["tiny_random_weights"]
    assert manifest["checkpoints"]["arch"] == json.loads((tree / "arch.json").read_text())
    assert manifest["checkpoints"]["arch"]["dit"]["hidden_dim"] == 96
    return manifest, latents


def test_square_official_log_weights(tree, tmp_path):
    audio = PARITY / "inputs" / "audio.wav"  # 16 kHz already: no resampling, so the sample count is the file's
    m, latents = _generate(tree, tmp_path / "out", PARITY / "inputs" / "reference.png", audio,
                           "--width", 64, "--height", 64, "--compat", "official", "--overlap", 4,
                           "--overlap-weights", "log", "--seed", 7)
    t = (sf.info(audio).frames // 640 - 1) // 4 + 1  # official: T = (frames - 1)//4 + 1, video 4(T-1)+1 frames
    assert latents.shape == (1, 16, t, 8, 8) and m["video"]["frames"] == 4 * (t - 1) + 1
    assert len(m["windows"]) > 1 and m["checkpoints"]["transformer"].endswith(SQUARE)
    assert {k: m["params"][k] for k in ("width", "height", "steps", "seed", "overlap", "overlap_weights", "compat")} \
        == {"width": 64, "height": 64, "steps": 2, "seed": 7, "overlap": 4, "overlap_weights": "log",
            "compat": "official"}
    assert set(m["checkpoints"]["sha256"]) >= {f"{AVATAR_DIR}/{SQUARE}", f"{BASE_DIR}/{BASE_FILES['vae']}"}


def test_portrait_fixed_stereo_speech_uses_rec_vec(tree, tmp_path):
    wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16", always_2d=True)
    assert wave.shape[1] == 2 and sr == 16000
    clip = tmp_path / "speech5s.wav"
    sf.write(clip, wave[: 5 * sr], sr)
    m, latents = _generate(tree, tmp_path / "out", MEDIA / "case-2-reference.png", clip, "--width", 48,
                           "--height", 80, "--compat", "fixed", "--overlap", 10)
    assert m["video"]["frames"] == 5 * sr // 640 and latents.shape[-2:] == (10, 6)
    assert [w["fuse"] for w in m["windows"]][1:] == [10] * (len(m["windows"]) - 1) and len(m["windows"]) > 1
    assert m["checkpoints"]["transformer"].endswith(REC)
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "out" / "video.mp4")],
                       capture_output=True, text=True, check=False)  # ffmpeg -i alone exits 1
    assert "Audio:" in r.stderr


def test_audio_native_guidance_with_transformer_override(tree, tmp_path):
    m, _ = _generate(tree, tmp_path / "out", PARITY / "inputs" / "reference.png",
                     PARITY / "inputs" / "audio_one_window.wav", "--width", 64, "--height", 64,
                     "--guidance", "audio-native", "--transformer", tree / AVATAR_DIR / REC)
    assert m["guidance"] == "audio-native" and m["checkpoints"]["transformer"].endswith(REC)
