"""Generation parameters: one dataclass shared by the CLI, the service protocol and the manifest."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import guidance
from .errors import UserInputError

# The official StableAvatar negative prompt (inference.py L547), used verbatim.
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_PROMPT = "The protagonist is talking"  # one of the three prompts the model was trained with

RESOLUTION_PRESETS = {"512x512": (512, 512), "480x832": (480, 832), "832x480": (832, 480)}  # W x H
GUIDANCE_MODES = tuple(guidance.MODES)  # "official", "audio-native"
COMPAT_MODES = ("fixed", "official")
OVERLAP_WEIGHTS = ("uniform", "log")
FIT_MODES = ("squash", "crop", "pad")
DTYPES = ("float32", "bfloat16")
MEMORY_MODES = ("full", "model_offload", "sequential_offload", "fp8")  # fastest first; see memory.py
MEMORY_MODE_CHOICES = MEMORY_MODES + ("auto",)                          # auto: the fastest that fits the GPU
# what to try after an out-of-memory error, cheapest change first: model_offload keeps idle models on the CPU,
# fp8 halves the DiT's resident weights, sequential_offload streams layer by layer (slowest, smallest)
NEXT_MEMORY_MODE = {"full": "model_offload", "model_offload": "fp8", "fp8": "sequential_offload"}
DEVICES = ("cpu", "cuda")

FPS = 25
SAMPLE_RATE = 16000
WINDOW_FRAMES = 81  # pixel frames per sliding window (21 latent frames), the training length


@dataclass
class GenerationParams:
    width: int = 512
    height: int = 512
    steps: int = 50
    seed: int = 42
    overlap: int = 5
    overlap_weights: str = "uniform"
    text_scale: float = 3.0
    audio_scale: float = 5.0
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    guidance: str = "official"
    compat: str = "fixed"
    fit: str = "squash"
    save_latents: bool = False
    allow_silent: bool = False

    def validate(self) -> "GenerationParams":
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v % 16:
                raise UserInputError(
                    f"{name} {v} is not a positive multiple of 16",
                    hint="use a preset (512x512, 480x832, 832x480) or any multiple of 16, e.g. "
                         f"{max(16, round(v / 16) * 16) if isinstance(v, (int, float)) else 512}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise UserInputError(f"steps {self.steps} is out of range 1..1000", hint="the official setting is 50")
        if not isinstance(self.overlap, int) or not 2 <= self.overlap <= 20:
            raise UserInputError(
                f"overlap {self.overlap} is out of range 2..20 latent frames",
                hint="overlap is counted in latent frames of the 21-frame window; 5 is the official setting")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UserInputError(f"seed {self.seed} must be an integer in 0..2^63-1")
        for name, allowed in (("overlap_weights", OVERLAP_WEIGHTS), ("guidance", GUIDANCE_MODES),
                              ("compat", COMPAT_MODES), ("fit", FIT_MODES)):
            if getattr(self, name) not in allowed:
                raise UserInputError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in ("text_scale", "audio_scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not -100 <= v <= 100:
                raise UserInputError(f"{name} {v} is not a number in -100..100")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise UserInputError("prompt and negative_prompt must be text")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(f"unknown generation parameter(s): {', '.join(unknown)}",
                                 hint=f"known parameters: {', '.join(sorted(names))}")
        return cls(**d)
