"""The generation engine: StableAvatar's long-video method, in order.

    audio -> windows -> encode (text, image, reference latents, wav2vec per window)
          -> denoise (all windows step together; the guidance branches of a window in one batch; overlap fusion)
          -> decode (streamed through the causal VAE) -> write (PNG frames, H.264 + audio, manifest)

Models stay loaded between jobs (the DiT, VAE and wav2vec2); the text and image encoders are loaded for a
job, run once, and released. Behaviour that differs between `--compat official` and `--compat fixed` is
looked up in `compat.py`, never branched on by name here.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from . import compat as compat_modes
from .audio import load_audio, num_video_frames
from .checkpoints import CheckpointTree, file_sha256, locate
from .errors import CancelledError, OutOfMemoryError, UserInputError
from . import guidance
from .image import load_reference
from .memory import T5_BYTES, dit_on_device, fits_now, place_transformer, resolve_memory_mode
from .output import VideoEncoder, to_uint8_frames, write_json, write_png
from .params import FPS, MEMORY_MODE_CHOICES, NEXT_MEMORY_MODE, WINDOW_FRAMES, GenerationParams
from .schedule import flow_sigmas
from .speed import attention_context, step_tensors
from .state import SamplerState
from .windows import WINDOW_LATENTS, Window, fuse_window_overlap, fusion_weights, latent_frames, plan_windows

log = logging.getLogger("stableavatar")

RESULT_NAMES = ("manifest.json", "video.mp4", "latents.safetensors")


@dataclass
class Hooks:
    progress: Callable[[dict], None] | None = None
    preview: Callable[[int, np.ndarray], None] | None = None
    step_done: Callable[[SamplerState], None] | None = None
    should_cancel: Callable[[], bool] | None = None


@dataclass
class GenerationResult:
    out_dir: Path
    frames_dir: Path
    num_frames: int
    video: Path
    manifest: Path
    latents: Path | None = None
    timings: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """Everything a job needs before denoising, computed once."""
    params: GenerationParams
    compat: compat_modes.Compat
    wave: np.ndarray
    reference: torch.Tensor  # [1, 3, H, W] in [-1, 1], fitted to the output size
    num_frames: int          # frames the video will have
    num_latents: int
    windows: list[Window]
    image_path: Path
    audio_path: Path
    fingerprint: str = ""    # set by the engine: it depends on the transformer file and dtype too


class Engine:
    def __init__(self, tree: CheckpointTree, device: str, dtype: str, memory_mode: str, transformer: str | None):
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

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, checkpoints=None, transformer=None, device: str = "cuda", dtype: str = "bfloat16",
             memory_mode: str = "full") -> "Engine":
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
        # resolution (480x832 / 832x480), so one engine serves every preset
        memory_mode = resolve_memory_mode(memory_mode, device, 480, 832,
                                          torch.bfloat16 if dtype == "bfloat16" else torch.float32,
                                          branches=guidance.MAX_BRANCHES)
        engine = cls(locate(checkpoints), device, dtype, memory_mode, transformer)
        engine.memory_mode_requested = requested
        engine._load_resident()
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

    def dit_for(self, params: GenerationParams):
        from .dit import StableAvatarDiT

        path = self.tree.transformer_for(params.width, params.height, self.transformer_override)
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

    def release(self) -> None:
        """Drop every model and free their memory; the next job loads what it needs again."""
        self._dit = self._vae = self._audio_encoder = None
        self._dit_path = None
        self._free()

    def info(self) -> dict:
        gpu = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            gpu = {"name": torch.cuda.get_device_name(self.device), "total_mb": total // 2**20, "free_mb": free // 2**20}
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "memory_mode": self.memory_mode, "gpu": gpu,
                "weights": {"found": True, "path": str(self.tree.root), "tiny": self.tree.tiny,
                            "searched": [str(self.tree.root)]},
                "versions": versions()}

    # ------------------------------------------------------------------ preparation
    def check_inputs(self, image, audio, params: GenerationParams) -> Prepared:
        """Validate everything cheap before a job is queued or models are touched."""
        return self._fingerprinted(prepare_job(image, audio, params))

    def _fingerprinted(self, job: Prepared) -> Prepared:
        transformer = self.tree.transformer_for(job.params.width, job.params.height, self.transformer_override)
        job.fingerprint = _fingerprint(job, transformer, str(self.dtype))
        return job

    # ------------------------------------------------------------------ generation
    def generate(self, image, audio, out_dir, params: GenerationParams, hooks: Hooks | None = None,
                 resume: SamplerState | None = None, overwrite: bool = False,
                 job: Prepared | None = None) -> GenerationResult:
        """`job`: the result of `prepare_job` for these inputs, when the caller already validated them."""
        hooks = hooks or Hooks()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        job = self._fingerprinted(job or prepare_job(image, audio, params))
        out_dir = Path(out_dir)
        _check_out_dir(out_dir, overwrite or resume is not None)
        if resume is not None and resume.fingerprint != job.fingerprint:
            raise UserInputError("the sampler checkpoint belongs to other inputs or parameters",
                                 hint="resume with the original image, audio and parameters, or delete the checkpoint")
        progress = _Progress(hooks.progress, params.steps, len(job.windows), job.num_frames,
                             resume.step if resume else 0)
        try:
            progress.phase("load")
            self._load_resident()
            dit = self.dit_for(params)
            timings["load_s"] = time.perf_counter() - t0

            t = time.perf_counter()
            progress.phase("encode")
            cond = self._encode(job)
            timings["encode_s"] = time.perf_counter() - t

            t = time.perf_counter()
            latents = self._denoise(dit, job, cond, hooks, progress, resume)
            timings["denoise_s"] = time.perf_counter() - t
            del cond

            t = time.perf_counter()
            progress.phase("decode")
            encoder = VideoEncoder(out_dir / "video.mp4", params.width, params.height)
            try:
                self._decode(latents, job, out_dir / "frames", encoder, hooks, progress)
                timings["decode_s"] = time.perf_counter() - t
                t = time.perf_counter()
                progress.phase("mux")
                video = encoder.finish(job.audio_path)
            except BaseException:
                encoder.abort()
                raise
            timings["mux_s"] = time.perf_counter() - t
        except torch.cuda.OutOfMemoryError:
            self._free()
            raise OutOfMemoryError(
                f"the GPU ran out of memory at {params.width}x{params.height} in memory mode {self.memory_mode}",
                hint=_oom_hint(self.memory_mode, params)) from None

        latents_path = None
        if params.save_latents:
            from safetensors.torch import save_file
            from .output import atomic_path

            latents_path = out_dir / "latents.safetensors"
            with atomic_path(latents_path) as tmp:
                save_file({"latents": latents.contiguous()}, str(tmp))
        timings["total_s"] = time.perf_counter() - t0
        manifest = out_dir / "manifest.json"
        write_json(manifest, self._manifest(job, timings, latents))
        progress.done()
        return GenerationResult(out_dir, out_dir / "frames", job.num_frames, video, manifest, latents_path, timings)

    def _encode(self, job: Prepared) -> dict:
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
                audio.append(self._audio_encoder(_audio_slice(job.wave, w)).to(self.device, self.dtype))
        return {"text": text, "clip": clip, "y": y, "audio": audio}

    def _denoise(self, dit, job: Prepared, cond: dict, hooks: Hooks, progress, resume: SamplerState | None):
        p, compat = job.params, job.compat
        h, w = p.height // 8, p.width // 8
        # official rounds the state to bf16 after every window update (a literal .to(torch.bfloat16)), fixed keeps fp32
        state_dtype = torch.bfloat16 if compat.round_state_bf16 else torch.float32
        if resume is not None:
            latents, start = resume.latents.to(self.device, torch.float32), resume.step
        else:
            # drawn on the CPU so a seed gives the same video on any machine
            noise = torch.randn(1, 16, job.num_latents, h, w, generator=torch.Generator("cpu").manual_seed(p.seed))
            start_dtype = self.dtype if compat.round_state_bf16 else torch.float32  # official: noise in the model dtype
            latents, start = noise.to(self.device, start_dtype).float(), 0
        # official pads a shorter final window to 21 latent frames of tokens; fixed windows are always full
        seq_len = None if compat.exact_final_window else WINDOW_LATENTS * (h // 2) * (w // 2)

        with dit_on_device(dit, self.memory_mode, self.device), attention_context(self.attention):
            return self._denoise_steps(dit, job, cond, hooks, progress, latents, start, state_dtype, seq_len)

    def _denoise_steps(self, dit, job, cond, hooks, progress, latents, start, state_dtype, seq_len):
        p, compat = job.params, job.compat
        sigmas, timesteps = flow_sigmas(p.steps)
        # per-step scalars and fusion weights go to the device once: a blocking CPU->GPU copy inside the loop
        # synchronises the stream (once per step for dt, once per fused window for the weights)
        mode = guidance.get(p.guidance)
        plan, n = mode.branches(compat), mode.num_branches
        dts, ts = step_tensors(sigmas, timesteps, self.device, n)
        weights = {n: fusion_weights(n, p.overlap_weights).to(self.device)
                   for n in {win.fuse for win in job.windows if win.fuse}}
        context = [cond["text"][k] for k in plan.text]
        clip_n = cond["clip"].expand(n, -1, -1)
        for i in range(start, p.steps):
            progress.phase("denoise", step=i)
            dt, t_n = dts[i], ts[i]  # float32 sigma difference (as diffusers' scheduler.step), branch timesteps
            pred = torch.zeros_like(latents)
            for win in job.windows:
                if hooks.should_cancel and hooks.should_cancel():
                    raise CancelledError("cancelled", hint=f"{i} of {p.steps} steps were completed")
                z = latents[:, :, win.start:win.end]
                feats = cond["audio"][win.index]
                rows = torch.cat([feats if r == "audio" else torch.zeros_like(feats) for r in plan.audio_rows])
                with torch.no_grad():
                    out = dit(z.to(self.dtype).expand(n, -1, -1, -1, -1), t_n, context, clip_n,
                              cond["y"][:, :, :win.length].expand(n, -1, -1, -1, -1), rows, list(plan.audio_index),
                              seq_len=seq_len, audio_num_frames=WINDOW_FRAMES)
                v = mode.combine(out.float().unbind(0), p.text_scale, p.audio_scale)[None]
                z_next = z + dt * v          # flow-matching Euler step, in float32
                if win.fuse and (i > 0 or compat.fuse_at_step0):
                    z_next = fuse_window_overlap(z_next, pred[:, :, win.start:win.start + win.fuse], weights[win.fuse])
                pred[:, :, win.start:win.end] = z_next.to(state_dtype).float()
                progress.window_done(i, win.index)
            latents = pred
            if hooks.step_done:
                hooks.step_done(SamplerState(i + 1, latents.to("cpu", state_dtype), job.fingerprint))
        return latents

    def _decode(self, latents, job: Prepared, frames_dir: Path, encoder: VideoEncoder, hooks: Hooks, progress) -> None:
        frames_dir.mkdir(parents=True, exist_ok=True)
        written = 0
        with self._on_device(self._vae.model), torch.no_grad():
            for chunk in self._vae.decode_stream(latents.float()):
                frames = to_uint8_frames(chunk)[: job.num_frames - written]
                for k, frame in enumerate(frames):
                    write_png(frames_dir / f"{written + k:06d}.png", frame)
                encoder.write(frames)
                written += len(frames)
                if len(frames) and hooks.preview:
                    hooks.preview(written - 1, frames[-1])
                progress.frames(written)
                if written >= job.num_frames:
                    break
        for stale in sorted(frames_dir.glob("*.png"))[written:]:  # leftovers of an earlier, longer run in this dir
            stale.unlink()

    def _manifest(self, job: Prepared, timings: dict, latents) -> dict:
        tree = self.tree
        return {
            "stableavatar_backend": __version__,
            "params": job.params.to_dict(),
            "seed": job.params.seed, "compat": job.params.compat, "guidance": job.params.guidance,
            "inputs": {"image": str(job.image_path.resolve()), "image_sha256": file_sha256(job.image_path),
                       "audio": str(job.audio_path.resolve()), "audio_sha256": file_sha256(job.audio_path),
                       "audio_samples_16k": int(job.wave.size)},
            "video": {"frames": job.num_frames, "fps": FPS, "latent_frames": job.num_latents,
                      "width": job.params.width, "height": job.params.height},
            "windows": [vars(w) for w in job.windows],
            "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
            "memory_mode": self.memory_mode, "memory_mode_requested": self.memory_mode_requested,
            "attention": self.attention,
            # arch: a tiny tree's hyper-parameters (None for real weights): the hashes alone do not say what ran
            "checkpoints": {"root": str(tree.root), "tiny_random_weights": tree.tiny, "arch": tree.arch,
                            "transformer": str(self._dit_path),
                            "sha256": {str(p.relative_to(tree.root)): file_sha256(p) for p in tree.weight_files()}},
            "versions": versions(),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "fingerprint": job.fingerprint,
        }


# ---------------------------------------------------------------------- helpers
def prepare_job(image, audio, params: GenerationParams) -> Prepared:
    """Read and validate the inputs and plan the windows; needs no model, so callers run it before loading any."""
    params.validate()
    compat = compat_modes.get(params.compat)
    image_path, audio_path = Path(image), Path(audio)
    reference = load_reference(image_path, params.width, params.height, params.fit)
    wave = load_audio(audio_path, allow_silent=params.allow_silent)
    frames_of_audio = num_video_frames(wave.size)
    num_latents = latent_frames(frames_of_audio, compat)
    windows = plan_windows(num_latents, params.overlap, wave.size, compat)
    num_frames = frames_of_audio if compat.trim_to_audio else 4 * (num_latents - 1) + 1
    return Prepared(params, compat, wave, reference, num_frames, num_latents, windows, image_path, audio_path)


def _audio_slice(wave: np.ndarray, win: Window) -> np.ndarray:
    """The window's samples; past the end of the audio, silence (fixed mode pads short and final windows)."""
    seg = wave[win.audio_start:win.audio_end]
    if seg.size < win.audio_end - win.audio_start:
        seg = np.concatenate([seg, np.zeros(win.audio_end - win.audio_start - seg.size, np.float32)])
    return seg


def _check_out_dir(out_dir: Path, may_replace: bool) -> None:
    existing = [n for n in RESULT_NAMES if (out_dir / n).exists()]
    if existing and not may_replace:
        raise UserInputError(f"output folder {out_dir} already holds a result ({', '.join(existing)})",
                             hint="choose a new folder, or pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise UserInputError(f"output folder {out_dir} is not writable")


def _fingerprint(job: Prepared, transformer: Path, dtype: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(job.params.to_dict(), sort_keys=True).encode())
    h.update(job.image_path.read_bytes())
    h.update(job.wave.tobytes())
    h.update(f"{transformer.name}|{transformer.stat().st_size}|{dtype}".encode())
    return h.hexdigest()


def _oom_hint(mode: str, params: GenerationParams) -> str:
    nxt = NEXT_MEMORY_MODE.get(mode)
    smaller = " or a smaller resolution such as 512x512" if params.width * params.height > 512 * 512 else ""
    if nxt:
        return f"retry with memory mode {nxt}{smaller}"
    return f"close other programs using the GPU{smaller}"


def versions() -> dict:
    import diffusers
    import transformers

    return {"stableavatar": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda}


class _Progress:
    """Turns engine milestones into progress events with an overall fraction and an ETA measured from the work
    done so far: denoising calls while denoising, decoded frames while decoding (decode cost per frame is not
    known before the first chunk, so the denoise-phase ETA covers denoising only)."""
    SPAN = {"load": (0.0, 0.02), "encode": (0.02, 0.05), "denoise": (0.05, 0.9), "decode": (0.9, 0.98), "mux": (0.98, 1.0)}

    def __init__(self, sink, steps: int, windows: int, frames_total: int, start_step: int):
        self.sink, self.steps, self.windows, self.frames_total = sink, steps, windows, frames_total
        self.start_step = start_step
        self.state = {"phase": "load", "step": start_step, "steps": steps, "window": 0, "windows": windows,
                      "fraction": 0.0, "eta_s": None, "frames_written": 0, "frames_total": frames_total}
        self._t_denoise = self._t_decode = None
        self._done_calls = 0

    def _emit(self, **kw):
        self.state.update(kw)
        if self.sink:
            self.sink(dict(self.state))

    def phase(self, name: str, step: int | None = None):
        if name == "denoise" and self._t_denoise is None:
            self._t_denoise = time.perf_counter()
        if name == "decode":
            self._t_decode = time.perf_counter()
        if name == "denoise" and step is not None and self.state["phase"] == "denoise":
            self.state["step"] = step
            return
        lo, _ = self.SPAN[name]
        self._emit(phase=name, fraction=round(max(lo, self.state["fraction"]), 4),
                   **({"step": step} if step is not None else {}))

    def window_done(self, step: int, window: int):
        calls_total = (self.steps - self.start_step) * self.windows
        self._done_calls += 1
        elapsed = time.perf_counter() - self._t_denoise
        per_call = elapsed / self._done_calls
        eta = per_call * (calls_total - self._done_calls)
        lo, hi = self.SPAN["denoise"]
        done = (step * self.windows + window + 1) / (self.steps * self.windows)
        self._emit(phase="denoise", step=step + (window + 1 == self.windows), window=window + 1,
                   fraction=round(lo + (hi - lo) * done, 4), eta_s=round(eta, 1))

    def frames(self, written: int):
        lo, hi = self.SPAN["decode"]
        per_frame = (time.perf_counter() - self._t_decode) / max(1, written)
        self._emit(phase="decode", frames_written=written, eta_s=round(per_frame * (self.frames_total - written), 1),
                   fraction=round(lo + (hi - lo) * written / max(1, self.frames_total), 4))

    def done(self):
        self._emit(phase="mux", fraction=1.0, eta_s=0.0)
