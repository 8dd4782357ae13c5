"""Per-latent-frame audio token windows (docs/method.md §6.2): which wav2vec2 tokens each latent frame's audio adapter sees.

This is the official index maths, quirks included, because the checkpoints were trained with it:

* `audio_token_ranges` = `split_audio_sequence` (wan/models/vocal_projector_fantasy.py): the token sequence is
  assumed to span `num_frames` video frames (81 by default, whatever the slice really holds: the "84-vs-81 stretch"
  and the final-window compression of docs/method.md §9 come from here). Latent i >= 1 gets a range centred on its
  four video frames; the first range is re-anchored to end where range 1 starts.
* `split_audio_per_latent_frame` = `split_tensor_with_padding`: every range is widened by `expand_length` tokens on
  both sides (inclusive ends); the part inside the sequence is taken and the overflow on EITHER side is appended as
  zeros at the END, so the first window is left-truncated rather than left-padded (docs/method.md §6.2; tests/data/parity/README.md).
  Every window then has `2*half + 1 + 2*expand_length` tokens.
"""
from __future__ import annotations

from torch import Tensor


def audio_token_ranges(num_tokens: int, num_frames: int = 81) -> list[tuple[int, int]]:
    """One inclusive `(start, end)` token range per latent frame, `(num_frames - 1) // 4 + 1` of them.

    Ranges may start below 0 or end past `num_tokens - 1`; `split_audio_per_latent_frame` pads those parts.
    """
    if num_tokens < 1:
        raise ValueError(f"need at least one audio token, got {num_tokens}")
    if num_frames < 5:  # the first range is anchored on the second one, so two latent frames are needed
        raise ValueError(f"num_frames must be >= 5 (two latent frames), got {num_frames}")
    tokens_per_frame = num_tokens / num_frames
    half = int(tokens_per_frame * 4 / 2)
    centres = [0]
    for i in range(1, (num_frames - 1) // 4 + 1):
        # centre of video frames 4(i-1)+1 .. 4i+1, then one token earlier; float maths as official (Python float64)
        start_token = tokens_per_frame * ((i - 1) * 4 + 1)
        end_token = tokens_per_frame * (i * 4 + 1)
        centres.append(int((start_token + end_token) / 2) - 1)
    ranges = [(c - half, c + half) for c in centres]
    # re-anchor the first range: same width, ending where range 1 starts
    ranges[0] = (ranges[1][0] - 2 * half, ranges[1][0])
    return ranges


def split_audio_per_latent_frame(tokens: Tensor, num_frames: int = 81, expand_length: int = 4) -> Tensor:
    """[B, L_a, D] -> [B, (num_frames - 1) // 4 + 1, N_a, D], N_a = 2*half + 1 + 2*expand_length.

    Valid tokens first, zeros after (front overflow included). One slice copy per latent frame (21 for a window):
    the ranges are Python ints, so no index tensor has to be sent to the device (no host-device sync).
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected audio tokens [B, L_a, D], got shape {tuple(tokens.shape)}")
    batch, num_tokens, dim = tokens.shape
    ranges = [(s - expand_length, e + expand_length) for s, e in audio_token_ranges(num_tokens, num_frames)]
    window_len = ranges[0][1] - ranges[0][0] + 1
    out = tokens.new_zeros(batch, len(ranges), window_len, dim)
    for f, (start, end) in enumerate(ranges):
        valid_start, valid_end = max(start, 0), min(end, num_tokens - 1)
        if valid_start <= valid_end:
            out[:, f, : valid_end - valid_start + 1] = tokens[:, valid_start: valid_end + 1]
    return out


def window_centres_in_frames(num_tokens: int, num_frames: int, tokens_per_second: float = 50.0,
                             fps: float = 25.0) -> list[float]:
    """Centre of each latent frame's token range (before widening), in video frames of the slice.

    Token k is taken to start at k / tokens_per_second seconds (wav2vec2 hop). Latent 0 stands for video frame 0,
    latent i >= 1 for frames 4i-3 .. 4i; comparing the two shows the alignment error of a slicing mode.
    """
    return [(s + e) / 2 / tokens_per_second * fps for s, e in audio_token_ranges(num_tokens, num_frames)]
