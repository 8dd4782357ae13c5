"""wav2vec2-base-960h audio features: stock `transformers.Wav2Vec2Model` + `Wav2Vec2FeatureExtractor` (HF folder).

The official pipeline runs `Wav2Vec2Processor(window, sampling_rate=16000)` (per-window zero-mean / unit-variance,
no padding, no attention mask) and keeps `last_hidden_state` (50 Hz, 768-d). Only the feature-extractor half of the
processor is used, so the CTC tokenizer files are not needed.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointError
from .weights import ModelHolder

from .contract import SAMPLE_RATE


def _fail(folder: Path, what: str, e: Exception) -> CheckpointError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return CheckpointError(f"cannot load the wav2vec2 {what} from {folder}: {type(e).__name__}: {first[:200]}",
                           "re-download facebook/wav2vec2-base-960h (config.json, model.safetensors, "
                           "preprocessor_config.json)")


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def load_audio_encoder(folder, device="cpu", dtype=torch.float32) -> "AudioEncoder":
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"wav2vec2 folder not found: {folder}",
                              "download facebook/wav2vec2-base-960h into the model folder")
    try:
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise _fail(folder, "feature extractor", e) from e
    try:
        # eager attention: bit-exact vs the official run (sdpa differs ~7e-7). The file is fp32; the dtype is set
        # afterwards because the from_pretrained dtype keyword differs between transformers 4.x and 5.x.
        with _quiet_transformers():  # the expected lm_head "UNEXPECTED" report and progress bar are noise
            model, info = Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True,
                                                        attn_implementation="eager", output_loading_info=True)
    except Exception as e:  # noqa: BLE001
        raise _fail(folder, "model", e) from e
    # from_pretrained silently random-initialises missing weights: refuse that. The CTC head is expected extra.
    missing = sorted(info.get("missing_keys", []))
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if not k.startswith("lm_head."))
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", []))
    weights = next((p for p in (folder / "model.safetensors", folder / "pytorch_model.bin") if p.exists()), folder)
    if missing or unexpected or mismatched:
        from .weights import check_keys
        check_keys(weights, missing, unexpected, mismatched)
    _check_weights(model, weights)
    model.to(dtype).eval().requires_grad_(False)  # eval also disables spec-augment masking and layerdrop
    return AudioEncoder(model, extractor).to(device)


def _check_weights(model, weights: Path) -> None:
    """from_pretrained casts whatever the file holds into the model's float parameters: check the file's dtypes
    (safetensors header, no data read) and the loaded values (weights.checked)."""
    from .weights import checked

    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                kind = f.get_slice(key).get_dtype()
                if not kind.startswith(("F", "BF")):
                    raise CheckpointError(f"{weights.name}: tensor {key} is {kind}, not floating point (a damaged "
                                          f"or foreign checkpoint)", "re-download facebook/wav2vec2-base-960h")
    for name, t in model.state_dict().items():
        checked(name, t, weights)


class AudioEncoder(ModelHolder):
    def __init__(self, model, extractor):
        self.model = model
        self.extractor = extractor

    def normalise(self, waveform: np.ndarray) -> Tensor:
        """16 kHz mono samples -> input values [1, N] float32: per-call (x - mean) / sqrt(var + 1e-7), as the
        official Wav2Vec2Processor call (numpy float32, done by the stock feature extractor)."""
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected mono samples [N], got shape {wave.shape}")
        out = self.extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return out.input_values.float()

    @torch.no_grad()
    def __call__(self, waveform: np.ndarray) -> Tensor:
        """16 kHz mono float32 samples -> last_hidden_state [1, L_a, 768] float32 (50 Hz)."""
        x = self.normalise(waveform).to(self.device, self.dtype)
        return self.model(x).last_hidden_state.float()
