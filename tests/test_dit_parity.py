"""StableAvatarDiT (+ audio adapter) against the official forward fixtures, and its checkpoint loading."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from stableavatar.dit import StableAvatarDiT
from stableavatar.errors import CheckpointError

TOL = dict(atol=2e-4, rtol=1e-4)  # parity README §7 / manifest "suggested_tolerance"
CASES = ["a_cond_batch1", "b_guidance_batch3", "c_guidance_batch3_short_last_window"]
INTERMEDIATES = [  # pipeline order, so the first failure says where the maths diverges
    "time_embedding_out", "time_projection_out", "text_embedding_out", "img_emb_out",
    "adapter_in_latents", "adapter_in_e0", "adapter_in_e", "adapter_proj_out", "adapter_block0_out",
    "adapter_block1_out", "adapter_out_vocal_context", "block0_out", "block1_out", "head_out",
]


@pytest.fixture(scope="module")
def paths(tiny_tree):
    return tiny_tree / "Wan2.1-Fun-V1.1-1.3B-InP", tiny_tree / "StableAvatar-1.3B" / "transformer3d-square.pt"


@pytest.fixture(scope="module")
def model(paths, arch):
    return StableAvatarDiT.from_official(*paths, arch)


@pytest.fixture(scope="module")
def manifest(parity_dir):
    return json.loads((parity_dir / "manifest.json").read_text())["dit_forward"]["cases"]


def load_case(parity_dir, manifest, name):
    case = manifest[name]
    fixture = load_file(parity_dir / case["file"])
    source, key = case["vocal_embeddings"]["source"].split("::")
    audio = load_file(parity_dir / source)[key]  # A [1, L_a, 768]
    # manifest: batch 1 -> A; batch 3 -> cat([zeros, A, A]), i.e. zeros AFTER the adapter for branch 0
    audio_index = [0] if case["batch"] == 1 else [None, 0, 0]
    return case, fixture, audio, audio_index


def run(model, case, fixture, audio, audio_index, seq_len="manifest"):
    with torch.no_grad():
        return model(fixture["x"], fixture["t"], [fixture[f"context_{i}"] for i in range(case["batch"])],
                     fixture["clip_fea"], fixture["y"], audio, audio_index,
                     seq_len=case["seq_len"] if seq_len == "manifest" else seq_len,
                     audio_num_frames=case["video_sample_n_frames"])


def capture_intermediates(model):
    """Forward hooks producing the fixture's `intermediate.*` names (official hook points)."""
    got, handles = {}, []

    def keep(name, fn=lambda args, out: out):
        return lambda mod, args, out: got.__setitem__(name, fn(args, out))

    adapter = model.vocal_projector
    handles += [
        model.time_embedding.register_forward_hook(keep("time_embedding_out")),
        model.time_projection.register_forward_hook(keep("time_projection_out")),
        model.text_embedding.register_forward_hook(keep("text_embedding_out")),
        model.img_emb.register_forward_hook(keep("img_emb_out")),
        adapter.register_forward_hook(keep("adapter_in_latents", lambda a, o: a[1])),
        adapter.register_forward_hook(keep("adapter_in_e0", lambda a, o: a[2])),
        adapter.register_forward_hook(keep("adapter_in_e", lambda a, o: a[3])),
        adapter.proj_model.register_forward_hook(keep("adapter_proj_out")),
        adapter.register_forward_hook(keep("adapter_out_vocal_context")),
        model.head.register_forward_hook(keep("head_out")),
    ]
    handles += [b.register_forward_hook(keep(f"adapter_block{i}_out")) for i, b in enumerate(adapter.blocks)]
    handles += [b.register_forward_hook(keep(f"block{i}_out")) for i, b in enumerate(model.blocks)]
    return got, handles


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_official(model, parity_dir, manifest, name):
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, name)
    got, handles = capture_intermediates(model)
    try:
        out = run(model, case, fixture, audio, audio_index)
    finally:
        for h in handles:
            h.remove()

    num_tokens = case["latent_frames"] * (case["latent_hw"][0] // 2) * (case["latent_hw"][1] // 2)  # patch 1x2x2
    stored = {k.removeprefix("intermediate.") for k in fixture if k.startswith("intermediate.")}
    assert stored - set(INTERMEDIATES) == {"adapter_out_vocal_context_lens"}  # lens are ignored by the official code
    for name_ in [n for n in INTERMEDIATES if n in stored]:
        actual, expected = got[name_].float(), fixture[f"intermediate.{name_}"]
        if name_ == "head_out":  # we skip the head on padding tokens (unpatchify drops them anyway)
            expected = expected[:, :num_tokens]
        torch.testing.assert_close(actual, expected, **TOL, msg=lambda m: f"{name_}: {m}")
    torch.testing.assert_close(out, fixture["output"], **TOL)
    print(f"{name}: output max abs diff {(out - fixture['output']).abs().max().item():.3g}")


def test_time_embedding_uses_float64_sinusoid(model, parity_dir, manifest):
    # float64 cos-first sinusoid (fixture quirk 12): e/e0 agree to GEMM rounding (~3e-7 on this CPU; bit-exact
    # where the fixture machine's kernels are used), while a float32 sinusoid is off by ~1e-5
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "b_guidance_batch3")
    got, handles = capture_intermediates(model)
    try:
        run(model, case, fixture, audio, audio_index)
    finally:
        for h in handles:
            h.remove()
    for key in ("time_embedding_out", "time_projection_out"):
        torch.testing.assert_close(got[key], fixture[f"intermediate.{key}"], atol=2e-6, rtol=0)


def test_padding_and_post_adapter_zeros_matter(model, parity_dir, manifest):
    """The fixtures are sensitive to the quirks: dropping them fails the tolerance."""
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "c_guidance_batch3_short_last_window")
    unpadded = run(model, case, fixture, audio, audio_index, seq_len=None)
    assert (unpadded - fixture["output"]).abs().max() > 1e-2

    case, fixture, audio, _ = load_case(parity_dir, manifest, "b_guidance_batch3")
    all_audio = run(model, case, fixture, audio, [0, 0, 0])
    assert (all_audio[0] - fixture["output"][0]).abs().max() > 1e-2
    torch.testing.assert_close(all_audio[1:], fixture["output"][1:], **TOL)


def test_adapter_runs_per_feature_row(model, parity_dir, manifest):
    """K feature rows (audio-native guidance: A(0, z, t) and A(f, z, t)) map to branches through audio_index."""
    case, fixture, audio, _ = load_case(parity_dir, manifest, "b_guidance_batch3")
    rows = torch.cat([torch.zeros_like(audio), audio])  # row 0: zero features BEFORE the adapter
    out = run(model, case, fixture, rows, [0, 1, 1])
    torch.testing.assert_close(out[1:], fixture["output"][1:], **TOL)
    # pre-adapter zeros are not post-adapter zeros (spec §9 item 10)
    assert (out[0] - fixture["output"][0]).abs().max() > 1e-2


def test_unconditional_branch_alone(model, parity_dir, manifest):
    # branch u of case b run on its own: no branch hears audio, so the adapter is skipped entirely
    case, fixture, audio, _ = load_case(parity_dir, manifest, "b_guidance_batch3")
    one = {k: fixture[k][:1] for k in ("x", "t", "clip_fea", "y")} | {"context_0": fixture["context_0"]}
    out = run(model, dict(case, batch=1), one, audio, [None])
    torch.testing.assert_close(out[0], fixture["output"][0], **TOL)


def test_bfloat16_runs_close_to_float32(paths, arch, parity_dir, manifest):
    model = StableAvatarDiT.from_official(*paths, arch, dtype=torch.bfloat16)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert model.time_embedding[0].weight.dtype == torch.float32  # official: time MLPs in fp32
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "c_guidance_batch3_short_last_window")
    out = run(model, case, fixture, audio, audio_index)
    assert out.dtype == torch.bfloat16
    err = (out.float() - fixture["output"]).abs().max() / fixture["output"].abs().max()
    assert err < 0.05, err


def test_diffusers_offload_and_casting_hooks(paths, arch, parity_dir, manifest):
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "b_guidance_batch3")
    model = StableAvatarDiT.from_official(*paths, arch)
    cpu = torch.device("cpu")
    model.enable_group_offload(onload_device=cpu, offload_device=cpu, offload_type="block_level",
                               num_blocks_per_group=1)
    torch.testing.assert_close(run(model, case, fixture, audio, audio_index), fixture["output"], **TOL)

    model = StableAvatarDiT.from_official(*paths, arch)
    model.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)  # .pt is bf16: lossless
    torch.testing.assert_close(run(model, case, fixture, audio, audio_index), fixture["output"], **TOL)


def _official_rope(x, grid, head_dim):
    """Transcription of the official rope_params + rope_apply (complex128 table, padding left unrotated)."""
    def params(dim):
        freqs = torch.outer(torch.arange(1024), 1.0 / torch.pow(10000, torch.arange(0, dim, 2).double().div(dim)))
        return torch.polar(torch.ones_like(freqs), freqs)

    d = head_dim
    freqs = torch.cat([params(d - 4 * (d // 6)), params(2 * (d // 6)), params(2 * (d // 6))], dim=1)
    c = d // 2
    freqs = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    f, h, w = grid
    n = f * h * w
    x_c = torch.view_as_complex(x[0, :n].float().reshape(n, x.shape[2], -1, 2))
    table = torch.cat([freqs[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
                       freqs[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                       freqs[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(n, 1, -1)
    return torch.cat([torch.view_as_real(x_c * table).flatten(2), x[0, n:]]).float()[None]


@pytest.mark.parametrize("head_dim, grid", [(128, (21, 6, 5)), (64, (13, 2, 2))])
def test_rope_matches_official_formula(head_dim, grid):
    # real head dim 128 -> 22/21/21 complex pairs; padded tokens (seq_len > f*h*w) stay unrotated
    from stableavatar.dit import apply_rope, rope_cos_sin

    seq_len = (grid[0] + 3) * grid[1] * grid[2]
    x = torch.randn(1, seq_len, 2, head_dim)
    ours = apply_rope(x, *rope_cos_sin(head_dim, grid, seq_len, x.device))
    torch.testing.assert_close(ours, _official_rope(x, grid, head_dim), atol=2e-6, rtol=0)
    assert torch.equal(ours[0, grid[0] * grid[1] * grid[2]:], x[0, grid[0] * grid[1] * grid[2]:])


def test_bad_seq_len_rejected(model, parity_dir, manifest):
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "a_cond_batch1")
    for bad in (83, 80):  # not a whole number of latent frames / shorter than the window
        with pytest.raises(ValueError, match="seq_len"):
            run(model, case, fixture, audio, audio_index, seq_len=bad)


# --------------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------------

def test_arch_json_is_found_next_to_the_base_folder(paths, model):
    auto = StableAvatarDiT.from_official(*paths, None)
    assert dict(auto.config) == dict(model.config)
    assert auto.config.image_dim == 64 and auto.config.dim == 128


def test_real_size_key_count_on_meta_device():
    with torch.device("meta"):
        real = StableAvatarDiT()
    state = real.state_dict()
    assert len(state) == 1143  # spec §4.7: 36 x 30 blocks + 23 top-level + 40 adapter
    assert all(t.is_meta for t in state.values())
    assert abs(sum(t.numel() for t in state.values()) - 1.747e9) < 1e6  # spec §4.8
    assert sum(k.startswith("vocal_projector.") or "_vocal." in k for k in state) == 40 + 4 * 30


def test_tiny_key_count(model):
    assert len(model.state_dict()) == 135


@pytest.fixture
def edited_pt(tmp_path, paths):
    def make(edit):
        state = torch.load(paths[1], map_location="cpu", weights_only=True)
        edit(state)
        out = tmp_path / "transformer3d-edited.pt"
        torch.save(state, out)
        return out
    return make


def test_missing_key_is_named(paths, arch, edited_pt):
    pt = edited_pt(lambda s: s.pop("blocks.1.cross_attn.k_vocal.weight"))
    with pytest.raises(CheckpointError, match=r"missing.*blocks\.1\.cross_attn\.k_vocal\.weight"):
        StableAvatarDiT.from_official(paths[0], pt, arch)


def test_unexpected_key_is_named(paths, arch, edited_pt):
    pt = edited_pt(lambda s: s.__setitem__("blocks.0.cross_attn.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected.*blocks\.0\.cross_attn\.extra\.weight"):
        StableAvatarDiT.from_official(paths[0], pt, arch)


def test_state_dict_wrapper_is_unwrapped(paths, arch, tmp_path, parity_dir, manifest):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": torch.load(paths[1], weights_only=True)}, wrapped)
    model = StableAvatarDiT.from_official(paths[0], wrapped, arch)
    case, fixture, audio, audio_index = load_case(parity_dir, manifest, "a_cond_batch1")
    torch.testing.assert_close(run(model, case, fixture, audio, audio_index), fixture["output"], **TOL)


class NotATensor:  # a pickled custom object: weights_only must refuse it
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_object_is_a_checkpoint_error(paths, arch, tmp_path, capsys):
    bad = tmp_path / "transformer3d-bad.pt"
    torch.save({"patch_embedding.weight": NotATensor()}, bad)
    with pytest.raises(CheckpointError):
        StableAvatarDiT.from_official(paths[0], bad, arch)
    assert "must never run" not in capsys.readouterr().out


def test_base_weights_alone_are_rejected(paths, arch):
    with pytest.raises(CheckpointError, match="audio weights") as info:
        StableAvatarDiT.from_official(paths[0], None, arch)
    assert "transformer3d-" in info.value.hint


def test_config_without_arch_mismatches_tiny_weights(paths, tmp_path):
    # the tiny tree needs its arch.json: config.json alone gives the real image width (1280) -> shape error
    base = tmp_path / "Wan2.1-Fun-V1.1-1.3B-InP"
    base.mkdir()
    shutil.copy(paths[0] / "config.json", base / "config.json")
    with pytest.raises(CheckpointError, match="shape mismatch.*img_emb"):
        StableAvatarDiT.from_official(base, paths[1], None)
