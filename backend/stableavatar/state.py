"""Sampler state: everything needed to continue a generation exactly where it stopped."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import UserInputError
from .files import write_bytes


PARTS = ("inputs", "dtype", "transformer", "checkpoints")  # job.fingerprint_parts, kept in the metadata


@dataclass
class SamplerState:
    step: int            # completed denoising steps
    latents: "object"    # torch.Tensor [1, 16, T, h, w] on the CPU, in the sampler's state dtype
    fingerprint: str     # hash of everything that determines the result; a resume with other inputs is refused
    parts: dict = field(default_factory=dict)  # job.fingerprint_parts: what a refusal names

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save

        # serialise in memory, then one write + fsync + rename: it runs after every step, so it must stay cheap
        meta = {"step": str(self.step), "fingerprint": self.fingerprint, "format": "stableavatar-state-1",
                **{k: str(v) for k, v in self.parts.items() if k in PARTS}}
        write_bytes(path, save({"latents": self.latents.contiguous()}, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SamplerState":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                latents = f.get_tensor("latents")
            return cls(step=int(meta["step"]), latents=latents, fingerprint=meta["fingerprint"],
                       parts={k: meta[k] for k in PARTS if k in meta})
        except Exception as exc:
            raise UserInputError(f"sampler checkpoint {path} is unreadable ({type(exc).__name__})",
                                 hint="delete it to start the job from the beginning") from None

    def check_matches(self, fingerprint: str, parts: dict) -> None:
        """Refuse to continue this state in a run that differs from the one that made it, naming what differs."""
        problem = mismatch({"fingerprint": self.fingerprint, **self.parts}, fingerprint, parts)
        if problem:
            raise problem

    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size()

    def describe(self) -> str:
        return json.dumps({"step": self.step, "shape": list(self.latents.shape), "dtype": str(self.latents.dtype)})


def mismatch(meta: dict, fingerprint: str, parts: dict) -> UserInputError | None:
    """Why the checkpoint described by `meta` (its metadata: fingerprint and parts) cannot continue in a run
    whose fingerprint and parts are given; None when it can."""
    if not meta.get("fingerprint") or meta["fingerprint"] == fingerprint:
        return None
    start_over = "or delete state.safetensors to start over"
    was, now = meta.get("dtype"), parts.get("dtype")
    if was and was != now:
        return UserInputError(f"the sampler checkpoint was made with dtype {was}; this run uses {now}",
                              hint=f"resume with --dtype {was} (a worker started with it), {start_over}")
    was, now = meta.get("transformer"), parts.get("transformer")
    if was and was != now:
        where = meta.get("checkpoints")
        return UserInputError(
            f"the sampler checkpoint was made with transformer {_file(was)} from {where or 'another folder'}; "
            f"this run uses {_file(now)} from {parts.get('checkpoints')}",
            hint=f"resume with --checkpoints {where} (the folder it was made with), {start_over}" if where else
            f"resume with the checkpoint folder it was made with, {start_over}")
    return UserInputError("the sampler checkpoint belongs to other inputs or parameters",
                          hint=f"resume with the original image, audio and parameters, {start_over}")


def _file(part: str | None) -> str:
    name, _, size = (part or "?|").partition("|")
    return f"{name} ({int(size):,} bytes)" if size.isdigit() else name
