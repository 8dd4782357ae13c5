"""Values that cross the boundary, as specs: the generation parameters, the engine settings, the error
categories; strict JSON types."""
from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass, field

from .facts import (COMPAT_MODES, DEFAULT_PROMPT, DEVICES, DTYPES, FIT_MODES, GUIDANCE_MODES, MAX_PIXELS,
                    MAX_SIDE, MEMORY_MODE_CHOICES, MEMORY_MODE_HELP, OFFICIAL_NEGATIVE_PROMPT, OVERLAP_WEIGHTS,
                    RANDOM_SEED, RESOLUTION_MULTIPLE, RESOLUTION_PRESETS, SEED_MAX)


class ContractError(ValueError):
    """A value or message that breaks the contract. `category` says whose fault it is (see CATEGORIES)."""

    def __init__(self, message: str, hint: str | None = None, *, category: str = "bad_input",
                 op: str | None = None, id: str | None = None, ref: str | None = None):
        super().__init__(message)
        # id: the job this error decides (a rejected submit); ref: an id the request named whose job is
        # unaffected (cancel of an unknown id): a client must not mark that job failed
        self.message, self.hint, self.category, self.op, self.id, self.ref = message, hint, category, op, id, ref


# ---------------------------------------------------------------------------------------------- value specs
@dataclass(frozen=True)
class Spec:
    """One value that crosses the boundary: its type, default, allowed values and how people meet it."""
    name: str
    type: type                       # int, float, str or bool (JSON integer, number, string, boolean)
    default: object
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    multiple: int | None = None
    label: str = ""                  # the add-on's label (default: from the name)
    panel: str | None = None         # add-on panel group ("main", "guidance"); None: not in the panel
    panel_default: object = None     # the artist's default when it differs from the CLI's (None: the same)
    cli: bool = True                 # has a command-line flag
    choice_help: tuple = ()          # (choice, label, description) for the panel's enum items
    over_max: str = "bad_input"      # the error category of a value above `max` (a size limit: too_large)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def ui_label(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def ui_default(self):
        return self.default if self.panel_default is None else self.panel_default

    def check(self, value, where: str = "") -> object:
        """`value` in its canonical type, or ContractError. Strict JSON types: "false" is not a boolean, 3.5 is
        not an integer, true is not a number."""
        name = f"{where}{self.name}"
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool) or \
                isinstance(value, float) and value.is_integer()
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise ContractError(f"{name} must be {json_type(self.type)}, not {json_repr(value)}",
                                hint=self.help)
        value = self.type(value)
        if self.type is str and not is_text(value):
            raise ContractError(f"{name} is not valid Unicode text (it holds a lone surrogate or a NUL)",
                                hint="send UTF-8 text")
        if self.max is not None and value > self.max and self.over_max != "bad_input":  # a size limit: first
            raise ContractError(f"{name} {value} is out of range {number_text(self.min)}..{number_text(self.max)}",
                                hint=f"{self.help}; the model was trained at {', '.join(RESOLUTION_PRESETS)}",
                                category=self.over_max)
        if self.choices is not None and value not in self.choices:
            raise ContractError(f"{name} must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        if self.multiple and value % self.multiple:
            near = max(self.multiple, round(value / self.multiple) * self.multiple)
            raise ContractError(f"{name} {value} is not a multiple of {self.multiple}",
                                hint=f"use a preset ({', '.join(RESOLUTION_PRESETS)}) or a multiple of "
                                     f"{self.multiple}, e.g. {near}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ContractError(f"{name} {value} is out of range {number_text(self.min)}..{number_text(self.max)}",
                                hint=self.help)
        return value


def is_text(s: str) -> bool:
    """Text a file, a tokenizer and a JSON line can all hold: no NUL, no lone surrogate (JSON allows "\\ud800")."""
    if "\0" in s:
        return False
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def json_type(t: type) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "text",
            dict: "an object", list: "an array"}[t]


def json_repr(value) -> str:
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return type(value).__name__


def number_text(v) -> str:
    return "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


def param(default, help: str, **kw):
    """A dataclass field carrying its Spec (the name and type are filled in from the annotation)."""
    return field(default=default, metadata={"spec": kw | {"default": default, "help": help}})


def _specs(cls) -> dict[str, Spec]:
    types = {"int": int, "float": float, "str": str, "bool": bool}
    return {f.name: Spec(name=f.name, type=types[f.type], **f.metadata["spec"]) for f in dataclasses.fields(cls)}


class _Values:
    """Shared behaviour of the spec-backed dataclasses: strict construction from JSON, validation, dicts."""

    SPECS: dict[str, Spec] = {}

    @classmethod
    def from_dict(cls, d: dict, where: str = ""):
        if not isinstance(d, dict):
            raise ContractError(f"{where.rstrip('.') or cls.__name__} must be an object, not {json_repr(d)}")
        unknown = sorted(set(d) - set(cls.SPECS))
        if unknown:
            raise ContractError(f"unknown {cls.KIND}(s): {', '.join(unknown)}",
                                hint=f"known: {', '.join(cls.SPECS)}")
        return cls(**d).validate(where)

    def validate(self, where: str = ""):
        for name, spec in self.SPECS.items():
            value = getattr(self, name)
            if value is None:  # JSON null or "not given": the default
                setattr(self, name, spec.default)
                continue
            setattr(self, name, spec.check(value, where))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes).validate()


# ---------------------------------------------------------------------------------------------- generation
@dataclass
class GenerationParams(_Values):
    """What one job generates. Every field is a Spec: the CLI flag, the protocol's `params` and the panel."""
    KIND = "generation parameter"
    width: int = param(512, "frame width in pixels (a preset or any multiple of 16)", min=16, max=MAX_SIDE,
                       multiple=RESOLUTION_MULTIPLE, over_max="too_large")
    height: int = param(512, "frame height in pixels (a preset or any multiple of 16)", min=16, max=MAX_SIDE,
                        multiple=RESOLUTION_MULTIPLE, over_max="too_large")
    steps: int = param(50, "denoising steps (official: 50)", min=1, max=1000)
    shift: float = param(5.0, "flow-matching schedule shift: higher spends more steps at high noise (official: 5, "
                              "fixed by the released config; fewer steps often look better with more)", min=1.0,
                         max=20.0, panel="guidance", label="Schedule shift")
    seed: int = param(42, f"noise seed; {RANDOM_SEED} draws a new one per job and records it", min=RANDOM_SEED,
                      max=2**63 - 1, panel="main", panel_default=RANDOM_SEED)
    overlap: int = param(5, "window overlap in latent frames (official: 5)", min=2, max=20, panel="guidance")
    overlap_weights: str = param("uniform", "how overlapping windows are blended", choices=OVERLAP_WEIGHTS,
                                 panel="guidance", label="Blend")
    text_scale: float = param(3.0, "text guidance scale (official: 3)", min=-100, max=100, panel="guidance")
    audio_scale: float = param(5.0, "audio guidance scale (official: 5)", min=-100, max=100, panel="guidance")
    prompt: str = param(DEFAULT_PROMPT, "what the video shows", panel="main")
    negative_prompt: str = param(OFFICIAL_NEGATIVE_PROMPT, "what to steer away from (default: the official one)")
    guidance: str = param("official", "official = the released nested CFG; audio-native = docs/guidance.md",
                          choices=GUIDANCE_MODES, panel="guidance", choice_help=(
                              ("official", "Official", "Guidance as in the official StableAvatar code"),
                              ("audio-native", "Audio Native", "Separate text and audio guidance (docs/guidance.md)")))
    compat: str = param("fixed", "official = the released code's numbers and quirks; fixed = its bugs corrected",
                        choices=COMPAT_MODES, panel="guidance", label="Behaviour", choice_help=(
                            ("fixed", "Fixed", "The released code's timing bugs corrected (lips stay in sync)"),
                            ("official", "Official", "The released code's numbers, quirks included")))
    fit: str = param("squash", "how a still of another aspect meets the frame (squash = official)",
                     choices=FIT_MODES, panel="main", panel_default="crop", choice_help=(
                         ("squash", "Squash", "Stretch the still to the resolution (official)"),
                         ("crop", "Crop", "Fill the resolution, cutting the overflow"),
                         ("pad", "Pad", "Fit inside the resolution, padding the rest")))
    save_latents: bool = param(False, "also write latents.safetensors")
    allow_silent: bool = param(False, "accept audio without any sound (a closed-mouth take)", panel="guidance",
                               label="Allow silent audio")

    def validate(self, where: str = ""):
        super().validate(where)
        if self.width * self.height > MAX_PIXELS:
            raise ContractError(f"{self.width}x{self.height} is {self.width * self.height / 1e6:.1f} megapixels per "
                                f"frame, over the limit of {MAX_PIXELS / 1e6:.1f}",
                                hint=f"the model was trained at {', '.join(RESOLUTION_PRESETS)}; upscale afterwards",
                                category="too_large")
        return self

    def with_seed(self) -> "GenerationParams":
        """A copy whose seed is concrete: RANDOM_SEED is replaced by a freshly drawn one."""
        if self.seed != RANDOM_SEED:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(SEED_MAX + 1))


GenerationParams.SPECS = _specs(GenerationParams)
PARAMS = GenerationParams.SPECS


# ---------------------------------------------------------------------------------------------- engine settings
@dataclass
class EngineSettings(_Values):
    """How a backend process runs (one per worker, not per job): shared by generate, serve and resume."""
    KIND = "engine setting"
    checkpoints: str = param(None, "official checkpoint folder (default: $STABLEAVATAR_CHECKPOINTS, then "
                                   "./checkpoints)")
    transformer: str = param(None, "StableAvatar .pt (default: square.pt for square sizes, rec-vec.pt otherwise)")
    device: str = param(None, "default: cuda when available", choices=DEVICES)
    dtype: str = param(None, "default: bfloat16 on cuda (as released), float32 on cpu", choices=DTYPES)
    memory_mode: str = param("auto", "; ".join(f"{k} = {v}" for k, v in MEMORY_MODE_HELP.items()),
                             choices=MEMORY_MODE_CHOICES)
    devices: int = param(1, "devices one job runs on (GPUs; processes on the CPU): its windows are spread over "
                            "them with the numbers of one device (docs/scale.md)", min=1, max=64)

    def argv(self) -> list[str]:
        """These settings as command-line flags (what the add-on appends to `serve --stdio`)."""
        out = []
        for name, spec in self.SPECS.items():
            value = getattr(self, name)
            if value is not None and value != spec.default:
                out += [spec.flag, str(value)]
        return out


EngineSettings.SPECS = _specs(EngineSettings)
ENGINE_SETTINGS = EngineSettings.SPECS


# ---------------------------------------------------------------------------------------------- error categories
@dataclass(frozen=True)
class Category:
    fault: str       # whose fault: client (a bug in the caller), user (a file or value), setup (install,
                     # weights), resources (memory, disk), environment (filesystem), none, bug (ours)
    exit_code: int   # of the CLI
    retry: bool      # whether retrying the same job unchanged can succeed
    doc: str


CATEGORIES = {
    "bad_request": Category("client", 2, False, "the line itself is wrong (JSON, op, fields, types, size)"),
    "bad_input": Category("user", 2, False, "a file or parameter cannot be used; the message names it"),
    "missing_weights": Category("setup", 3, False, "the checkpoint folder was not found, is incomplete or damaged; "
                                "the worker retries loading on every submit"),
    "out_of_memory": Category("resources", 4, True, "out of GPU or host memory: the job's memory is released, the "
                              "worker keeps serving; the hint names a lighter memory mode and a smaller size"),
    "busy": Category("user", 5, True, "the job folder is locked by another process or already queued here"),
    "too_large": Category("user", 2, False, "over a documented size limit (pixels per frame, pixels of a still, "
                          "memory for the audio's length); the message names the limit, the hint what fits"),
    "filesystem": Category("environment", 6, False, "a folder or file cannot be used: read-only, permission denied, "
                           "not a folder, a file where a folder belongs, a drive gone; the message names the path"),
    "disk_full": Category("resources", 7, True, "no space left on the drive (or quota): what was written so far is "
                          "kept; free space and run again (a job folder resumes from its last checkpoint)"),
    "cancelled": Category("none", 130, True, "the job was cancelled or interrupted; its checkpoint is kept"),
    "device_lost": Category("environment", 9, True, "a device (rank) of a multi-device job stopped; the job's "
                            "checkpoint is kept and submitting it again continues on a fresh set of ranks"),
    "internal": Category("bug", 1, True, "a bug: `traceback` points at the full report"),
    "connection": Category("environment", 8, True, "the remote backend could not be reached over SSH or the "
                           "connection dropped; the message says which (host key, key, network, remote command), "
                           "and a job resumes when the connection is back"),
}
