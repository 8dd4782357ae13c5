"""Sampler state: everything needed to continue a generation exactly where it stopped."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import UserInputError
from .files import write_bytes


@dataclass
class SamplerState:
    step: int            # completed denoising steps
    latents: "object"    # torch.Tensor [1, 16, T, h, w] on the CPU, in the sampler's state dtype
    fingerprint: str     # hash of everything that determines the result; a resume with other inputs is refused

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save

        # serialise in memory, then one write + fsync + rename: it runs after every step, so it must stay cheap
        data = save({"latents": self.latents.contiguous()},
                    metadata={"step": str(self.step), "fingerprint": self.fingerprint, "format": "stableavatar-state-1"})
        write_bytes(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SamplerState":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                latents = f.get_tensor("latents")
            return cls(step=int(meta["step"]), latents=latents, fingerprint=meta["fingerprint"])
        except Exception as exc:
            raise UserInputError(f"sampler checkpoint {path} is unreadable ({type(exc).__name__})",
                                 hint="delete it to start the job from the beginning") from None

    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size()

    def describe(self) -> str:
        return json.dumps({"step": self.step, "shape": list(self.latents.shape), "dtype": str(self.latents.dtype)})
