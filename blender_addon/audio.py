"""Write the 16 kHz mono WAV the backend gets, with Blender's `aud` module (synchronous, works headless).

`aud` is imported lazily: in the bpy wheel it only imports after bpy, and 4.2 LTS wheels lack it.
Channels are averaged (aud's own `rechannel(1)` sums them, which clips loud stereo).
"""
from __future__ import annotations

import wave

from .audio_range import Contribution
from .contract import SAMPLE_RATE


class AudioError(Exception):
    pass


def _read(filepath: str, start: int, n: int, rate: int):
    """`n` samples of `filepath` at `rate`, from sample `start` (silence outside the file), mono float."""
    import numpy as np
    try:
        import aud
    except ImportError as exc:
        raise AudioError("this Blender has no audio support (module 'aud' missing); "
                         "use an official Blender build") from exc
    out = np.zeros(n, dtype=np.float32)
    sound = aud.Sound(filepath)
    try:
        file_rate = sound.specs[0]
    except Exception as exc:  # aud raises a generic error for unreadable files
        raise AudioError(f"cannot read sound file {filepath}: {exc}") from exc
    if file_rate != rate:
        sound = sound.resample(rate, 3)
    a, b = max(start, 0), start + n
    if b <= a:
        return out
    # +0.25 sample: limit() truncates seconds * rate, so aim inside the first wanted sample.
    data = sound.limit((a + 0.25) / rate, (b + 0.25) / rate).data()
    if data.ndim == 2:
        data = data.mean(axis=1)
    data = data[: b - a]
    out[a - start: a - start + len(data)] = data
    return out


def write_wav(contributions: list[Contribution], n_samples: int, out_path: str, rate: int = SAMPLE_RATE) -> int:
    """Mix `contributions` into `n_samples` of 16-bit mono PCM at `out_path`; returns the sample count."""
    import numpy as np
    mix = np.zeros(n_samples, dtype=np.float64)
    for c in contributions:
        n = min(c.n, n_samples - c.out_offset)
        if n > 0:
            mix[c.out_offset: c.out_offset + n] += c.volume * _read(c.filepath, c.src_start, n, rate)
    # aud decodes 16-bit PCM as x / 32767: scaling back by 32767 returns the file's own integers.
    pcm = np.clip(np.round(mix * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(out_path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return n_samples
