"""Find and verify the official checkpoint folder layout (docs/method.md §2), unchanged on disk.

    ROOT/
      Wan2.1-Fun-V1.1-1.3B-InP/   config.json, diffusion_pytorch_model.safetensors, Wan2.1_VAE.pth,
                                  models_t5_umt5-xxl-enc-bf16.pth, models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth,
                                  google/umt5-xxl/ (tokenizer)
      wav2vec2-base-960h/         HF folder
      StableAvatar-1.3B/          transformer3d-square.pt, transformer3d-rec-vec.pt
      arch.json                   only in the tiny parity trees: their hyper-parameters
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .errors import CheckpointError

HF_REPO = "FrancisRing/StableAvatar"
BASE_DIR = "Wan2.1-Fun-V1.1-1.3B-InP"
WAV2VEC_DIR = "wav2vec2-base-960h"
AVATAR_DIR = "StableAvatar-1.3B"
TRANSFORMERS = {"square": "transformer3d-square.pt", "rec-vec": "transformer3d-rec-vec.pt"}
ENV_VAR = "STABLEAVATAR_CHECKPOINTS"

BASE_FILES = {
    "config": "config.json",
    "vae": "Wan2.1_VAE.pth",
    "t5": "models_t5_umt5-xxl-enc-bf16.pth",
    "clip": "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    "tokenizer": "google/umt5-xxl",
}
DOWNLOAD_HINT = ("download the official weights with `stableavatar download --to DIR` "
                 f"(Hugging Face repo {HF_REPO}, about 20 GB) and pass --checkpoints DIR")


@dataclass
class CheckpointTree:
    root: Path
    base: Path
    wav2vec: Path
    transformers: dict[str, Path]
    arch: dict | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def tiny(self) -> bool:
        """True for the random-weight parity trees (they describe themselves with arch.json)."""
        return self.arch is not None

    def transformer_for(self, width: int, height: int, override: str | os.PathLike | None = None) -> Path:
        """The StableAvatar weights for a resolution: square.pt for W == H, rec-vec.pt otherwise (README tips)."""
        if override:
            p = Path(override).expanduser()
            if not p.is_file():
                what = "is a folder, not a file" if p.is_dir() else "is not a file" if p.exists() else "does not exist"
                raise CheckpointError(f"transformer file {p} {what}", hint="pass a transformer3d-*.pt file of the "
                                      f"official release to --transformer, or leave it out; {DOWNLOAD_HINT}")
            return p
        wanted = "square" if width == height else "rec-vec"
        if wanted in self.transformers:
            return self.transformers[wanted]
        return next(iter(self.transformers.values()))  # the only one present (e.g. the tiny tree)

    def weight_files(self) -> list[Path]:
        return sorted(p for p in [*self.files.values(), *self.transformers.values(),
                                  *(self.wav2vec.glob("*.safetensors")), *(self.wav2vec.glob("*.bin"))]
                      if p.is_file())


def default_search_paths() -> list[Path]:
    paths = []
    if os.environ.get(ENV_VAR):
        paths.append(Path(os.environ[ENV_VAR]).expanduser())
    paths.append(Path.cwd() / "checkpoints")
    return paths


def searched_paths(root: str | os.PathLike | None) -> list[str]:
    """The folders `locate(root)` looks in, for messages."""
    return [str(Path(root).expanduser())] if root else [str(p) for p in default_search_paths()]


def locate(root: str | os.PathLike | None = None) -> CheckpointTree:
    """Return the checkpoint tree at `root` (or the first default location), or raise a CheckpointError
    that names every folder searched and every missing file."""
    candidates = [Path(root).expanduser()] if root else default_search_paths()
    problems = []
    for cand in candidates:
        missing = _missing_files(cand)
        if not missing:
            return _tree(cand)
        problems.append((cand, missing))
    cand, missing = problems[0]
    if cand.exists() and not cand.is_dir():
        raise CheckpointError(f"checkpoint folder {cand} is a file, not a folder",
                              hint=f"pass the folder that holds {BASE_DIR}/, {WAV2VEC_DIR}/ and {AVATAR_DIR}/; "
                                   f"{DOWNLOAD_HINT}")
    if not cand.exists():
        where = ", ".join(str(c) for c, _ in problems)
        raise CheckpointError(f"no checkpoint folder found (searched: {where})", hint=DOWNLOAD_HINT)
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    raise CheckpointError(f"checkpoint folder {cand} is incomplete: missing {shown}", hint=DOWNLOAD_HINT)


def presence(root: str | os.PathLike | None = None) -> dict:
    """Whether the checkpoint files are there (checked, not loaded): found, path, tiny; else error and hint."""
    try:
        tree = locate(root)
        return {"found": True, "path": str(tree.root), "tiny": tree.tiny}
    except CheckpointError as exc:
        return {"found": False, "error": str(exc), "hint": exc.hint}


def weights_report(root, load_error: BaseException | None) -> dict:
    """`ready.weights` of a worker whose engine did not load: the checkpoint error itself, or, when something
    else failed first (a device this machine lacks), whether the files are there."""
    out = {"found": not isinstance(load_error, CheckpointError), "path": root, "tiny": False,
           "searched": getattr(load_error, "searched", None) or searched_paths(root), "error": None, "hint": None}
    if isinstance(load_error, CheckpointError):
        out.update(error=str(load_error), hint=load_error.hint)
    elif load_error is not None:
        out.update(presence(root))
    return out


def _missing_files(root: Path) -> list[str]:
    if not root.is_dir():
        return [str(root)]
    missing = [f"{BASE_DIR}/{rel}" for rel in BASE_FILES.values() if not (root / BASE_DIR / rel).exists()]
    if not (root / WAV2VEC_DIR / "config.json").is_file():
        missing.append(f"{WAV2VEC_DIR}/config.json")
    if not any((root / AVATAR_DIR / name).is_file() for name in TRANSFORMERS.values()):
        missing.append(f"{AVATAR_DIR}/transformer3d-square.pt (or transformer3d-rec-vec.pt)")
    return missing


def _tree(root: Path) -> CheckpointTree:
    arch = None
    if (root / "arch.json").is_file():
        try:
            arch = json.loads((root / "arch.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{root / 'arch.json'} is not valid JSON ({exc})",
                                  hint="a tiny test tree's arch.json is damaged: restore it from the source tree "
                                       "(tests/data/parity/checkpoints)") from exc
        if not isinstance(arch, dict):
            raise CheckpointError(f"{root / 'arch.json'} is not a JSON object",
                                  hint="restore it from the source tree (tests/data/parity/checkpoints)")
    base = root / BASE_DIR
    return CheckpointTree(
        root=root, base=base, wav2vec=root / WAV2VEC_DIR, arch=arch,
        transformers={k: root / AVATAR_DIR / v for k, v in TRANSFORMERS.items() if (root / AVATAR_DIR / v).is_file()},
        files={k: base / v for k, v in BASE_FILES.items()} | {"dit_base": base / "diffusion_pytorch_model.safetensors"},
    )


def file_sha256(path: Path) -> str:
    """sha256 of a weight (or input) file, cached by path, size and mtime."""
    return files.sha256(path, files.weights_hash_cache())
