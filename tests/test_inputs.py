"""Reference images and driving audio: odd but valid input is converted correctly, bad input is refused clearly."""
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from stableavatar.audio import load_audio
from stableavatar.errors import UserInputError
from stableavatar.image import load_reference
from stableavatar.contract import ContractError, GenerationParams


def test_official_squash_matches_the_e2e_reference(parity_dir):
    from safetensors.torch import load_file

    ref = load_file(parity_dir / "e2e" / "e2e_outputs.safetensors")["reference_image"][:, :, 0]
    got = load_reference(parity_dir / "inputs" / "reference.png", 64, 64, "squash")
    assert torch.equal(got, ref)


def test_rgba_is_composited_not_stripped(media_dir, tmp_path):
    src = Image.open(media_dir / "case-3-reference.png")
    assert src.mode == "RGBA"  # fully opaque: compositing must leave its pixels unchanged
    x = load_reference(media_dir / "case-3-reference.png", 64, 112, "squash")
    rgb = np.asarray(src.convert("RGB").resize((64, 112), Image.BICUBIC), np.float32)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1)[None] / 255 * 2 - 1)
    # a fully transparent image becomes the background (white), whatever colour hides under alpha 0
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.allclose(load_reference(tmp_path / "clear.png", 32, 32), torch.ones(1, 3, 32, 32))


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x = load_reference(tmp_path / "deep.png", 64, 64)
    assert x.min() == -1 and x.max() == 1 and len(torch.unique(x)) > 200  # full range kept, not saturated


@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
def test_fit_modes_give_the_requested_size(media_dir, fit):
    x = load_reference(media_dir / "case-6-reference.png", 48, 80, fit)  # 1920x1080 landscape into a portrait frame
    assert x.shape == (1, 3, 80, 48)


def test_crop_keeps_aspect_and_pad_letterboxes(tmp_path):
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255  # left half white, right half black
    Image.fromarray(img).save(tmp_path / "wide.png")
    crop = load_reference(tmp_path / "wide.png", 32, 32, "crop")
    pad = load_reference(tmp_path / "wide.png", 32, 32, "pad")
    assert crop[..., :, :8].mean() > 0.9 and crop[..., :, -8:].mean() < -0.9   # centre crop of the 2:1 image
    assert abs(pad[..., :4, :].mean()) < 0.2                                    # bars in the mean border colour


def test_bad_images_are_refused(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "text.png").write_text("not an image")
    for p, msg in [(tmp_path / "missing.png", "does not exist"), (tmp_path / "broken.png", "cannot read image"),
                   (tmp_path / "text.png", "cannot read image")]:
        with pytest.raises(UserInputError, match=msg):
            load_reference(p, 64, 64)


def _tone(seconds, sr, channels=1, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * 220 * t)
    return np.stack([x] * channels, 1) if channels > 1 else x


def test_stereo_48k_becomes_mono_16k(tmp_path):
    sf.write(tmp_path / "st.wav", _tone(1.0, 48000, channels=2), 48000)
    wave = load_audio(tmp_path / "st.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(wave.size - 16000) <= 1
    assert 0.25 < np.abs(wave).max() < 0.35


def test_real_stereo_speech_is_channel_mean(media_dir):
    raw, sr = sf.read(media_dir / "case-2-speech.wav", dtype="int16", always_2d=True)
    assert sr == 16000 and raw.shape[1] == 2
    wave = load_audio(media_dir / "case-2-speech.wav")
    np.testing.assert_allclose(wave[:16000], raw[:16000].astype(np.float64).mean(1) / 32768, atol=1e-6)


def test_bad_audio_is_refused(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "short.wav", _tone(0.02, 16000), 16000)   # 20 ms < one 40 ms frame
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\0\0\0WAVEfmt " + b"\x01" * 30)
    cases = [(tmp_path / "nope.wav", "does not exist"), (tmp_path / "silent.wav", "silent"),
             (tmp_path / "short.wav", "shorter than one video frame"), (tmp_path / "corrupt.wav", "cannot decode")]
    for p, msg in cases:
        with pytest.raises(UserInputError, match=msg) as err:
            load_audio(p)
        assert "\n" not in err.value.message
    assert load_audio(tmp_path / "silent.wav", allow_silent=True).size == 16000


@pytest.mark.parametrize("field,value,msg", [("width", 500, "multiple of 16"), ("height", 8, "multiple of 16"),
                                             ("overlap", 1, "overlap"), ("overlap", 21, "overlap"),
                                             ("steps", 0, "steps"), ("guidance", "cfg", "guidance"),
                                             ("compat", "legacy", "compat"), ("fit", "stretch", "fit")])
def test_parameter_validation(field, value, msg):
    with pytest.raises(ContractError, match=msg):
        GenerationParams(**{field: value}).validate()
