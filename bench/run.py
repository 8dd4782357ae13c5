"""StableAvatar speed/memory harness: real-size random-weight models, one command, one time limit.

    python -m bench.run [--device cuda] [--time-limit 450] [--json bench.json]     # the real table (one H100: < 8 min)
    python -m bench.run --smoke --json smoke.json                                   # tiny dims on the CPU (< 1 min)

Every row is one configuration of ONE denoising step over ONE 21-latent window with every guidance branch of the
default mode (what the sampler does per window per step, through sampler.guided_velocity). Rows vary one factor at a time from the default (memory mode `full`,
attention `native` = PyTorch SDPA's own kernel choice, no torch.compile, branches batched):

  dit      default / memory modes / attention backends / torch.compile / branches one by one, per size
  vae      encode of the 81-frame conditioning clip and streamed decode of one window, per frame; the official
           whole-video fp32 decode that holds every frame on the device
  encoders umT5 / CLIP once per job (only with --with-encoders)
  pipeline the same short job (audio -> N steps x all windows -> decode) with the official code's habits (wav2vec2
           re-run for every window at every step, whole-video fp32 decode at the end holding all frames;
           `--compat official`) and with ours (wav2vec2 once per window, streamed decode; `--compat fixed`),
           through the product's sampler (sampler.denoise), so the improvement is a ratio measured in the same run

Columns: s_step = seconds per step per window (all branches); tflops = achieved TFLOP/s by the FLOP model in
bench/models.py:dit_flops; frac = tflops / the device's dense bf16 peak (--peak-tflops); x_default = s_step of the
default row / s_step of this row (> 1 is faster); dev_MB = peak device memory (CUDA allocator; on the CPU the live
tensor bytes tracked by bench/memtrack.py plus the weights); model_MB = what backend/stableavatar/memory.py predicts
for that row; host_MB = peak resident host memory during the row.

Anything that does not fit the remaining time, is unavailable, or runs out of memory is listed as skipped with the
reason. A watchdog (SIGALRM) aborts a row that overruns the time left, so the run ends within the limit.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.memtrack import LiveBytes
from stableavatar import compat, guidance, sampler
from stableavatar.contract import MEMORY_MODES, GenerationParams
from stableavatar.windows import WINDOW_FRAMES
from stableavatar.windows import WINDOW_LATENTS
from bench.models import (Scale, build_audio_encoder, build_dit, build_image_encoder, build_text_encoder, build_vae,
                          clone_dit, dit_flops, real_scale, smoke_scale)

# the product's default guidance and compat: what the DiT rows time, branch batch included
GUIDANCE = guidance.get(GenerationParams.guidance)
PLAN = GUIDANCE.branches(compat.get(GenerationParams.compat))
NATIVE_BACKENDS = ("native", "_native_flash", "_native_efficient", "_native_cudnn", "_native_math")
OPTIONAL_BACKENDS = {"flash": "flash_attn", "_flash_3": "flash_attn_interface", "sage": "sageattention"}
# dense bf16 tensor-core peaks (no sparsity), TFLOP/s; matched against torch.cuda.get_device_name
PEAK_TFLOPS = {"H200": 989, "H100 SXM": 989, "H100 80GB HBM3": 989, "H100 NVL": 835, "H100 PCIe": 756, "H100": 756,
               "A100": 312, "L40S": 362, "L40": 181, "A10G": 70, "L4": 121, "RTX 6000 Ada": 364,
               "RTX 5090": 209, "RTX 4090": 165, "RTX 4080": 97, "RTX 3090": 71, "RTX 4070": 58}


class RowTimeout(Exception):
    pass


# ------------------------------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------------------------------
class HostPeak:
    """Peak resident set size of this process while active (sampled every 10 ms from /proc/self/statm)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.01)

    def __enter__(self):
        self.peak = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


class Bench:
    def __init__(self, args, scale: Scale, device: torch.device):
        self.args, self.scale, self.device = args, scale, device
        self.dtype = torch.bfloat16
        self.cuda = device.type == "cuda"
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + args.time_limit - args.reserve
        self.rows: list[dict] = []
        self.master = None
        self.default_step: dict[tuple[int, int], float] = {}
        self.peak_tflops = args.peak_tflops or _peak_tflops(device)

    # --- time budget ---------------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def watchdog(self):
        """Raise RowTimeout in the main thread when the time budget runs out inside a row."""
        left = self.left()
        if left <= 0:
            raise RowTimeout("time limit reached")
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def on_alarm(signum, frame):
            raise RowTimeout("aborted: the row overran the time limit")

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.01))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    # --- rows ----------------------------------------------------------------------------------------------------
    def add(self, **row) -> dict:
        base = {"group": None, "name": None, "size": None, "mode": None, "attention": None, "compile": None,
                "branches": None, "status": "ok", "reason": None, "s_step": None, "tflops": None, "frac_peak": None,
                "x_default": None, "dev_peak_mb": None, "dev_peak_source": None, "model_mb": None,
                "host_peak_mb": None, "extra": {}}
        base.update(row)
        self.rows.append(base)
        _print_row(base)
        return base

    def skip(self, reason: str, **row) -> dict:
        return self.add(status="skipped", reason=reason, **row)

    def run_row(self, estimate_s: float, fn, post=None, **row) -> dict:
        """Run `fn() -> dict of measurements` under the watchdog, or skip it when `estimate_s` does not fit.
        `post(measured)` may add derived columns before the row is printed."""
        if estimate_s > self.left() or self.left() <= 0:
            return self.skip(f"time limit: needs ~{estimate_s:.0f} s, {max(self.left(), 0):.0f} s left", **row)
        self._reset_memory()
        try:
            with self.watchdog(), HostPeak() as host:
                measured = fn()
        except RowTimeout as e:
            return self.skip(f"time limit: {e}", **row)
        except torch.cuda.OutOfMemoryError as e:
            return self.skip(f"out of memory: {_first_line(e)}", **row)
        except Exception as e:  # noqa: BLE001 - an unavailable kernel/backend/compiler is a skip with its reason
            if self.args.verbose:
                traceback.print_exc()
            return self.skip(f"unavailable: {type(e).__name__}: {_first_line(e)}", **row)
        finally:
            self._free()
        measured.setdefault("host_peak_mb", _mb(host.peak))
        if post:
            post(measured)
        return self.add(**row, **measured)

    def _reset_memory(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def _free(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def dev_peak(self, tracked: LiveBytes | None = None, resident: int = 0) -> tuple[float, str]:
        if self.cuda:
            return _mb(torch.cuda.max_memory_allocated(self.device)), "cuda_allocator"
        return _mb((tracked.peak if tracked else 0) + resident), "tracked_live_tensors"

    # --- DiT rows ------------------------------------------------------------------------------------------------
    def inputs(self, width: int, height: int):
        """One window's sampler inputs (random, real shapes): latent window z, the job's conditioning and the
        window's branch batch for the default guidance, as sampler.denoise builds them."""
        g = torch.Generator("cpu").manual_seed(0)
        cfg = self.master.config
        h, w = height // 8, width // 8
        dt = self.dtype
        dev = self.device
        neg, pos = self.scale.text_tokens
        text = {"neg": torch.randn(neg, cfg.text_dim, generator=g).to(dev, dt),
                "pos": torch.randn(pos, cfg.text_dim, generator=g).to(dev, dt)}
        y = torch.randn(1, cfg.in_dim - cfg.out_dim, WINDOW_LATENTS, h, w, generator=g).to(dev, dt)
        clip = torch.randn(1, 257, cfg.image_dim, generator=g).to(dev, dt)
        # fixed mode: 81 frames of audio per window -> 161 wav2vec2 tokens
        features = torch.randn(1, 161, cfg.audio_in_dim, generator=g).to(dev, dt)
        cond = sampler.Conditioning(text, clip, y, [features])
        return {"z": torch.randn(1, cfg.out_dim, WINDOW_LATENTS, h, w, generator=g).to(dev), "cond": cond,
                "batch": sampler.branch_batch(cond, PLAN, features, WINDOW_LATENTS)}

    def window_step(self, dit, inp, dt: torch.Tensor, t: torch.Tensor, batched: bool = True):
        """The sampler's per-window work: DiT over the guidance branches, guidance combine, Euler step (fp32)."""
        z, b = inp["z"], inp["batch"]
        if batched:
            v = sampler.guided_velocity(dit, z, t, b, GUIDANCE, 3.0, 5.0, model_dtype=self.dtype)
        else:  # one branch per forward (the adapter runs per call, on that branch's own audio row)
            x = z.to(self.dtype)
            out = []
            for k, i in enumerate(b.audio_index):
                rows = b.audio_rows[:1] if i is None else b.audio_rows[i:i + 1]  # slices: no index tensor, no sync
                out.append(dit(x, t[:1], [b.context[k]], b.clip[:1], b.y[:1], rows, [None if i is None else 0],
                               audio_num_frames=WINDOW_FRAMES).float()[0])
            v = GUIDANCE.combine(out, 3.0, 5.0)[None]
        return z + dt * v

    def time_steps(self, dit, inp, batched=True, track=False):
        dt = torch.tensor(-0.02, device=self.device)
        t = torch.full((GUIDANCE.num_branches,), 900.0, device=self.device)
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(self.scale.warmup):
                self.window_step(dit, inp, dt, t, batched)
            self.sync()
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(self.scale.steps):
                out = self.window_step(dit, inp, dt, t, batched)
            self.sync()
            per = (time.perf_counter() - t0) / self.scale.steps
            if not torch.isfinite(out).all():
                raise FloatingPointError("non-finite output")
            tracked = None
            if track and not self.cuda:  # one extra, untimed step under the live-tensor tracker
                with LiveBytes() as tracked:
                    self.window_step(dit, inp, dt, t, batched)
        return per, warm, tracked

    def dit_row(self, size, *, mode="full", attention="native", compile_=False, batched=True, estimate=None,
                group="dit", name=None):
        from diffusers.models.attention_dispatch import attention_backend
        from stableavatar import memory

        width, height = size
        name = name or f"{mode}/{attention}/{'compile' if compile_ else 'eager'}/{'batched' if batched else 'serial'}"
        row = dict(group=group, name=name, size=f"{width}x{height}", mode=mode, attention=attention,
                   compile=compile_, branches="batched" if batched else "serial")
        if estimate is None:
            estimate = 0.0

        def fn():
            n = GUIDANCE.num_branches
            flops = dit_flops(self.master.config, width, height, branches=n, audio_rows=len(PLAN.audio_rows))
            if not batched:
                flops = dit_flops(self.master.config, width, height, branches=1, audio_rows=1)
                flops = {k: n * v for k, v in flops.items()}
            inp = self.inputs(width, height)
            t0 = time.perf_counter()
            dit = memory.place_transformer(clone_dit(self.master, self.scale), mode, self.device, self.dtype)
            place_s = time.perf_counter() - t0
            resident = sum(p.numel() * p.element_size() for p in dit.parameters() if p.device == self.device)
            extra = {"place_s": round(place_s, 3)}
            if compile_:
                dit.compile_repeated_blocks(fullgraph=False, backend=self.args.compile_backend)
                extra["compile_backend"] = self.args.compile_backend
            ctx = attention_backend(attention) if attention != "native" else contextlib.nullcontext()
            t0 = time.perf_counter()
            with memory.dit_on_device(dit, mode, self.device), ctx:
                self.sync()
                extra["to_device_s"] = round(time.perf_counter() - t0, 3)
                per, warm, tracked = self.time_steps(dit, inp, batched, track=True)
            extra["warmup_s"] = round(warm, 3)
            dev, src = self.dev_peak(tracked, resident + sum(t.numel() * t.element_size() for t in _tensors(inp)))
            del dit
            tflops = flops["total"] / per / 1e12
            model = memory.dit_weight_bytes(mode, self.dtype) + memory.activation_bytes(
                width, height, self.dtype, branches=n if batched else 1) if self.scale.name == "real" else None
            return {"s_step": round(per, 4), "tflops": round(tflops, 2),
                    "frac_peak": round(tflops / self.peak_tflops, 3) if self.peak_tflops else None,
                    "dev_peak_mb": dev, "dev_peak_source": src, "model_mb": _mb(model) if model else None,
                    "extra": {**extra, "flops_per_step": flops["total"], "attention_flop_share":
                              round(flops["attention"] / flops["total"], 3), "tokens": flops["tokens"]}}

        def post(m):
            if name == "default":
                self.default_step[size] = m["s_step"]
            if size in self.default_step:
                m["x_default"] = round(self.default_step[size] / m["s_step"], 3)

        return self.run_row(estimate, fn, post, **row)

    # --- VAE rows ------------------------------------------------------------------------------------------------
    def vae_rows(self, size, vae):
        from stableavatar import memory

        width, height = size
        s = f"{width}x{height}"
        step_s = self.default_step.get(size, 1.0)
        weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
        real = self.scale.name == "real"

        def encode():
            n = self.scale.vae_frames
            clip = torch.zeros(1, 3, n, height, width, device=self.device)
            clip[:, :, 0] = torch.rand(3, height, width, device=self.device) * 2 - 1
            with torch.no_grad(), LiveBytes() if not self.cuda else contextlib.nullcontext() as lb:
                self.sync()
                t0 = time.perf_counter()
                z = vae.encode_mode(clip)
                self.sync()
                t = time.perf_counter() - t0
            dev, src = self.dev_peak(lb, weights)
            return {"s_step": None, "dev_peak_mb": dev, "dev_peak_source": src,
                    "model_mb": _mb(weights + memory.VAE_ENCODE_BYTES_PER_PIXEL * width * height) if real else None,
                    "extra": {"ms_per_frame": round(1000 * t / n, 2), "s_total": round(t, 3), "frames": n,
                              "latents": int(z.shape[2])}}

        def decode(stream: bool):
            z = torch.randn(1, 16, self.scale.vae_latents, height // 8, width // 8, device=self.device)
            with torch.no_grad(), LiveBytes() if not self.cuda else contextlib.nullcontext() as lb:
                self.sync()
                t0 = time.perf_counter()
                if stream:  # ours: causal chunks, each moved to the CPU as uint8-ready float frames
                    frames = sum(c.shape[1] for c in vae.decode_stream(z))
                else:  # official: whole window at once in fp32, all frames held on the device, then one copy
                    mean, inv_std = vae.scale()
                    latents = z.to(vae.dtype) / inv_std + mean
                    video = vae.model.decode(latents).sample.clamp(-1, 1)
                    frames = video.shape[2]
                    video = video.cpu()
                self.sync()
                t = time.perf_counter() - t0
            dev, src = self.dev_peak(lb, weights)
            return {"dev_peak_mb": dev, "dev_peak_source": src,
                    "model_mb": _mb(weights + memory.VAE_DECODE_BYTES_PER_PIXEL * width * height)
                    if real and stream else None,
                    "extra": {"ms_per_frame": round(1000 * t / frames, 2), "s_total": round(t, 3), "frames": frames}}

        step_s *= 4 if real else 1
        self.run_row(2 * step_s, encode, group="vae", name=f"encode {self.scale.vae_frames} frames (fp32)", size=s)
        self.run_row(2 * step_s, lambda: decode(True), group="vae", name="decode stream (ours)", size=s)
        self.run_row(2 * step_s, lambda: decode(False), group="vae", name="decode whole fp32 (official)", size=s)

    # --- encoders ------------------------------------------------------------------------------------------------
    def encoder_rows(self):
        def text():
            t0 = time.perf_counter()
            te = build_text_encoder(self.scale, self.device, self.dtype)
            build = time.perf_counter() - t0
            ids = torch.randint(0, te.config.vocab_size, (2, 512), device=self.device)
            mask = torch.ones_like(ids)
            with torch.no_grad():
                te(input_ids=ids, attention_mask=mask)  # warm-up
                self.sync()
                t0 = time.perf_counter()
                te(input_ids=ids, attention_mask=mask)
                self.sync()
            t = time.perf_counter() - t0
            dev, src = self.dev_peak(None, sum(p.numel() * p.element_size() for p in te.parameters()))
            return {"dev_peak_mb": dev, "dev_peak_source": src,
                    "extra": {"s_per_job": round(t, 3), "build_s": round(build, 1), "prompts": 2}}

        def image():
            enc = build_image_encoder(self.scale, self.device)
            img = torch.rand(1, 3, 512, 512, device=self.device) * 2 - 1
            with torch.no_grad():
                enc.encode(img)
                self.sync()
                t0 = time.perf_counter()
                enc.encode(img)
                self.sync()
            t = time.perf_counter() - t0
            dev, src = self.dev_peak(None, sum(p.numel() * p.element_size() for p in enc.model.parameters()))
            return {"dev_peak_mb": dev, "dev_peak_source": src, "extra": {"s_per_job": round(t, 3)}}

        est = 60 if self.scale.name == "real" else 5
        self.run_row(est, text, group="encoders", name="umT5 text (bf16, 2 prompts)")
        self.run_row(est / 2, image, group="encoders", name="CLIP image (fp32)")

    # --- pipeline: official habits vs ours, through the product's sampler (sampler.denoise) ---------------------------
    def pipeline_rows(self, size, vae, audio_encoder):
        width, height = size
        step_s = self.default_step.get(size)
        steps = self.scale.steps
        results = {}

        def post(m, mode):
            a = results.get("official")
            if mode == "official":
                m["x_default"] = 1.0
            elif a is not None and a["status"] == "ok":
                for key in ("total_s", "est_50_steps_s"):
                    m["extra"][f"speedup_{key}"] = round(a["extra"][key] / m["extra"][key], 3)
                m["x_default"] = m["extra"]["speedup_est_50_steps_s"]

        for mode in ("official", "fixed"):
            name = "official habits (--compat official)" if mode == "official" else "ours (--compat fixed)"
            est = (steps * 2 + 2) * (step_s or 1.0) * 1.3 + 10 * (step_s or 0.1)
            results[mode] = self.run_row(
                est, lambda c=mode: self._pipeline(size, c, vae, audio_encoder), lambda m, c=mode: post(m, c),
                group="pipeline", name=name, size=f"{width}x{height}", mode="full", attention="native",
                compile=False, branches="batched")

    def _pipeline(self, size, compat_name, vae, audio_encoder):
        if self.cuda:
            return self._pipeline_run(size, compat_name, vae, audio_encoder)
        weights = sum(p.numel() * p.element_size() for m in (self.master, vae.model, audio_encoder.model)
                      for p in m.parameters())
        with LiveBytes() as lb:
            m = self._pipeline_run(size, compat_name, vae, audio_encoder)
        m["dev_peak_mb"], m["dev_peak_source"] = self.dev_peak(lb, weights)
        return m

    def _pipeline_run(self, size, compat_name, vae, audio_encoder):
        from stableavatar import memory
        from stableavatar.job import plan_job
        from stableavatar.windows import window_audio

        width, height = size
        rng = np.random.default_rng(0)
        wave = (rng.standard_normal(int(self.scale.pipeline_seconds * 16000)) * 0.1).astype(np.float32)
        params = GenerationParams(width=width, height=height, steps=self.scale.steps, seed=0, compat=compat_name)
        job = plan_job(params, wave, torch.zeros(1, 3, height, width))
        windows = job.windows
        inp = self.inputs(width, height)
        dit = memory.place_transformer(clone_dit(self.master, self.scale), "full", self.device, self.dtype)
        audio_s = [0.0]

        def features(win):
            self.sync()
            t0 = time.perf_counter()
            f = audio_encoder(window_audio(wave, win)).to(self.device, self.dtype)
            self.sync()
            audio_s[0] += time.perf_counter() - t0
            return f

        class PerStep(list):  # official habit: wav2vec2 re-run for every window at every step
            def __getitem__(self, i):
                return features(windows[i])

        self.sync()
        t_all = time.perf_counter()
        audio = PerStep(windows) if compat_name == "official" else [features(w) for w in windows]
        audio_once = audio_s[0]
        c = inp["cond"]
        cond = sampler.Conditioning(c.text, c.clip, c.y, audio)
        latents = sampler.initial_latents(job, self.device, self.dtype)
        t0 = time.perf_counter()
        latents = sampler.denoise(dit, job, cond, latents, device=self.device, model_dtype=self.dtype)
        self.sync()
        denoise_s = time.perf_counter() - t0 - (audio_s[0] - audio_once)
        del dit
        self._free()
        t0 = time.perf_counter()
        held = 0
        with torch.no_grad():
            if compat_name == "official":  # whole video in one decode call, fp32, all frames on the device
                mean, inv_std = vae.scale()
                z = latents.float().to(vae.dtype) / inv_std + mean
                video = vae.model.decode(z).sample.clamp(-1, 1)
                held = video.numel() * video.element_size()
                video = video.cpu()
                decoded = video.shape[2]
                del video
            else:
                decoded = 0
                for chunk in vae.decode_stream(latents.float()):
                    decoded += chunk.shape[1]
        self.sync()
        decode_s = time.perf_counter() - t0
        total = time.perf_counter() - t_all
        audio_total = audio_s[0]
        per_step_audio = (audio_total - (0 if compat_name == "official" else audio_once)) / params.steps
        est50 = (0 if compat_name == "official" else audio_once) + 50 * (per_step_audio + denoise_s / params.steps) \
            + decode_s
        dev, src = self.dev_peak(None, 0)
        return {"s_step": round(denoise_s / params.steps / len(windows), 4), "dev_peak_mb": dev,
                "dev_peak_source": src,
                "extra": {"windows": len(windows), "latents": job.num_latents, "frames_decoded": decoded,
                          "steps": params.steps, "audio_s": round(audio_total, 3), "denoise_s": round(denoise_s, 3),
                          "decode_s": round(decode_s, 3), "total_s": round(total, 3),
                          "est_50_steps_s": round(est50, 2), "decode_held_mb": _mb(held) if held else 0}}

    # --- the whole plan ------------------------------------------------------------------------------------------
    def run(self):
        args, scale = self.args, self.scale
        t0 = time.perf_counter()
        self.master = build_dit(scale, self.dtype, init_device=self.device)
        build_s = time.perf_counter() - t0
        info("built the DiT (%.2f B params) in %.1f s", sum(p.numel() for p in self.master.parameters()) / 1e9,
             build_s)
        sizes = [s for s in scale.sizes if not args.sizes or f"{s[0]}x{s[1]}" in args.sizes]
        vae = build_vae(scale, self.device)
        audio_encoder = build_audio_encoder(scale, self.device)

        # 1. the default configuration per size (every ratio refers to it)
        for size in sizes:
            self.dit_row(size, name="default", estimate=0)
        # 2. official habits vs ours, on the largest size
        self.pipeline_rows(sizes[-1], vae, audio_encoder)
        # 3. VAE per frame
        for size in sizes:
            self.vae_rows(size, vae)
        # 4. one factor at a time
        backends = _available_backends()
        for size in sizes[:scale.factor_sizes]:
            est = (scale.warmup + scale.steps + 1) * self.default_step.get(size, 0.0)
            for mode in MEMORY_MODES[1:]:
                f = {"sequential_offload": 3.0, "model_offload": 1.5}.get(mode, 1.3)
                self.dit_row(size, mode=mode, estimate=est * f + (20 if scale.name == "real" else 0))
            for backend, why in backends:
                if why:
                    self.skip(why, group="dit", name=f"full/{backend}/eager/batched", size=f"{size[0]}x{size[1]}",
                              mode="full", attention=backend, compile=False, branches="batched")
                    continue
                if backend == "native":
                    continue  # that is the default row
                r = self.dit_row(size, attention=backend, estimate=est * (4 if "math" in backend else 1.2))
                if backend.startswith("sage"):
                    r["extra"]["approximate"] = "int8/fp8 attention: outputs differ, opt-in only"
            self.dit_row(size, batched=False, estimate=est * 1.3)
        # 5. torch.compile last (compile time dominates)
        for size in sizes[:scale.factor_sizes]:
            est = (scale.warmup + scale.steps + 1) * self.default_step.get(size, 0.0)
            self.dit_row(size, compile_=True, estimate=est + (90 if scale.name == "real" else 2))
        # 6. encoders (optional)
        if args.with_encoders or scale.name == "smoke":  # tiny encoders are cheap: smoke always runs them
            self.encoder_rows()
        else:
            self.skip("not requested (pass --with-encoders)", group="encoders", name="umT5 text / CLIP image")
        del vae, audio_encoder


def _available_backends() -> list[tuple[str, str | None]]:
    import importlib.util

    out = [(b, None) for b in NATIVE_BACKENDS]
    for backend, module in OPTIONAL_BACKENDS.items():
        ok = importlib.util.find_spec(module) is not None
        out.append((backend, None if ok else f"unavailable: {module} is not installed"))
    return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        seen = set()
        for v in obj.values():
            for t in _tensors(v):
                if id(t) not in seen:
                    seen.add(id(t))
                    yield t
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return float(PEAK_TFLOPS[key])
    return None


def _mb(nbytes) -> float:
    return round(nbytes / 2**20, 1)


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def info(msg, *a):
    print("# " + msg % a, file=sys.stderr, flush=True)


COLUMNS = [("group", 8), ("name", 40), ("size", 8), ("status", 7), ("s_step", 8), ("tflops", 7), ("frac_peak", 6),
           ("x_default", 7), ("dev_peak_mb", 9), ("model_mb", 9), ("host_peak_mb", 8)]
HEAD = {"frac_peak": "frac", "x_default": "x_def", "dev_peak_mb": "dev_MB", "model_mb": "model_MB",
        "host_peak_mb": "host_MB"}


def _fmt(v, width):
    if v is None:
        s = "-"
    elif isinstance(v, float):
        s = f"{v:.4g}"
    else:
        s = str(v)
    return s[:width].ljust(width)


def _print_row(row):
    line = " ".join(_fmt(row[k], w) for k, w in COLUMNS)
    extra = row.get("extra") or {}
    notes = {k: v for k, v in extra.items() if k in ("ms_per_frame", "est_50_steps_s", "speedup_est_50_steps_s",
                                                      "audio_s", "decode_s", "s_per_job", "to_device_s", "warmup_s")}
    if row["status"] != "ok":
        line += f"  {row['reason']}"
    elif notes:
        line += "  " + " ".join(f"{k}={v}" for k, v in notes.items())
    print(line, flush=True)


def summarize(rows, peak) -> list[str]:
    """Per size: the default row against the floor, the fastest exact attention backend, compile and serial
    ratios, peak memory per mode; and the official-habits vs ours pipeline."""
    out = []
    ok = [r for r in rows if r["status"] == "ok"]
    for size in dict.fromkeys(r["size"] for r in ok if r["group"] == "dit"):
        dit = [r for r in ok if r["group"] == "dit" and r["size"] == size]
        d = next((r for r in dit if r["name"] == "default"), None)
        if d is None:
            continue
        line = f"{size}: default {d['s_step']:.3f} s/step/window, {d['tflops']:.1f} TFLOP/s"
        if peak:
            floor = d["extra"]["flops_per_step"] / (peak * 1e12)
            line += f", {d['frac_peak']:.2f} of the {peak:.0f} TFLOP/s peak (floor {floor:.3f} s, gap x{d['s_step'] / floor:.2f})"
        exact = [r for r in dit if r["mode"] == "full" and not r["compile"] and r["branches"] == "batched"
                 and not str(r["attention"]).startswith("sage")]
        best = min(exact, key=lambda r: r["s_step"])
        line += f"; fastest exact attention: {best['attention']} ({best['s_step']:.3f} s)"
        for label, pick in (("compile", lambda r: r["compile"]), ("serial", lambda r: r["branches"] == "serial")):
            r = next((r for r in dit if pick(r)), None)
            if r is not None:
                line += f"; {label} x{r['x_default']:.2f}"
        mem = {r["mode"]: r["dev_peak_mb"] for r in dit if r["attention"] == "native" and not r["compile"]
               and r["branches"] == "batched"}
        line += "; peak MB " + ", ".join(f"{m} {v:.0f}" for m, v in mem.items())
        out.append(line)
    pipe = {r["name"].split(" ")[0]: r for r in ok if r["group"] == "pipeline"}
    if "official" in pipe and "ours" in pipe:
        a, b = pipe["official"]["extra"], pipe["ours"]["extra"]
        out.append(f"pipeline {pipe['ours']['size']} ({b['windows']} windows), extrapolated to 50 steps: official habits "
                   f"{a['est_50_steps_s']:.1f} s, ours {b['est_50_steps_s']:.1f} s (x{a['est_50_steps_s'] / b['est_50_steps_s']:.2f}); "
                   f"peak MB {pipe['official']['dev_peak_mb']} vs {pipe['ours']['dev_peak_mb']}; "
                   f"decode holds {a['decode_held_mb']} MB of frames vs streamed")
    return out


def print_table(rows):
    print(" ".join(_fmt(HEAD.get(k, k), w) for k, w in COLUMNS), flush=True)
    for row in rows:
        _print_row(row)


def environment(device: torch.device, peak) -> dict:
    import diffusers
    import transformers

    env = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
           "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
           "cuda": torch.version.cuda, "device": str(device), "cpu_threads": torch.get_num_threads(),
           "peak_tflops": peak, "host": platform.node()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_total_mb=_mb(p.total_memory), capability=f"{p.major}.{p.minor}",
                   cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            import subprocess
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny dims on the CPU: exercises every code path in < 1 min")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available, cpu for --smoke)")
    ap.add_argument("--time-limit", type=float, default=450.0, help="seconds for the whole run (default 450)")
    ap.add_argument("--reserve", type=float, default=None, help="seconds kept back for writing results")
    ap.add_argument("--json", type=Path, default=None, help="write rows + environment here")
    ap.add_argument("--sizes", nargs="*", default=None, help="subset of sizes, e.g. 480x832")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    ap.add_argument("--with-encoders", action="store_true", help="also time umT5 and CLIP (real: +~17 GB, +~1 min)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device for 'frac'")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; smoke: eager)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    scale = smoke_scale() if args.smoke else real_scale()
    if args.steps:
        scale.steps = args.steps
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if args.reserve is None:
        args.reserve = 3.0 if args.smoke else 15.0
    if args.compile_backend is None:
        args.compile_backend = "eager" if device.type == "cpu" else "inductor"
    if args.threads or (scale.threads and device.type == "cpu"):
        torch.set_num_threads(args.threads or scale.threads)
    bench = Bench(args, scale, device)
    env = environment(device, bench.peak_tflops)
    env.update(scale=scale.name, steps=scale.steps, warmup=scale.warmup, time_limit_s=args.time_limit,
               compile_backend=args.compile_backend)
    info("stableavatar bench: %s", json.dumps(env))
    print(" ".join(_fmt(HEAD.get(k, k), w) for k, w in COLUMNS), flush=True)
    error = None
    try:
        bench.run()
    except RowTimeout as e:
        error = f"time limit: {e}"
    except Exception as e:  # noqa: BLE001 - still write what was measured
        traceback.print_exc()
        error = f"{type(e).__name__}: {_first_line(e)}"
    env["elapsed_s"] = round(time.perf_counter() - bench.t_start, 1)
    print("\n== final table ==", flush=True)
    print_table(bench.rows)
    try:
        summary = summarize(bench.rows, bench.peak_tflops)
    except Exception as e:  # noqa: BLE001 - the table and JSON matter more than the summary
        summary = [f"(summary failed: {type(e).__name__}: {_first_line(e)})"]
    print("\n== summary ==\n" + "\n".join(summary), flush=True)
    result_summary = summary
    result = {"environment": env, "rows": bench.rows, "summary": result_summary, "error": error}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    info("done in %.1f s%s", env["elapsed_s"], f" (error: {error})" if error else "")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
