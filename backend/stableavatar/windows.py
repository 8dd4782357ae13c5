"""Sliding-window plan over the latent sequence, the audio slice of each window, and overlap fusion (docs/method.md §7.4-7.5)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .compat import Compat
from .errors import UserInputError

WINDOW_FRAMES = 81                              # pixel frames per window (official clip length), as trained
WINDOW_LATENTS = (WINDOW_FRAMES - 1) // 4 + 1   # 21
SAMPLES_PER_LATENT = 4 * 640                    # a latent after the first covers 4 video frames of 40 ms


@dataclass(frozen=True)
class Window:
    index: int
    start: int          # latent range [start, end)
    end: int
    audio_start: int    # sample range [audio_start, audio_end); may run past the audio (zero-padded)
    audio_end: int
    fuse: int           # leading latents blended with the previous window (0 for the first window)

    @property
    def length(self) -> int:
        return self.end - self.start


def latent_frames(num_video_frames: int, compat: Compat) -> int:
    """Latent frames to generate for `num_video_frames` frames of audio.

    official: T = (frames - 1)//4 + 1 (the video comes out up to 3 frames short);
    fixed: enough latents to cover every frame (4(T-1)+1 >= frames), and at least one full window."""
    if compat.trim_to_audio:
        t = math.ceil((num_video_frames - 1) / 4) + 1
        return max(t, WINDOW_LATENTS) if compat.pad_to_window else t
    return (num_video_frames - 1) // 4 + 1


def plan_windows(num_latents: int, overlap: int, num_samples: int, compat: Compat) -> list[Window]:
    if not 2 <= overlap <= WINDOW_LATENTS - 1:
        raise UserInputError(f"overlap {overlap} is out of range 2..{WINDOW_LATENTS - 1}",
                             hint="5 is the official setting")
    if num_latents <= WINDOW_LATENTS and not compat.pad_to_window:
        raise UserInputError(
            f"audio of {num_samples / 16000:.2f} s gives {num_latents} latent frames; --compat official needs more "
            f"than {WINDOW_LATENTS} (about 3.4 s): the released code outputs a blank video below that and never "
            "terminates at exactly 21", hint="use --compat fixed (the default), which pads short audio")
    stride = WINDOW_LATENTS - overlap
    if compat.exact_final_window:
        starts = [0]
        while starts[-1] + WINDOW_LATENTS < num_latents:
            starts.append(min(starts[-1] + stride, num_latents - WINDOW_LATENTS))
        frames = compat.audio_slice_frames
        windows, prev_end = [], 0
        for k, s in enumerate(starts):
            a0 = s * SAMPLES_PER_LATENT
            windows.append(Window(k, s, s + WINDOW_LATENTS, a0, a0 + frames * 640, max(0, prev_end - s) if k else 0))
            prev_end = s + WINDOW_LATENTS
        return windows
    # official loop (long pipeline L716-790): full windows at stride S, the last one runs to T and takes
    # every remaining audio sample
    windows, s = [], 0
    while True:
        e = min(s + WINDOW_LATENTS, num_latents)
        last = e == num_latents
        a0 = s * SAMPLES_PER_LATENT
        a1 = num_samples if last else a0 + WINDOW_LATENTS * SAMPLES_PER_LATENT
        windows.append(Window(len(windows), s, e, a0, a1, overlap if s else 0))
        if last:
            return windows
        s += stride


def window_audio(wave, win: Window):
    """The window's samples; past the end of the audio, silence (fixed mode pads short and final windows)."""
    import numpy as np

    seg = wave[win.audio_start:win.audio_end]
    if seg.size < win.audio_end - win.audio_start:
        seg = np.concatenate([seg, np.zeros(win.audio_end - win.audio_start - seg.size, np.float32)])
    return seg


def fusion_weights(n: int, scheme: str):
    """Weight of the current window on its n overlap latents (1 - w goes to the previous window):
    uniform j/(n-1) or log ln(1 + (e-1) j/(n-1)); both 0 at the window's first latent (its reference-anchored frame)."""
    import torch

    ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    if scheme == "log":
        ramp = torch.log1p((math.e - 1) * ramp)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())  # official min-max normalisation (a no-op up to rounding)
    elif scheme != "uniform":
        raise UserInputError(f"overlap weights must be uniform or log, not {scheme!r}")
    return ramp.float()


def fuse_window_overlap(new, previous, weights):
    """Blend the first len(weights) latents of a freshly stepped window with the previous window's result."""
    w = weights.to(new.device, new.dtype).view(1, 1, -1, 1, 1)
    n = weights.numel()
    new[:, :, :n] = w * new[:, :, :n] + (1 - w) * previous
    return new
