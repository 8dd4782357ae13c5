"""Reading official weight files safely and checking them against the model that will hold them.

Pickles are only ever read with `torch.load(..., weights_only=True)`: a tampered `.pt` holding anything but
tensors is refused before any of its code can run. Key and shape mismatches become one-line CheckpointErrors
that name the offending keys in the checkpoint's own naming.
"""
from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .checkpoints import DOWNLOAD_HINT
from .errors import CheckpointError

# --------------------------------------------------------------------------------------------------------------------

def _hint(path: Path) -> str:
    return f"re-download {path.name} from the official release ({DOWNLOAD_HINT})"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a plain tensor dict from a `.pth/.pt` pickle (weights_only, never arbitrary code) or `.safetensors`.

    Any failure (missing, truncated, not a tensor dict, a pickle with custom objects) becomes a CheckpointError.
    Pickles are memory-mapped when possible so tensors that are never used (e.g. the CLIP text tower) are not read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}", _hint(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:  # legacy (non-zip) pickles cannot be memory-mapped
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"cannot read checkpoint {path.name}: it holds non-tensor objects, refused by the "
                              f"safe weights-only loader", _hint(path)) from e
    except Exception as e:  # noqa: BLE001 - every reader error means "unusable file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path.name} (damaged or not a checkpoint): "
                              f"{type(e).__name__}: {first[:160]}", _hint(path)) from e
    if isinstance(sd, dict) and set(sd) == {"state_dict"} and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise CheckpointError(f"checkpoint {path.name} is not a plain dict of tensors ({type(sd).__name__})",
                              _hint(path))
    return sd


def checked(name: str, t: Tensor, path: str | Path) -> Tensor:
    """`t` if it can be a weight: floating point (an integer tensor would be cast silently) and finite (NaN or
    inf weights give a black or noise video without a word); else a CheckpointError naming the tensor.
    The finiteness test is one summation (~20 GB/s on one CPU core; NaN and inf survive it), confirmed
    element-wise only when it fails, so the 20 GB of real weights cost about a second more to load."""
    path = Path(path)
    if not t.is_floating_point():
        raise CheckpointError(f"{path.name}: tensor {name} is {str(t.dtype).removeprefix('torch.')}, not floating "
                              f"point (a damaged or foreign checkpoint)", _hint(path))
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise CheckpointError(f"{path.name}: tensor {name} holds NaN or infinite values (a damaged checkpoint)",
                              _hint(path))
    return t


def _few(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def check_keys(path: str | Path, missing: Iterable[str], unexpected: Iterable[str],
               mismatched: Iterable[str] = ()) -> None:
    """Raise a one-line CheckpointError naming up to 5 missing / unexpected / wrongly shaped keys, if any."""
    missing, unexpected, mismatched = sorted(set(missing)), sorted(set(unexpected)), sorted(set(mismatched))
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched, 3)}")
    path = Path(path)
    raise CheckpointError(f"{path.name} does not match the expected model: " + "; ".join(parts),
                          _hint(path) + " (tiny test trees need their arch.json)")


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module without allocating or randomly initialising its weights (they are assigned later)."""
    with torch.device("meta"):
        return factory()


def assign_state_dict(model: nn.Module, sd: dict[str, Tensor], path: str | Path,
                      name_of: Callable[[str], str] = lambda k: k, unexpected: Iterable[str] = (),
                      rebuild_buffers: Callable[[nn.Module], None] | None = None) -> None:
    """Strictly load `sd` (model key names) into a meta-built `model` by assignment (no second copy of the weights).

    Errors are reported with `name_of(model_key)`, i.e. in the checkpoint's own naming; `unexpected` adds checkpoint
    keys the caller's conversion left out; `rebuild_buffers` recreates non-persistent buffers (not in any state dict).
    """
    expected = model.state_dict()
    missing = [name_of(k) for k in expected if k not in sd]
    unexpected = [*unexpected, *(name_of(k) for k in sd if k not in expected)]
    mismatched = [f"{name_of(k)} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    check_keys(path, missing, unexpected, mismatched)
    model.load_state_dict(sd, strict=True, assign=True)
    if rebuild_buffers is not None:
        rebuild_buffers(model)
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer that the caller must rebuild: a bug, not a user error
        raise RuntimeError(f"tensors left on the meta device after loading: {left[:5]}")


class ModelHolder:
    """Plumbing shared by the component wrappers: where the wrapped model lives, moving it, dropping it."""
    model: nn.Module | None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device):
        self.model.to(device)
        return self

    def release(self) -> None:
        self.model = None
