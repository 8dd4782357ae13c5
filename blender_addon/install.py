"""What Install Backend and Download Weights fetch, and the plan they run (`installer.py` runs it). No bpy.

The backend is installed from the wheel shipped inside the extension (`backend_wheel/`), by uv, whose
`--torch-backend auto` picks the PyTorch build that fits this machine's GPU driver (CUDA 11.8 ... 13, ROCm,
or the CPU build), into a fresh environment under the data folder's `backend/envs/`. `backend/current` names
the environment in use; it changes only after the new one imported torch and the backend, so a failed or
cancelled install leaves the working one (and the preferences) as they were.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

WHEEL_DIR = "backend_wheel"      # inside the extension: the backend wheel (`make extension` builds it)
UV_REQUIREMENT = "uv>=0.8"       # --torch-backend needs a recent uv
TORCH_BACKENDS = (
    ("auto", "Automatic", "uv picks the PyTorch build for this machine's GPU driver (CPU build without one)"),
    ("cu130", "CUDA 13.0", "PyTorch built for CUDA 13.0 (RTX 50-series and newer drivers)"),
    ("cu128", "CUDA 12.8", "PyTorch built for CUDA 12.8 (RTX 50-series: driver 570 or newer)"),
    ("cu126", "CUDA 12.6", "PyTorch built for CUDA 12.6"),
    ("cu118", "CUDA 11.8", "PyTorch built for CUDA 11.8 (older drivers)"),
    ("cpu", "CPU only", "No GPU: real weights are impractically slow"),
    ("pypi", "From the indexes given", "No PyTorch index: torch comes from PyPI or the extra installer options"),
)
DOWNLOAD_WHAT = (
    "Downloads the official StableAvatar weights from Hugging Face (FrancisRing/StableAvatar:",
    "StableAvatar-1.3B, Wan2.1-Fun-V1.1-1.3B-InP, wav2vec2-base-960h), about 20 GB, into the checkpoints folder.",
)
VERIFY = ("import json, torch, stableavatar; print(json.dumps({'stableavatar': stableavatar.__version__, "
          "'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': torch.cuda.is_available()}))")


def install_what(platform: str = sys.platform) -> tuple[str, ...]:
    lines = ["Creates a new Python environment in the StableAvatar data folder and installs the backend shipped",
             "with this extension into it (uv, from PyPI); the one in use now stays until the new one works."]
    if platform == "darwin":
        return tuple(lines) + (
            "macOS: PyTorch has no CUDA here, so the backend runs on the CPU: fine for trying the tiny test",
            "weights, impractically slow with the real ones. For real work use a backend on a machine with an",
            "NVIDIA GPU (Linux or Windows).",
            "Downloads: PyTorch for macOS and the backend's libraries from PyPI (about 1 GB).")
    return tuple(lines) + (
        "Downloads: PyTorch built for this machine's GPU driver (chosen by uv; about 2.5 GB for CUDA),",
        "and from PyPI: diffusers, transformers, accelerate, huggingface_hub, safetensors, librosa, soundfile,",
        "imageio-ffmpeg, pillow, numpy, tqdm, sentencepiece, protobuf and their dependencies (about 1 GB).")


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if sys.platform == "win32" \
        else os.path.join(venv, "bin", "python")


def current_env(backend_dir: str) -> str:
    """The environment in use (from `backend/current`), or "" when none was installed."""
    try:
        with open(os.path.join(backend_dir, "current"), encoding="utf-8") as f:
            env = f.read().strip()
    except OSError:
        return ""
    return env if env and os.path.isdir(env) else ""


def current_python(backend_dir: str) -> str:
    env = current_env(backend_dir)
    return venv_python(env) if env else venv_python(os.path.join(backend_dir, "envs", "none"))


def bundled_wheel(extension_dir: str) -> str | None:
    wheels = sorted(glob.glob(os.path.join(extension_dir, WHEEL_DIR, "stableavatar_backend-*.whl")))
    return wheels[-1] if wheels else None


def extension_version(extension_dir: str) -> str:
    """The extension's version from its blender_manifest.toml ("" when unreadable)."""
    try:
        import tomllib
        with open(os.path.join(extension_dir, "blender_manifest.toml"), "rb") as f:
            return str(tomllib.load(f).get("version", ""))
    except (OSError, ValueError, ImportError):
        return ""


def uv_path(tools: str) -> str:
    return os.path.join(tools, "bin", "uv.exe" if sys.platform == "win32" else "uv")


def plan(base_python: str, backend_dir: str, wheel: str, torch_backend: str = "auto", extra_args: str = "",
         uv: str = "") -> dict:
    """Everything the installer process needs, as JSON: steps (argv lists, with what each one is), the new
    environment, where the pointer and the log go."""
    import shlex
    env = os.path.join(backend_dir, "envs", time.strftime("%Y%m%d-%H%M%S"))
    tools = os.path.join(backend_dir, "tools")
    uv = uv or uv_path(tools)
    py = venv_python(env)
    steps = []
    if not os.path.isfile(uv):
        steps.append({"phase": "getting uv", "argv": [base_python, "-m", "pip", "install", "--disable-pip-version-check",
                                                      "--upgrade", "--target", tools, UV_REQUIREMENT]})
    steps.append({"phase": "creating the environment", "argv": [uv, "venv", env, "--python", base_python]})
    install = [uv, "pip", "install", "--python", py]
    if torch_backend != "pypi":
        install += ["--torch-backend", torch_backend]
    steps.append({"phase": "installing", "argv": install + [wheel] + shlex.split(extra_args)})
    steps.append({"phase": "checking", "argv": [py, "-c", VERIFY], "verify": True})
    data = os.path.dirname(backend_dir)
    return {"steps": steps, "env": env, "backend_dir": backend_dir, "log": os.path.join(backend_dir, "install.log"),
            "env_vars": {"UV_CACHE_DIR": os.path.join(data, "cache", "uv"), "UV_PYTHON_DOWNLOADS": "never"}}


def write_plan(p: dict, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(p, f, indent=1)
    return path


def download_steps(python: str, target: str) -> list[list[str]]:
    return [[python, "-m", "stableavatar", "download", "--to", target]]
