"""`--compat fixed`: each correction of the released code, shown against what `official` does."""
import json

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import run_cli
from stableavatar import compat
from stableavatar.audio_windows import window_centres_in_frames
from stableavatar.windows import latent_frames, plan_windows


def wav2vec_tokens(samples: int) -> int:
    n = samples
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        n = (n - k) // s + 1
    return n


def latent_frame_centre(i: int) -> float:
    """Centre, in video frames, of the pixel frames latent i decodes to (0 -> frame 0, i -> 4i-3 .. 4i)."""
    return 0.0 if i == 0 else 4 * i - 1.5


def timing_errors(samples_in_slice: int, latents_used: int) -> list[float]:
    centres = window_centres_in_frames(wav2vec_tokens(samples_in_slice), 81)
    return [centres[i] - latent_frame_centre(i) for i in range(latents_used)]


def test_fixed_window_audio_centres_land_on_their_frames():
    errs = timing_errors(81 * 640, 21)  # fixed: exactly 81 frames of audio per window
    assert max(abs(e) for e in errs) <= 1.0, errs
    official = timing_errors(84 * 640, 21)  # official: 84 frames split as if 81 -> drifts
    assert max(abs(e) for e in official) >= 1.5 and max(abs(e) for e in official) > max(abs(e) for e in errs)


def test_fixed_final_window_is_aligned_official_lags():
    samples = 10 * 16000  # the spec's example: 10 s of audio, overlap 5
    frames = samples // 640
    off = plan_windows(latent_frames(frames, compat.OFFICIAL), 5, samples, compat.OFFICIAL)[-1]
    fix = plan_windows(latent_frames(frames, compat.FIXED), 5, samples, compat.FIXED)[-1]
    assert (off.start, off.end, off.length) == (48, 63, 15)
    lag_official = -timing_errors(off.audio_end - off.audio_start, off.length)[-1]
    assert lag_official > 10  # about 16 frames (0.64 s) of lag at the end of the video
    assert fix.length == 21 and fix.audio_start == fix.start * 2560 and fix.audio_end - fix.audio_start == 81 * 640
    assert max(abs(e) for e in timing_errors(fix.audio_end - fix.audio_start, 21)) <= 1.0


def test_fixed_windows_never_pad():
    for frames in (1, 50, 82, 180, 1000):
        assert all(w.length == 21 for w in plan_windows(latent_frames(frames, compat.FIXED), 5, frames * 640,
                                                         compat.FIXED))


@pytest.fixture(scope="module")
def zero_decode(tiny_tree):
    """What the released code outputs for audio under one window: the decode of all-zero latents."""
    from stableavatar.vae import load_vae

    arch = json.loads((tiny_tree / "arch.json").read_text())
    vae = load_vae(tiny_tree / "Wan2.1-Fun-V1.1-1.3B-InP" / "Wan2.1_VAE.pth", arch["vae"])
    with torch.no_grad():
        x = vae.decode(torch.zeros(1, 16, 25, 8, 8))
    return ((x[0].float() / 2 + 0.5).clamp(0, 1) * 255).permute(1, 2, 3, 0).numpy().astype(np.uint8)


@pytest.mark.parametrize("seconds,frames", [(2.0, 50), (3.3, 82)])
def test_short_clips_give_full_length_non_blank_video(seconds, frames, tiny_tree, media_dir, tmp_path, zero_decode):
    wave, sr = sf.read(media_dir / "case-2-speech.wav", dtype="int16", always_2d=True)
    clip = tmp_path / "clip.wav"
    sf.write(clip, wave[int(1.0 * sr): int((1.0 + seconds) * sr)], sr)
    out = tmp_path / "out"
    res = run_cli("generate", "--checkpoints", tiny_tree, "--image", media_dir / "case-1-reference.png",
                  "--audio", clip, "--out", out, "--width", 64, "--height", 64, "--steps", 2, "--device", "cpu")
    assert res.returncode == 0, res.stderr[-1500:]
    pngs = sorted((out / "frames").glob("*.png"))
    assert len(pngs) == frames
    n, secs = imageio_ffmpeg.count_frames_and_secs(str(out / "video.mp4"))
    assert n == frames
    probe = run_ffprobe(out / "video.mp4")
    assert "Audio: aac" in probe and "Video: h264" in probe
    video = np.stack([np.asarray(Image.open(p)) for p in pngs]).astype(int)
    assert np.abs(video - zero_decode[: len(video)].astype(int)).mean() > 5  # not the released code's blank output
    assert np.abs(np.diff(video, axis=0)).mean() > 1  # frames change over time

    res = run_cli("generate", "--checkpoints", tiny_tree, "--image", media_dir / "case-1-reference.png",
                  "--audio", clip, "--out", tmp_path / "official", "--width", 64, "--height", 64, "--steps", 2,
                  "--device", "cpu", "--compat", "official")
    assert res.returncode == 2 and "--compat fixed" in res.stderr  # released code: blank video / endless loop


def run_ffprobe(path) -> str:
    import subprocess

    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                       text=True)
    return r.stderr
