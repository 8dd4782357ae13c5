"""Which samples of which file a sound strip plays over a range of the timeline.

Blender plays a sound strip's file from `skip = (left_handle - content_start) / fps + sound_offset` seconds
at the strip's left handle (sequencer `BKE_sound_move_scene_sound`: frame skip = start offset, plus the
strip's `sound_offset`), until its right handle, scaled by `volume`. All maths is exact and in samples
of the output rate, so the WAV sent to the backend lines up with the timeline to the sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .contract import SAMPLE_RATE


@dataclass(frozen=True)
class StripTiming:
    """What of a sound strip decides what is heard (read through `compat.strip_timing`)."""
    name: str
    filepath: str          # absolute path of the sound file
    left: float            # first audible frame (inclusive)
    right: float           # end frame (exclusive)
    content_start: float   # frame where the file's t=0 sits (before sound_offset)
    sound_offset: float    # seconds
    volume: float


@dataclass(frozen=True)
class Contribution:
    """`n` samples of `filepath` from `src_start` (may be negative: silence before the file) added at
    `out_offset` of the output, times `volume`."""
    filepath: str
    volume: float
    out_offset: int
    src_start: int
    n: int


def range_samples(left: float, right: float, fps: Fraction, rate: int = SAMPLE_RATE) -> int:
    """Length in samples of the timeline range [left, right)."""
    return round(Fraction(right) * rate / fps) - round(Fraction(left) * rate / fps)


def contribution(strip: StripTiming, left: float, right: float, fps: Fraction,
                 rate: int = SAMPLE_RATE) -> Contribution | None:
    """What `strip` adds to the timeline range [left, right), or None when it is not heard there."""
    a, b = max(strip.left, left), min(strip.right, right)
    if b <= a:
        return None
    start_of = lambda frame: round(Fraction(frame) * rate / fps)  # noqa: E731 timeline frame -> sample
    out_offset = start_of(a) - start_of(left)
    n = start_of(b) - start_of(a)
    t_src = (Fraction(a) - Fraction(strip.content_start)) / fps + Fraction(f"{strip.sound_offset:.6f}")
    return Contribution(strip.filepath, strip.volume, out_offset, round(t_src * rate), n)


def overlapping(target: StripTiming, others: list[StripTiming]) -> list[StripTiming]:
    """The audible strips among `others` heard at the same time as `target`."""
    return [s for s in others if s.name != target.name and min(s.right, target.right) > max(s.left, target.left)]
