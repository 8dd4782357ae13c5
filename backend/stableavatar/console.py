"""What people see on the terminal: the tiny-weights warning, a tqdm bar that follows the engine's progress,
and one-line progress for `resume`. The CLI, the demo and `resume` share them."""
from __future__ import annotations

import sys

from . import contract


def warn_tiny(root) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! {root} holds the TINY RANDOM-WEIGHT parity checkpoints, not the real model.\n"
          "!! The output is coloured noise. It proves the pipeline runs end to end; for real avatars run\n"
          f"!! `stableavatar download --to checkpoints` and pass --checkpoints checkpoints.\n{bar}", file=sys.stderr)


class TqdmHooks:
    """A tqdm bar on stderr that follows the engine's progress events."""

    def __init__(self):
        self.bar = None
        self.phase = None

    def hooks(self):
        from .engine import Hooks

        return Hooks(progress=self.on_progress)

    def on_progress(self, ev: dict) -> None:
        from tqdm import tqdm

        if ev["phase"] != self.phase:
            if self.bar is not None:
                self.bar.close()
            self.phase = ev["phase"]
            total = {"denoise": ev["steps"] * ev["windows"], "decode": ev["frames_total"]}.get(self.phase)
            unit = {"denoise": "window", "decode": "frame"}.get(self.phase, "it")
            self.bar = tqdm(total=total, desc=self.phase, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            disable=None if total else True)
        if self.bar is None or self.bar.disable:
            return
        if self.phase == "denoise":
            # `step` counts completed steps, `window` the windows done in the step under way
            self.bar.n = min(ev["step"] * ev["windows"] + ev["window"] % ev["windows"], self.bar.total)
            self.bar.set_postfix(step=f"{min(ev['step'] + 1, ev['steps'])}/{ev['steps']}", refresh=False)
        elif self.phase == "decode":
            self.bar.n = ev["frames_written"]
        self.bar.refresh()
        if ev.get("fraction") == 1.0:
            self.bar.close()


class LinePrinter:
    """Human progress on stderr, one line per phase/step change (stdout is kept for the result paths)."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines
        self._last = None

    def __call__(self, msg: dict) -> None:
        if self.json_lines:
            sys.stdout.write(contract.encode(msg).decode("utf-8"))
            sys.stdout.flush()
            return
        if msg["type"] != "progress":
            return
        tenths = 10 * (msg.get("frames_written") or 0) // max(1, msg.get("frames_total") or 1)
        key = (msg["phase"], msg["step"], msg["window"], tenths)
        if key == self._last:
            return
        self._last = key
        parts = [msg["phase"]]
        if msg.get("steps"):
            parts.append(f"step {msg['step']}/{msg['steps']}")
        if msg.get("windows"):
            parts.append(f"window {msg['window']}/{msg['windows']}")
        if msg["phase"] in ("decode", "mux") and msg.get("frames_total"):
            parts.append(f"frames {msg['frames_written']}/{msg['frames_total']}")
        if msg.get("fraction") is not None:
            parts.append(f"{100 * msg['fraction']:.0f}%")
        if msg.get("eta_s") is not None:
            parts.append(f"eta {msg['eta_s']:.0f}s")
        print("  ".join(parts), file=sys.stderr, flush=True)
