"""Progress of an install from the installer's own output lines: phase, package, percent. No bpy.

uv prints (without a terminal) `Resolved N packages`, `Downloading NAME (SIZE)` for every large download,
` Downloaded NAME`, `Prepared N packages`, `Installed N packages`; pip (which fetches uv itself) prints
`Collecting NAME`. The percent weighs the phases by how long they take: downloads by their announced sizes.
"""
from __future__ import annotations

import re

# the share of the whole install each phase ends at
PHASE_END = {"getting uv": 0.06, "creating the environment": 0.08, "resolving": 0.15, "downloading": 0.85,
             "unpacking": 0.92, "installing": 0.97, "checking": 1.0}
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"^\s*Downloading (\S+) \(([\d.]+)\s*(B|KiB|MiB|GiB)\)")
_DONE = re.compile(r"^\s*Downloaded (\S+)")
_ERROR = re.compile(r"^\s*(error:|×|╰─▶|ERROR:|\S*Error:)")


class Progress:
    def __init__(self):
        self.phase, self.package, self.fraction = "starting", "", 0.0
        self.sizes: dict[str, int] = {}
        self.done: set[str] = set()
        self.errors: list[str] = []

    def step(self, phase: str) -> None:
        """A new step of the plan starts (getting uv, creating the environment, installing, checking)."""
        self.phase, self.package = ("resolving" if phase == "installing" else phase), ""
        self._at_least(_start_of(self.phase))

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if _ERROR.match(line) or self.errors and line.startswith(("  ", "      ")):
            self.errors.append(line.strip())
        m = _SIZE.match(line)
        if m:
            self.phase, self.package = "downloading", m.group(1)
            self.sizes[m.group(1)] = int(float(m.group(2)) * _UNITS[m.group(3)])
            self._at_least(_start_of("downloading"))
            return
        m = _DONE.match(line)
        if m:
            self.done.add(m.group(1))
            self.package = m.group(1)
            total = sum(self.sizes.values()) or 1
            got = sum(v for k, v in self.sizes.items() if k in self.done)
            a, b = _start_of("downloading"), PHASE_END["downloading"]
            self._at_least(a + (b - a) * got / total)
            return
        for word, reached, after in (("Resolved", "resolving", "downloading"), ("Prepared", "unpacking", "installing"),
                                     ("Installed", "installing", "installing")):
            if line.startswith(word):
                self.phase, self.package = after, ""
                self._at_least(PHASE_END[reached])
                return
        m = re.match(r"^\s*(?:Collecting|Building) (\S+)", line)
        if m:
            self.package = m.group(1)

    def _at_least(self, f: float) -> None:
        self.fraction = max(self.fraction, min(1.0, f))

    def reason(self) -> str:
        """Why the install failed, in the installer's own words (the first error line and what follows it)."""
        return " ".join(self.errors[:4])[:400]

    def as_dict(self) -> dict:
        return {"phase": self.phase, "package": self.package, "percent": round(self.fraction * 100, 1)}


def _start_of(phase: str) -> float:
    names = list(PHASE_END)
    i = names.index(phase)
    return PHASE_END[names[i - 1]] if i else 0.0
