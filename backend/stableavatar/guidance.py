"""The two guidance modes (docs/guidance.md): which text and audio each of the three batched branches gets,
and how their velocities combine.

Notation: u, d, c are the three branch predictions in batch order; `audio_index[b]` selects the adapter input
of branch b from `audio_rows` (None = all-zero context after the adapter)."""
from __future__ import annotations

from dataclasses import dataclass

from .compat import Compat


@dataclass(frozen=True)
class Branches:
    text: tuple[str, str, str]                 # "neg" / "pos" per branch
    audio_rows: tuple[str, ...]                # adapter inputs: "audio" = wav2vec features, "zero" = zeroed features
    audio_index: tuple[int | None, int | None, int | None]


def branches(mode: str, compat: Compat) -> Branches:
    if mode == "official":
        # u = D(T-, null audio), d = D(T-, A(f)), c = D(T+, A(f)); branch order [neg, neg, pos] as released
        if compat.null_audio_before_adapter:
            return Branches(("neg", "neg", "pos"), ("zero", "audio"), (0, 1, 1))
        return Branches(("neg", "neg", "pos"), ("audio",), (None, 0, 0))
    if mode == "audio-native":
        # u = D(T-, 0 after adapter), d = D(T+, A(0, z, t)), c = D(T+, A(f, z, t))
        return Branches(("neg", "pos", "pos"), ("zero", "audio"), (None, 0, 1))
    raise ValueError(f"unknown guidance mode {mode!r}")


def combine(mode: str, u, d, c, text_scale: float, audio_scale: float):
    if mode == "official":
        return u + audio_scale * (d - u) + text_scale * (c - d)
    return u + text_scale * (d - u) + audio_scale * (c - d)
