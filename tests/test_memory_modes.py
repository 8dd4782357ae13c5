"""Memory modes: the "auto" memory model (pure functions) and `place_transformer` for every mode on the CPU."""
import pytest
import torch

from stableavatar import memory
from stableavatar.dit import StableAvatarDiT

GB = 10**9
GIB = 2**30


# ---------------------------------------------------------------------------------------------------------- model
def test_parameter_constants_match_the_real_architectures():
    with torch.device("meta"):
        dit = StableAvatarDiT()
    params = dict(dit.named_parameters())
    assert sum(p.numel() for p in params.values()) == memory.DIT_PARAMS
    assert sum(p.numel() for n, p in params.items()
               if n.startswith(tuple(StableAvatarDiT._keep_in_fp32_modules))) == memory.DIT_PARAMS_FP32
    assert max(sum(p.numel() for p in m.parameters(recurse=False)) for m in dit.modules()) == memory.DIT_LARGEST_MODULE
    import re
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS as cast_types
    cast = sum(sum(p.numel() for p in m.parameters(recurse=False)) for n, m in dit.named_modules()
               if isinstance(m, cast_types) and not any(re.search(s, n) for s in memory.FP8_SKIP))
    assert cast == memory.DIT_PARAMS_FP8

    from diffusers import AutoencoderKLWan
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    from stableavatar.vae import vae_config
    with torch.device("meta"):
        assert sum(p.numel() for p in AutoencoderKLWan(**vae_config(None)).parameters()) == memory.VAE_PARAMS
        assert sum(p.numel() for p in Wav2Vec2Model(Wav2Vec2Config()).parameters()) == memory.WAV2VEC_PARAMS


def test_weight_bytes_per_mode():
    full = memory.dit_weight_bytes("full")
    assert 3.4 * GB < full < 3.6 * GB                          # spec §4.8: ~3.5 GB in bf16
    assert memory.dit_weight_bytes("model_offload") == full
    assert 1.7 * GB < memory.dit_weight_bytes("fp8") < 1.9 * GB
    assert memory.dit_weight_bytes("sequential_offload") < 0.2 * GB
    assert memory.dit_weight_bytes("full", torch.float32) > 1.9 * full
    with pytest.raises(ValueError):
        memory.dit_weight_bytes("auto")


def test_activations_scale_with_tokens_and_branches():
    a512 = memory.activation_bytes(512, 512)
    a480 = memory.activation_bytes(480, 832)
    assert a480 > a512
    # linear in tokens: 32760 / 21504 tokens (the constant term aside)
    lin = lambda w, h: memory.activation_bytes(w, h) - memory.ACT_CONSTANT
    assert lin(480, 832) / lin(512, 512) == pytest.approx(32760 / 21504)
    assert memory.activation_bytes(480, 832, branches=1) < a480
    assert memory.activation_bytes(480, 832, torch.float32) == 2 * a480
    assert memory.activation_bytes(832, 480) == a480
    for bad in ((500, 512), (0, 512), (512, -16)):
        with pytest.raises(ValueError):
            memory.activation_bytes(*bad)


@pytest.mark.parametrize("size", [(512, 512), (480, 832), (832, 480)])
def test_estimates_order_the_modes(size):
    est = {m: memory.estimate_peak_bytes(m, *size) for m in memory.APPROX_MODES_BY_SPEED}
    for e in est.values():
        assert set(e) == {"encode", "denoise", "decode", "total"}
        assert e["total"] > max(e["encode"], e["denoise"], e["decode"])   # margins are added
    assert est["full"]["total"] > est["model_offload"]["total"] >= est["sequential_offload"]["total"]
    # sequential offload only helps while the DiT runs; at 480x832 the VAE decode sets the floor of the job
    assert est["model_offload"]["denoise"] > est["sequential_offload"]["denoise"]
    assert est["full"]["total"] > est["fp8"]["total"]
    assert est["fp8"]["denoise"] < est["model_offload"]["denoise"]
    # the whole job fits an 80 GB card with a wide margin; full mode needs more than a 12 GB card at 480x832
    assert est["full"]["total"] < 24 * GB
    assert est["sequential_offload"]["total"] < est["full"]["total"] / 1.3


def test_choose_memory_mode_picks_the_fastest_that_fits():
    choose = memory.choose_memory_mode
    assert choose(78 * GIB, 480, 832) == "full"
    assert choose(78 * GIB, 512, 512, torch.float32) == "full"
    assert choose(0, 512, 512) == "sequential_offload"          # nothing fits: the smallest mode
    for w, h in ((512, 512), (480, 832)):
        need = {m: memory.estimate_peak_bytes(m, w, h)["total"] for m in memory.APPROX_MODES_BY_SPEED}
        assert choose(need["full"], w, h) == "full"
        assert choose(need["full"] - 1, w, h) == "model_offload"
        assert choose(need["model_offload"] - 1, w, h) == "sequential_offload"
        # fp8 is approximate: only with allow_approximate, and then before sequential_offload
        if need["fp8"] < need["model_offload"]:
            assert choose(need["model_offload"] - 1, w, h, allow_approximate=True) == "fp8"
        assert choose(need["full"] - 1, w, h, allow_approximate=True) == "model_offload"


def test_choose_memory_mode_is_monotonic_in_free_memory():
    speed = {m: i for i, m in enumerate(memory.APPROX_MODES_BY_SPEED)}
    for size in ((512, 512), (480, 832)):
        prev = None
        for gib in range(41):
            mode = memory.choose_memory_mode(gib * GIB, *size)
            assert mode in memory.EXACT_MODES_BY_SPEED
            if prev is not None:
                assert speed[mode] <= speed[prev]   # more memory never picks a slower mode
            prev = mode
        # bigger frames need at least as much memory
        assert memory.estimate_peak_bytes("full", 480, 832)["total"] > memory.estimate_peak_bytes("full", 512, 512)["total"]
    with pytest.raises(ValueError):
        memory.choose_memory_mode(-1, 512, 512)


def test_12gb_cards():
    """The product target: a 12 GB card (about 11 GiB free) runs 512x512 and 480x832 in an exact mode."""
    free = 11 * GIB
    assert memory.choose_memory_mode(free, 512, 512) in ("full", "model_offload")
    assert memory.choose_memory_mode(free, 480, 832) != "full"
    assert not memory.encoder_fits("text", free, "full", 512, 512)      # umT5 (11.4 GB) must go to the CPU there
    assert memory.encoder_fits("image", free, "model_offload", 512, 512)
    assert memory.encoder_fits("text", 78 * GIB, "full", 480, 832)


def test_resolve_memory_mode():
    assert memory.resolve_memory_mode("fp8", "cuda", 512, 512) == "fp8"   # explicit modes pass through
    assert memory.resolve_memory_mode("auto", "cpu", 512, 512) == "full"


# ---------------------------------------------------------------------------------------------------- placement
@pytest.fixture(scope="module")
def tiny_dit(arch):
    torch.manual_seed(0)
    with torch.device("meta"):
        model = StableAvatarDiT(**StableAvatarDiT.config_from_official({}, arch))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5 if p.ndim > 1 else 1) if p.ndim > 1 or "modulation" in n
                    else (torch.ones_like(p) if "norm" in n else torch.randn_like(p) * 0.02))
    return model.eval()


def _inputs(cfg, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.out_dim, 21, 4, 4, generator=g)
    y = torch.randn(3, cfg.in_dim - cfg.out_dim, 21, 4, 4, generator=g)
    ctx = [torch.randn(12, cfg.text_dim, generator=g), torch.randn(12, cfg.text_dim, generator=g),
           torch.randn(5, cfg.text_dim, generator=g)]
    clip = torch.randn(3, 257, cfg.image_dim, generator=g)
    audio = torch.randn(2, 161, cfg.audio_in_dim, generator=g)
    t = torch.full((3,), 700.0)
    return (x.to(dtype), t, [c.to(dtype) for c in ctx], clip.to(dtype), y.to(dtype), audio.to(dtype), [0, 1, 1])


def _copy(model, dtype):
    import copy
    m = copy.deepcopy(model)
    for name, child in m.named_children():
        child.to(torch.float32 if name.startswith(("time_embedding", "time_projection")) else dtype)
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["full", "model_offload", "sequential_offload"])
def test_exact_modes_on_cpu_are_equivalent(tiny_dit, mode, dtype):
    cpu = torch.device("cpu")
    ref = _copy(tiny_dit, dtype)
    placed = memory.place_transformer(_copy(tiny_dit, dtype), mode, cpu, dtype)
    args = _inputs(tiny_dit.config, dtype)
    with torch.no_grad(), memory.dit_on_device(placed, mode, cpu) as dit:
        out = dit(*args, audio_num_frames=81)
    with torch.no_grad():
        expected = ref(*args, audio_num_frames=81)
    assert not placed.training and not any(p.requires_grad for p in placed.parameters())
    assert all(p.device.type == "cpu" for p in placed.parameters())
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_storage_is_close(tiny_dit, dtype):
    cpu = torch.device("cpu")
    placed = memory.place_transformer(_copy(tiny_dit, dtype), "fp8", cpu, dtype)
    stored = {n: p.dtype for n, p in placed.named_parameters()}
    assert stored["blocks.0.ffn.0.weight"] == torch.float8_e4m3fn
    assert stored["blocks.0.cross_attn.k_vocal.weight"] == torch.float8_e4m3fn
    assert stored["vocal_projector.blocks.0.cross_attn.q.weight"] == torch.float8_e4m3fn
    for kept in ("blocks.0.modulation", "blocks.0.norm3.weight", "patch_embedding.weight", "head.head.weight",
                 "time_projection.1.weight", "text_embedding.0.weight", "img_emb.proj.1.weight"):
        assert stored[kept] != torch.float8_e4m3fn, kept
    args = _inputs(tiny_dit.config, dtype)
    with torch.no_grad():
        out = placed(*args, audio_num_frames=81).float()
        ref = _copy(tiny_dit, torch.float32)(*[a.float() if torch.is_tensor(a) and a.is_floating_point() else
                                               ([c.float() for c in a] if isinstance(a, list) and a and torch.is_tensor(a[0]) else a)
                                               for a in args], audio_num_frames=81)
    assert torch.isfinite(out).all()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.1, float(rel)                          # 3 mantissa bits per weight: a few percent
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert cos > 0.99, float(cos)
