"""The one place where `--compat official` and `--compat fixed` differ.

`official` reproduces the released StableAvatar code (mirror 46c0492) number for number, quirks included
(docs/method.md §9 explains each one). `fixed` (the default) corrects the bugs. Everything else in the sampler is shared.

| behaviour                         | official (released code)                         | fixed                                            |
|-----------------------------------|--------------------------------------------------|--------------------------------------------------|
| audio per non-final window        | 21*4*640 = 53760 samples (84 frames) split as if | exactly 81 frames (51840 samples), as in training|
|                                   | 81 frames: lip timing drifts up to +2 frames     |                                                  |
| audio of the final window         | everything left, squeezed onto 21 slots          | the final window is moved back to end at the     |
|                                   | (up to ~0.6 s lag at the end)                    | last latent: full 21 latents, exact 81 frames    |
| shorter final window              | zero-padded to 21 frames; padding is attended    | never shorter: no padding tokens exist           |
| audio shorter than a window       | blank video (T < 21) or endless loop (T == 21)   | padded to one window, output trimmed to length   |
| overlap fusion at step 0          | skipped (later window overwrites)                | applied at every step                            |
| null audio of the `official`      | zero context AFTER the adapter (never seen in    | zero wav2vec features BEFORE the adapter (the    |
| guidance's unconditional branch   | training)                                        | audio dropout the model was trained with)        |
| latent state                      | rounded to bf16 after every window update        | kept in float32                                  |
| video length                      | 4(T-1)+1 frames (up to 0.16 s short)             | floor(N / 640) frames: one per 40 ms of audio    |
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Compat:
    name: str
    audio_slice_frames: int | None   # frames of audio per non-final window; None: the official 84 (= 21 latents * 4)
    exact_final_window: bool         # fixed: last window shifted back to a full, exactly aligned window
    pad_to_window: bool              # fixed: audio shorter than a window is padded, never refused
    fuse_at_step0: bool
    null_audio_before_adapter: bool  # how the `official` guidance's unconditional branch drops audio
    round_state_bf16: bool
    trim_to_audio: bool              # video length = one frame per 40 ms of audio


OFFICIAL = Compat("official", audio_slice_frames=None, exact_final_window=False, pad_to_window=False,
                  fuse_at_step0=False, null_audio_before_adapter=False, round_state_bf16=True, trim_to_audio=False)
FIXED = Compat("fixed", audio_slice_frames=81, exact_final_window=True, pad_to_window=True,
               fuse_at_step0=True, null_audio_before_adapter=True, round_state_bf16=False, trim_to_audio=True)


def get(name: str) -> Compat:
    return {"official": OFFICIAL, "fixed": FIXED}[name]
