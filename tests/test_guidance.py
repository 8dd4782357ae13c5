"""Both guidance modes: the three batched branches receive exactly the inputs guidance.py defines, and the
velocities combine with its formulas; an unknown mode is refused."""
import pytest
import torch

from stableavatar import guidance
from stableavatar.engine import Engine
from stableavatar.errors import UserInputError
from stableavatar.job import prepare_job
from stableavatar.contract import GenerationParams


@pytest.fixture(scope="module")
def engine(tiny_tree):
    return Engine.load(tiny_tree, device="cpu", dtype="float32")


def capture_first_call(engine, parity_dir, clip, tmp_path, **kw):
    params = GenerationParams(width=64, height=64, steps=1, prompt="The protagonist is talking", **kw)
    dit = engine.dit_for(params)
    seen = {}

    class Seen(Exception):
        pass

    def hook(module, args, kwargs):
        names = ["x", "t", "context", "clip_fea", "y", "audio_features", "audio_index"]
        seen.update(dict(zip(names, args)), **kwargs)
        raise Seen  # the first forward is all this test needs

    handle = dit.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with pytest.raises(Seen):
            engine.generate(prepare_job(parity_dir / "inputs" / "reference.png", clip, params), tmp_path / "out")
    finally:
        handle.remove()
    text = engine._text_cache
    ids = ["pos" if torch.equal(c, text[params.prompt]) else "neg" if torch.equal(c, text[params.negative_prompt])
           else "?" for c in seen["context"]]
    feats = seen["audio_features"]
    rows = ["zero" if not feats[k].any() else "audio" for k in range(len(feats))]
    branch_audio = [None if i is None else rows[i] for i in seen["audio_index"]]
    return ids, branch_audio, seen


@pytest.mark.parametrize("guidance,compat,want_text,want_audio", [
    ("official", "official", ["neg", "neg", "pos"], [None, "audio", "audio"]),   # released: zeros after the adapter
    ("official", "fixed", ["neg", "neg", "pos"], ["zero", "audio", "audio"]),    # fixed: zero features before it
    ("audio-native", "fixed", ["neg", "pos", "pos"], [None, "zero", "audio"]),
    ("audio-native", "official", ["neg", "pos", "pos"], [None, "zero", "audio"]),
])
def test_branch_inputs(guidance, compat, want_text, want_audio, engine, parity_dir, tmp_path):
    text, audio, seen = capture_first_call(engine, parity_dir, parity_dir / "inputs" / "audio.wav", tmp_path,
                                           guidance=guidance, compat=compat)
    assert (text, audio) == (want_text, want_audio)
    assert seen["x"].shape[0] == 3  # the three branches go through one batched forward


def test_combination_formulas():
    u, d, c = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    assert guidance.get("official").combine((u, d, c), text_scale=3, audio_scale=5) == 1 + 5 * (2 - 1) + 3 * (4 - 2)
    assert guidance.get("audio-native").combine((u, d, c), text_scale=3, audio_scale=5) == 1 + 3 * (2 - 1) + 5 * (4 - 2)


def test_unknown_mode_is_refused_with_the_known_names():
    with pytest.raises(UserInputError) as err:
        guidance.get("cfg-zero")
    assert "cfg-zero" in err.value.message and "official" in err.value.hint and "audio-native" in err.value.hint
    assert all(m.num_branches == len(m.audio) for m in guidance.MODES.values())
    assert guidance.MAX_BRANCHES == 3
