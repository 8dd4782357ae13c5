"""Driving audio: read any format librosa/soundfile reads, mono, 16 kHz, validated."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserInputError
from .files import require_file
from .contract import SAMPLE_RATE, SAMPLES_PER_FRAME

SILENCE_PEAK = 10 ** (-70 / 20)  # below -70 dBFS everywhere: nothing to lip-sync to


def load_audio(path: str | os.PathLike, allow_silent: bool = False) -> np.ndarray:
    """float32 mono samples at 16 kHz, exactly `librosa.load(path, sr=16000)` as the official code does
    (channel mean, soxr_hq resampling), with one-line errors for unusable input."""
    path = require_file(path, "audio", hint="pass a WAV/FLAC/MP3/OGG file")
    import librosa
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warning for non-soundfile formats
            wave, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    except Exception as exc:  # soundfile/audioread raise a zoo of types for corrupt files
        if _has_nonfinite(path):  # librosa refuses NaN/inf before we see the samples
            raise _nonfinite_error(path) from None
        raise UserInputError(f"cannot decode audio file {path.name} ({type(exc).__name__})",
                             hint="use a WAV/FLAC/MP3/OGG file; re-export it if it is damaged") from None
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise _nonfinite_error(path)
    if wave.size < SAMPLES_PER_FRAME:
        raise UserInputError(
            f"audio {path.name} is {wave.size / SAMPLE_RATE * 1000:.0f} ms long, shorter than one video frame (40 ms)",
            hint="use at least 40 ms of audio (a few seconds for a meaningful result)")
    peak = float(np.abs(wave).max())
    if peak < SILENCE_PEAK and not allow_silent:
        raise UserInputError(f"audio {path.name} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)",
                             hint="check the strip's volume/mute, or allow silent audio (--allow-silent) for a closed-mouth take")
    return wave


def _has_nonfinite(path: Path) -> bool:
    """Whether soundfile reads `path` as samples of which some are NaN or infinite (float WAV/FLAC)."""
    try:
        import soundfile

        data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - not a soundfile format: it is simply undecodable
        return False
    return not np.isfinite(data).all()


def _nonfinite_error(path: Path) -> UserInputError:
    return UserInputError(f"audio file {path.name} holds NaN or infinite samples (a damaged float recording)",
                          hint="re-export the audio as 16- or 24-bit PCM, or fix the recording's damaged part")


def num_video_frames(num_samples: int) -> int:
    """Video frames fully covered by the audio: the official int(N / (sr / fps))."""
    return num_samples // SAMPLES_PER_FRAME
