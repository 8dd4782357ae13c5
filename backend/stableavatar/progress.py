"""Progress events of a job: phase, step and window, frames written, the overall fraction and an ETA.

The ETA is measured from the work done so far in the current phase: DiT calls (steps x windows) while
denoising, decoded frames while decoding. Decode cost per frame is not known before the first chunk, so the
denoise-phase ETA covers denoising only. Each event is a dict with the keys of `Progress.state`; the service
forwards them as protocol `progress` messages (service/runner.py).
"""
from __future__ import annotations

import time
from typing import Callable

# share of the overall fraction per phase, in order
SPAN = {"load": (0.0, 0.02), "encode": (0.02, 0.05), "denoise": (0.05, 0.9), "decode": (0.9, 0.98),
        "mux": (0.98, 1.0)}


class Progress:
    def __init__(self, sink: Callable[[dict], None] | None, steps: int, windows: int, frames_total: int,
                 start_step: int = 0):
        self.sink, self.steps, self.windows, self.frames_total = sink, steps, windows, frames_total
        self.start_step = start_step
        self.state = {"phase": "load", "step": start_step, "steps": steps, "window": 0, "windows": windows,
                      "fraction": 0.0, "eta_s": None, "frames_written": 0, "frames_total": frames_total}
        self._t_denoise = self._t_decode = None
        self._done_calls = 0

    def _emit(self, **kw):
        self.state.update(kw)
        if self.sink:
            self.sink(dict(self.state))

    def phase(self, name: str, step: int | None = None):
        """Enter phase `name`; for "denoise", `step` is the first step to run (a resumed job starts later)."""
        if name == "denoise" and self._t_denoise is None:
            self._t_denoise = time.perf_counter()
        if name == "decode":
            self._t_decode = time.perf_counter()
        if name == "denoise" and step is not None and self.state["phase"] == "denoise":
            self.state["step"] = step
            return
        lo, _ = SPAN[name]
        self._emit(phase=name, fraction=round(max(lo, self.state["fraction"]), 4),
                   **({"step": step} if step is not None else {}))

    def window_done(self, step: int, window: int):
        """Window `window` (0-based) of step `step` (0-based) has been denoised."""
        calls_total = (self.steps - self.start_step) * self.windows
        self._done_calls += 1
        elapsed = time.perf_counter() - self._t_denoise
        per_call = elapsed / self._done_calls
        eta = per_call * (calls_total - self._done_calls)
        lo, hi = SPAN["denoise"]
        done = (step * self.windows + window + 1) / (self.steps * self.windows)
        self._emit(phase="denoise", step=step + (window + 1 == self.windows), window=window + 1,
                   fraction=round(lo + (hi - lo) * done, 4), eta_s=round(eta, 1))

    def frames(self, written: int):
        """`written` frames of the video are on disk."""
        lo, hi = SPAN["decode"]
        per_frame = (time.perf_counter() - self._t_decode) / max(1, written)
        self._emit(phase="decode", frames_written=written, eta_s=round(per_frame * (self.frames_total - written), 1),
                   fraction=round(lo + (hi - lo) * written / max(1, self.frames_total), 4))

    def done(self):
        self._emit(phase="mux", fraction=1.0, eta_s=0.0)
