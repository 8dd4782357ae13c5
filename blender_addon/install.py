"""What Install Backend and Download Weights fetch, and the commands they run. No bpy."""
from __future__ import annotations

import os
import sys

TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
INSTALL_WHAT = (
    "Creates a Python environment in the extension's user folder and installs the bundled backend into it.",
    "Downloads: PyTorch with CUDA 12.4 from download.pytorch.org (about 2.5 GB),",
    "and from PyPI: diffusers, transformers, accelerate, huggingface_hub, safetensors, librosa, soundfile,",
    "imageio-ffmpeg, pillow, numpy, tqdm, sentencepiece, protobuf and their dependencies (about 1 GB).",
)
DOWNLOAD_WHAT = (
    "Downloads the official StableAvatar weights from Hugging Face (FrancisRing/StableAvatar:",
    "StableAvatar-1.3B, Wan2.1-Fun-V1.1-1.3B-InP, wav2vec2-base-960h), about 20 GB, into the checkpoints folder.",
)


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if sys.platform == "win32" \
        else os.path.join(venv, "bin", "python")


def install_steps(base_python: str, venv: str, source_dir: str) -> list[list[str]]:
    py = venv_python(venv)
    return [[base_python, "-m", "venv", venv],
            [py, "-m", "pip", "install", "--upgrade", "pip"],
            [py, "-m", "pip", "install", "torch", "--index-url", TORCH_INDEX],
            [py, "-m", "pip", "install", source_dir]]


def download_steps(python: str, target: str) -> list[list[str]]:
    return [[python, "-m", "stableavatar", "download", "--to", target]]
