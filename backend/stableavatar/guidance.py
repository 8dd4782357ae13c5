"""Guidance modes as data: which text and audio each batched branch gets, and how the branch velocities combine.

The sampler runs every branch of a window in one batched DiT forward (`sampler.guided_velocity`); a mode says
what goes into each batch row and how the rows' outputs become one velocity. The branch count follows from the
mode, so nothing else hard-wires it.

Audio per branch, as the DiT receives it (`dit.StableAvatarDiT.forward`: `audio_index[b]` picks the adapter input
of branch b from the stacked `audio_rows`, None = an all-zero audio context after the adapter):

    AUDIO   wav2vec2 features of the window            A(f)
    ZERO    zeroed wav2vec2 features through the adapter  A(0)  (the audio dropout the model was trained with)
    NONE    no adapter output: zero audio context
    DROPPED the compat mode's null audio: ZERO when `Compat.null_audio_before_adapter`, else NONE (as released)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .compat import Compat
from .errors import UserInputError

AUDIO, ZERO, NONE, DROPPED = "audio", "zero", None, "dropped"


@dataclass(frozen=True)
class Branches:
    """A mode's batch for one compat mode, in the DiT's terms."""
    text: tuple[str, ...]                # "neg" / "pos" per branch
    audio_rows: tuple[str, ...]          # adapter inputs: AUDIO = wav2vec features, ZERO = zeroed features
    audio_index: tuple[int | None, ...]  # per branch: row of `audio_rows`, or None (zero context after the adapter)


@dataclass(frozen=True)
class GuidanceMode:
    name: str
    text: tuple[str, ...]          # "neg" / "pos" per branch
    audio: tuple[str | None, ...]  # AUDIO / ZERO / NONE / DROPPED per branch
    # (branch outputs in batch order, text_scale, audio_scale) -> velocity
    combine: Callable[[Sequence, float, float], object]

    @property
    def num_branches(self) -> int:
        return len(self.text)

    def branches(self, compat: Compat) -> Branches:
        dropped = ZERO if compat.null_audio_before_adapter else NONE
        per_branch = [dropped if a == DROPPED else a for a in self.audio]
        rows = tuple(dict.fromkeys(a for a in per_branch if a is not NONE))  # in order of first use
        return Branches(self.text, rows, tuple(None if a is NONE else rows.index(a) for a in per_branch))


def _official(out, text_scale: float, audio_scale: float):
    u, d, c = out
    return u + audio_scale * (d - u) + text_scale * (c - d)


def _audio_native(out, text_scale: float, audio_scale: float):
    u, d, c = out
    return u + text_scale * (d - u) + audio_scale * (c - d)


MODES = {m.name: m for m in (
    # as released (official wan_inference_long_pipeline.py L638 text, L739 audio, L754-755 combine):
    # u = D(T-, null audio), d = D(T-, A(f)), c = D(T+, A(f))
    GuidanceMode("official", ("neg", "neg", "pos"), (DROPPED, AUDIO, AUDIO), _official),
    # text and audio guided separately: u = D(T-, no audio), d = D(T+, A(0)), c = D(T+, A(f))
    GuidanceMode("audio-native", ("neg", "pos", "pos"), (NONE, ZERO, AUDIO), _audio_native),
)}
MAX_BRANCHES = max(m.num_branches for m in MODES.values())  # what one engine must fit, whatever the job's mode


def get(name: str) -> GuidanceMode:
    try:
        return MODES[name]
    except KeyError:
        raise UserInputError(f"unknown guidance mode {name!r}", hint=f"known modes: {', '.join(MODES)}") from None
