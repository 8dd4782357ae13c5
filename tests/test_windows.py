"""Window plan, audio slices, fusion weights and the sigma table against the official run's numbers."""
import json

import pytest
import torch

from stableavatar import compat
from stableavatar.errors import UserInputError
from stableavatar.schedule import flow_sigmas
from stableavatar.windows import (WINDOW_LATENTS, fuse_window_overlap, fusion_weights, latent_frames,
                                  plan_windows)


def test_official_plan_matches_the_e2e_run(parity_dir):
    run = json.loads((parity_dir / "e2e" / "run_args.json").read_text())
    n = run["audio"]["num_samples"]
    T = latent_frames(n // 640, compat.OFFICIAL)
    assert T == run["audio"]["latent_frames_T"]
    plan = plan_windows(T, 5, n, compat.OFFICIAL)
    got = [(w.start, w.end, w.audio_start, w.audio_end) for w in plan]
    want = [(w["latent_start"], w["latent_end"], w["audio_start"], w["audio_end"]) for w in run["windows"]]
    assert got == want
    assert [w.fuse for w in plan] == [0, 5, 5]


@pytest.mark.parametrize("T", [1, 13, 21])
def test_official_refuses_audio_the_released_code_cannot_handle(T):
    with pytest.raises(UserInputError, match="needs more than 21") as err:
        plan_windows(T, 5, T * 2560, compat.OFFICIAL)
    assert "--compat fixed" in err.value.hint


@pytest.mark.parametrize("overlap", [0, 1, 21, 25])
def test_overlap_out_of_range_is_refused(overlap):
    with pytest.raises(UserInputError, match="overlap"):
        plan_windows(63, overlap, 63 * 2560, compat.FIXED)


def test_fixed_plan_is_always_full_windows_exactly_aligned():
    for frames in [1, 2, 50, 81, 82, 85, 200, 251, 1003]:
        T = latent_frames(frames, compat.FIXED)
        assert 4 * (T - 1) + 1 >= frames and T >= WINDOW_LATENTS
        for overlap in range(2, 21):
            plan = plan_windows(T, overlap, frames * 640, compat.FIXED)
            assert plan[0].start == 0 and plan[-1].end == T
            prev_end = 0
            for w in plan:
                assert w.length == WINDOW_LATENTS
                assert w.audio_start == w.start * 2560 and w.audio_end - w.audio_start == 81 * 640
                assert w.fuse == (prev_end - w.start if w.index else 0)
                assert w.index == 0 or w.fuse >= min(overlap, 20)  # the shifted last window overlaps more, never less
                prev_end = w.end


def test_official_plan_terminates_for_every_length_and_overlap():
    for T in range(22, 300, 7):
        for overlap in range(2, 21):
            plan = plan_windows(T, overlap, T * 2560, compat.OFFICIAL)
            assert plan[-1].end == T and all(w.length > overlap for w in plan)


def test_fusion_weights_match_the_spec():
    torch.testing.assert_close(fusion_weights(5, "uniform"), torch.tensor([0, .25, .5, .75, 1]))
    torch.testing.assert_close(fusion_weights(5, "log"), torch.tensor([0, .3574, .6201, .8280, 1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        fusion_weights(10, "log"),
        torch.tensor([0, .1747, .3234, .4528, .5674, .6702, .7634, .8486, .9272, 1]), atol=1e-4, rtol=0)


def test_fusion_blends_only_the_overlap():
    new, prev = torch.ones(1, 16, 21, 2, 2), torch.zeros(1, 16, 5, 2, 2)
    out = fuse_window_overlap(new.clone(), prev, fusion_weights(5, "uniform"))
    assert out[0, 0, :5, 0, 0].tolist() == [0, .25, .5, .75, 1] and (out[:, :, 5:] == 1).all()


def test_sigma_table_is_exact(parity_dir):
    run = json.loads((parity_dir / "e2e" / "run_args.json").read_text())
    sigmas, timesteps = flow_sigmas(4)
    assert sigmas.tolist() == torch.tensor(run["scheduler"]["sigmas"], dtype=torch.float32).tolist()
    assert timesteps.tolist() == torch.tensor(run["scheduler"]["timesteps"], dtype=torch.float32).tolist()
    s50, _ = flow_sigmas(50)
    torch.testing.assert_close(s50[[0, 1, 2, 3, 47, 48, 49, 50]],
                               torch.tensor([1.0, 0.99587, 0.99160, 0.98719, 0.19280, 0.11482, 0.02441, 0.0]),
                               atol=1e-5, rtol=0)


def test_schedule_shift_follows_the_flow_shift_formula():
    def shifted(k, s):
        return k * s / (1 + (k - 1) * s)
    for k in (1.0, 3.0, 5.0, 8.0):
        sigmas, timesteps = flow_sigmas(50, k)
        # the released quirk kept for every shift: sigma_min is shifted before the grid is spaced, then again
        grid = torch.linspace(1.0, shifted(k, 1 / 1000), 50, dtype=torch.float64)
        torch.testing.assert_close(sigmas[:-1], shifted(k, grid).float(), atol=2e-6, rtol=0)
        assert sigmas[-1] == 0 and torch.equal(timesteps, sigmas[:-1] * 1000)
    assert not torch.equal(flow_sigmas(50, 3.0)[0], flow_sigmas(50)[0])
