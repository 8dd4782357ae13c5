"""The engine: the models, kept loaded between jobs, and one job run through them.

    job = prepare_job(image, audio, params)          # job.py: validation and the window plan, no model
    result = engine.generate(job, out_dir)           # load -> encode -> denoise -> decode -> write

The DiT, VAE and wav2vec2 stay loaded between jobs; the text and image encoders are loaded for a job, run once,
and released. The sampler loop is `sampler.denoise`, the result folder `writer.py`, the progress events
`progress.py`; this module places the models for the memory mode and runs them.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import oom, report, sampler
from .checkpoints import CheckpointTree, file_sha256, locate
from .errors import OutOfMemoryError, UserInputError, os_error
from .guidance import MAX_BRANCHES
from .job import PreparedJob, fingerprint_parts, job_fingerprint
from .memory import T5_BYTES, dit_on_device, fits_now, place_transformer, resolve_memory_mode
from .output import VideoEncoder, write_json
from .contract import MEMORY_MODE_CHOICES, GenerationParams
from .windows import WINDOW_FRAMES
from .progress import Progress
from .speed import attention_context
from .state import SamplerState
from .windows import window_audio
from . import ownership
from .writer import check_out_dir, manifest, prepare_out_dir, result_names, save_latents, write_frames


@dataclass
class Hooks:
    progress: Callable[[dict], None] | None = None           # progress.Progress events
    preview: Callable[[int, np.ndarray], None] | None = None  # (frame index, RGB uint8) per decoded chunk
    step_done: Callable[[SamplerState], None] | None = None   # the state after every denoising step
    should_cancel: Callable[[], bool] | None = None           # polled before every DiT call


@dataclass
class GenerationResult:
    out_dir: Path
    frames_dir: Path
    num_frames: int
    video: Path
    manifest: Path
    latents: Path | None = None
    timings: dict = field(default_factory=dict)


class Engine:
    """Build with `Engine.load`."""

    def __init__(self, tree: CheckpointTree, device: str, dtype: str, memory_mode: str, transformer: str | None):
        self.ranks = None  # distributed.Ranks when one job runs on several devices (rank 0 is this engine)
        self.tree = tree
        self.device = torch.device(device)
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        self.memory_mode = memory_mode
        self.memory_mode_requested = memory_mode   # "auto" when the mode was chosen from the free GPU memory
        self.attention = "native"                  # a speed.EXACT_ATTENTION backend; native = SDPA's own choice
        self.transformer_override = transformer
        self._dit = None
        self._dit_path: Path | None = None
        self._vae = None
        self._audio_encoder = None
        self._text_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ models
    @classmethod
    def load(cls, checkpoints=None, transformer=None, device: str = "cuda", dtype: str = "bfloat16",
             memory_mode: str = "full", devices: int = 1) -> "Engine":
        """`devices` > 1 (or a launcher's RANK/WORLD_SIZE) makes this engine rank 0 of a group that steps each
        job's windows in parallel (window_parallel.py)."""
        if device == "cuda" and not torch.cuda.is_available():
            raise UserInputError("--device cuda was requested but no CUDA GPU is visible to PyTorch",
                                 hint="install the CUDA build of torch in the backend venv, or use --device cpu")
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise UserInputError(f"unknown device {device!r}", hint="use cpu or cuda")
        if dtype not in ("float32", "bfloat16"):
            raise UserInputError(f"dtype must be float32 or bfloat16, not {dtype!r}")
        if memory_mode not in MEMORY_MODE_CHOICES:
            raise UserInputError(f"memory mode must be one of {', '.join(MEMORY_MODE_CHOICES)}, not {memory_mode!r}")
        requested = memory_mode
        # "auto": the fastest exact mode that fits the free GPU memory now, sized for the largest trained
        # resolution (480x832 / 832x480) and the widest guidance mode, so one engine serves every job
        memory_mode = resolve_memory_mode(memory_mode, device, 480, 832,
                                          torch.bfloat16 if dtype == "bfloat16" else torch.float32,
                                          branches=MAX_BRANCHES)
        engine = cls(locate(checkpoints), device, dtype, memory_mode, transformer)
        engine.memory_mode_requested = requested
        engine.ranks = _start_ranks(devices, device, str(engine.tree.root), transformer, dtype, requested)
        if engine.ranks is not None:
            engine.device = engine.ranks.device
        try:
            engine._load_resident()
        except BaseException:
            engine.close()
            raise
        return engine

    def _load_resident(self) -> None:
        """The VAE and wav2vec2 (small, used by every job) stay loaded; after `release` they come back on demand."""
        from .audio_features import load_audio_encoder
        from .vae import load_vae

        if self._vae is not None and self._audio_encoder is not None:
            return
        arch = self.tree.arch or {}
        self._vae = load_vae(self.tree.files["vae"], arch.get("vae"), device=self._home(), dtype=torch.float32)
        self._audio_encoder = load_audio_encoder(self.tree.wav2vec, device=self._home(), dtype=torch.float32)

    def _home(self) -> torch.device:
        """Where idle models live: the GPU in full mode, the CPU when offloading."""
        return self.device if self.memory_mode == "full" else torch.device("cpu")

    def transformer_path(self, params: GenerationParams) -> Path:
        return self.tree.transformer_for(params.width, params.height, self.transformer_override)

    def dit_for(self, params: GenerationParams):
        from .dit import StableAvatarDiT

        path = self.transformer_path(params)
        if self._dit is None or self._dit_path != path:
            self._dit = None
            self._free()
            dit = StableAvatarDiT.from_official(self.tree.base, path, self.tree.arch, dtype=self.dtype, device="cpu")
            self._dit = place_transformer(dit, self.memory_mode, self.device, self.dtype)
            self._dit_path = path
        return self._dit

    @contextmanager
    def _on_device(self, module):
        """Run `module` on the compute device, moving it there and back in model-offload modes."""
        if self._home() == self.device:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            self._empty_cache()

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _free(self) -> None:
        gc.collect()
        self._empty_cache()

    @property
    def loaded(self) -> bool:
        """Whether any model holds memory (False after `release`, until the next job)."""
        return any(m is not None for m in (self._dit, self._vae, self._audio_encoder))

    def close(self) -> None:
        """Stop the other ranks (multi-device engines); the engine itself stays usable on one device."""
        if self.ranks is not None:
            self.ranks.close()
            self.ranks = None

    def release(self) -> None:
        """Drop every model and free their memory; the next job loads what it needs again."""
        self._dit = self._vae = self._audio_encoder = None
        self._dit_path = None
        self._free()

    def info(self) -> dict:
        gpu = report.gpu(self.device) if self.device.type == "cuda" else None
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "memory_mode": self.memory_mode, "gpu": gpu,
                "weights": {"found": True, "path": str(self.tree.root), "tiny": self.tree.tiny,
                            "searched": [str(self.tree.root)]},
                "versions": report.versions()}

    def fingerprint(self, job: PreparedJob) -> str:
        """The job's fingerprint with this engine's weights and dtype (what a sampler checkpoint is tied to)."""
        return job_fingerprint(job, self.transformer_path(job.params), self.dtype)

    def fingerprint_parts(self, job: PreparedJob) -> dict:
        """What the fingerprint is made of, separately (a checkpoint records them so a mismatch can be named)."""
        return fingerprint_parts(job, self.transformer_path(job.params), self.dtype, self.tree.root)

    def runtime(self) -> dict:
        """The engine's part of manifest.json."""
        tree = self.tree
        return {
            "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
            "memory_mode": self.memory_mode, "memory_mode_requested": self.memory_mode_requested,
            "attention": self.attention, "devices": self.ranks.world if self.ranks else 1,
            # arch: a tiny tree's hyper-parameters (None for real weights): the hashes alone do not say what ran
            "checkpoints": {"root": str(tree.root), "tiny_random_weights": tree.tiny, "arch": tree.arch,
                            "transformer": str(self._dit_path),
                            "sha256": {str(p.relative_to(tree.root)): file_sha256(p) for p in tree.weight_files()}},
            "versions": report.versions(),
        }

    # ------------------------------------------------------------------ one job
    def generate(self, job: PreparedJob, out_dir, hooks: Hooks | None = None, resume: SamplerState | None = None,
                 overwrite: bool = False, lock=None) -> GenerationResult:
        """Run `job` (from `job.prepare_job`) and write its result folder (writer.py) into `out_dir`. `resume`
        continues from a checkpoint of the same job; `overwrite` replaces an earlier result of ours in `out_dir`
        (and writes beside files that are not ours, never over them). `lock`: a service.jobdir.JobLock on
        out_dir, taken (if not held yet) once the models are loaded and released at the end; the folder is
        created and recorded as ours only then, so a run refused earlier leaves nothing behind."""
        hooks = hooks or Hooks()
        p = job.params
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        parts = self.fingerprint_parts(job)
        fingerprint = job_fingerprint(job, self.transformer_path(p), self.dtype)
        out_dir = check_out_dir(out_dir, overwrite or resume is not None)
        if resume is not None:
            resume.check_matches(fingerprint, parts)
        try:
            return self._generate(job, out_dir, hooks, resume, fingerprint, parts, lock, timings, t0)
        finally:
            if lock is not None:
                lock.release()

    def _generate(self, job: PreparedJob, out_dir: Path, hooks: Hooks, resume: SamplerState | None,
                  fingerprint: str, parts: dict, lock, timings: dict, t0: float) -> GenerationResult:
        p = job.params
        start = resume.step if resume else 0
        progress = Progress(hooks.progress, p.steps, len(job.windows), job.num_frames, start)
        try:
            progress.phase("load")
            self._load_resident()
            dit = self.dit_for(p)
            timings["load_s"] = time.perf_counter() - t0

            t = time.perf_counter()
            progress.phase("encode")
            cond = self._encode(job)
            timings["encode_s"] = time.perf_counter() - t

            names = result_names(job.num_frames, p.save_latents)
            prepare_out_dir(out_dir, names + ([lock.path.name] if lock is not None else []))
            if lock is not None and not lock.held:
                lock.acquire()
            ownership.sweep_partials(out_dir)  # under the lock: a killed run's temporary files, never a live one's

            t = time.perf_counter()
            if resume is not None:
                latents = resume.latents.to(self.device, torch.float32)
            else:
                latents = sampler.initial_latents(job, self.device, self.dtype)
            keep = sampler.state_dtype(job)

            def step_done(i: int, state: torch.Tensor) -> None:
                if hooks.step_done:
                    hooks.step_done(SamplerState(i + 1, state.to("cpu", keep), fingerprint, parts))

            with dit_on_device(dit, self.memory_mode, self.device), attention_context(self.attention):
                progress.phase("denoise", step=start)
                loop = sampler.denoise
                if self.ranks is not None:
                    from functools import partial
                    from .window_parallel import denoise as parallel_denoise
                    loop = partial(parallel_denoise, self.ranks, attention=self.attention)
                latents = loop(dit, job, cond, latents, start, device=self.device, model_dtype=self.dtype,
                               callback_on_step_end=step_done, should_cancel=hooks.should_cancel,
                               on_window_done=progress.window_done)
            timings["denoise_s"] = time.perf_counter() - t
            del cond

            return self._write_result(job, latents, out_dir, hooks, progress, fingerprint, timings, t0)
        except torch.cuda.OutOfMemoryError:
            self._free()
            raise OutOfMemoryError(f"the GPU ran out of memory at {p.width}x{p.height} in memory mode "
                                   f"{self.memory_mode}", hint=oom.hint(self.memory_mode, p.width, p.height)) from None

    def _write_result(self, job: PreparedJob, latents, out_dir: Path, hooks: Hooks, progress: Progress,
                      fingerprint: str, timings: dict, t0: float) -> GenerationResult:
        """Decode into frames + video, then latents and manifest (last: it marks a finished result). A filesystem
        fault (a full disk, a drive gone read-only) keeps what was written, whole, and is told as such."""
        p = job.params
        try:
            t = time.perf_counter()
            progress.phase("decode")
            encoder = VideoEncoder(out_dir / "video.mp4", p.width, p.height)
            try:
                with self._on_device(self._vae.model), torch.no_grad():
                    write_frames(self._vae.decode_stream(latents.float()), out_dir / "frames", encoder,
                                 job.num_frames, preview=hooks.preview, on_frames=progress.frames)
                timings["decode_s"] = time.perf_counter() - t
                t = time.perf_counter()
                progress.phase("mux")
                video = encoder.finish(job.audio_path)
            except BaseException:
                encoder.abort()
                raise
            timings["mux_s"] = time.perf_counter() - t
            latents_path = save_latents(out_dir / "latents.safetensors", latents) if p.save_latents else None
            timings["total_s"] = time.perf_counter() - t0
            manifest_path = out_dir / "manifest.json"
            write_json(manifest_path, manifest(job, fingerprint, timings, self.runtime()))
        except OSError as exc:
            raise (os_error(exc, f"cannot write the result into {out_dir}") or exc) from exc
        progress.done()
        return GenerationResult(out_dir, out_dir / "frames", job.num_frames, video, manifest_path, latents_path,
                                timings)

    def _encode(self, job: PreparedJob) -> sampler.Conditioning:
        from .image_encoder import load_image_encoder
        from .text_encoder import load_text_encoder

        p = job.params
        arch = self.tree.arch or {}
        todo = [s for s in (p.negative_prompt, p.prompt) if s not in self._text_cache]
        if todo:
            # sequential offload is for small cards: stream umT5-XXL's layers (11 GB in bf16) instead of loading it
            # ... and on any card where it does not fit next to what is already resident (12-16 GB cards)
            stream = self.device.type == "cuda" and (self.memory_mode == "sequential_offload"
                                                     or not (self.tree.tiny or fits_now(T5_BYTES, self.device)))
            te = load_text_encoder(self.tree.files["t5"], self.tree.files["tokenizer"], arch.get("t5"),
                                   device="cpu" if stream else self.device, dtype=self.dtype)
            if stream:
                from accelerate import cpu_offload

                cpu_offload(te.model, execution_device=self.device)
            if len(self._text_cache) > 64:
                self._text_cache.clear()  # embeddings are small, but a long batch of prompts should not pile up
            with torch.no_grad():
                for s, emb in zip(todo, te.encode(todo)):
                    self._text_cache[s] = emb.cpu()
            del te
            self._free()
        text = {"neg": self._text_cache[p.negative_prompt].to(self.device, self.dtype),
                "pos": self._text_cache[p.prompt].to(self.device, self.dtype)}

        reference = job.reference
        ie = load_image_encoder(self.tree.files["clip"], arch.get("clip"), device=self.device, dtype=torch.float32)
        with torch.no_grad():
            clip = ie.encode(reference.to(self.device)).to(self.dtype)
        del ie
        self._free()

        # inpainting condition y: [reference, mid-grey x 80] through the VAE + a mask that marks latent 0 known
        with self._on_device(self._vae.model), torch.no_grad():
            clip_frames = torch.zeros(1, 3, WINDOW_FRAMES, p.height, p.width, device=self.device)
            clip_frames[:, :, 0] = reference.to(self.device)
            ref_latents = self._vae.encode_mode(clip_frames)
            del clip_frames
        mask = torch.zeros_like(ref_latents[:, :4])
        mask[:, :, 0] = 1
        y = torch.cat([mask, ref_latents], dim=1).to(self.dtype)

        audio = []
        with self._on_device(self._audio_encoder.model), torch.no_grad():
            for w in job.windows:  # wav2vec2 runs once per window, not once per step per window
                audio.append(self._audio_encoder(window_audio(job.wave, w)).to(self.device, self.dtype))
        return sampler.Conditioning(text, clip, y, audio)


def _start_ranks(devices: int, device: str, checkpoints, transformer, dtype: str, memory_mode: str):
    """Rank 0's group: joined from a launcher's environment, or spawned here for `devices` > 1; else None."""
    from . import distributed
    from .contract import EngineSettings

    if distributed.launched_world() is not None:
        return distributed.Ranks.from_launcher(device)
    if devices <= 1:
        return None
    follower = EngineSettings(checkpoints=checkpoints, transformer=transformer, device=device.split(":")[0],
                              dtype=dtype, memory_mode=memory_mode)
    return distributed.Ranks.spawn(devices, device, follower.argv())
