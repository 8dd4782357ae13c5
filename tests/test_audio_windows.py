"""Per-latent-frame audio token windows against the official split_audio_sequence / split_tensor_with_padding."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stableavatar.audio_windows import audio_token_ranges, split_audio_per_latent_frame, window_centres_in_frames


def _cases(parity_dir):
    return json.loads((parity_dir / "manifest.json").read_text())["audio_windows"]["cases"]


@pytest.fixture(scope="module")
def windows_fixture(parity_dir):
    return load_file(parity_dir / "fixtures" / "audio_windows.safetensors")


def test_all_nine_fixture_cases_exact(parity_dir, windows_fixture):
    cases = _cases(parity_dir)
    assert len(cases) == 9
    for case in cases:
        key, n_tokens, n_frames, expand = case["key"], case["L_a"], case["num_frames"], case["expand_length"]
        ranges = audio_token_ranges(n_tokens, n_frames)
        assert [list(r) for r in ranges] == case["ranges"], key
        assert len(ranges) == (n_frames - 1) // 4 + 1, key

        windows = split_audio_per_latent_frame(windows_fixture[f"{key}_input"], n_frames, expand)
        expected = windows_fixture[f"{key}_windows"]
        assert list(windows.shape) == case["windows_shape"], key
        assert torch.equal(windows, expected), key
        # the official true lengths = non-padding tokens (the input is 1 + arange, so 0 marks padding)
        assert (windows[0, :, :, 0] != 0).sum(1).tolist() == case["k_lens"], key


def test_front_overflow_is_padded_at_the_end():
    # 161 tokens / 81 frames: first range [-5, 1] widened to [-9, 5] -> tokens 0..5 first, then 9 zeros
    tokens = 1 + torch.arange(161.0).view(1, 161, 1)
    first = split_audio_per_latent_frame(tokens)[0, 0, :, 0]
    assert first.tolist() == [1, 2, 3, 4, 5, 6] + [0] * 9


def test_batch_and_feature_dims_are_independent():
    tokens = torch.randn(3, 167, 5)
    out = split_audio_per_latent_frame(tokens)
    assert out.shape == (3, 21, 17, 5)
    for b in range(3):
        assert torch.equal(out[b:b + 1], split_audio_per_latent_frame(tokens[b:b + 1]))


def test_window_centres_fixed_mode_land_on_their_latent_frames():
    # fixed mode: every window gets exactly 81 frames of audio = 161 wav2vec2 tokens
    centres = window_centres_in_frames(161, 81)
    assert len(centres) == 21
    for i, c in enumerate(centres):
        first, last = (0, 0) if i == 0 else (4 * i - 3, 4 * i)
        assert first - 1 <= c <= last + 1, (i, c)


def test_window_centres_show_the_official_84_frame_stretch():
    # official non-final windows: 84 frames (167 tokens) split as if 81 -> latent 20 is ~2 frames late
    fixed, stretched = window_centres_in_frames(161, 81), window_centres_in_frames(167, 81)
    assert stretched[1] - fixed[1] <= 0.5
    assert stretched[20] - fixed[20] >= 2


def test_too_few_frames_rejected():
    with pytest.raises(ValueError):
        audio_token_ranges(40, num_frames=4)
