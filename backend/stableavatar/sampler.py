"""The sampler: StableAvatar's sliding-window flow-matching loop as plain functions of (model, job, conditioning,
latents), in the manner of k-diffusion's samplers.

At every step all windows are denoised in order; each window's guidance branches go through the DiT as one
batch, the branch velocities combine as the job's guidance mode says, the window takes a float32 Euler step, and
its leading latents are blended with the previous window's (official wan_inference_long_pipeline.py L706-790).
What `--compat official` changes is read from the job's `Compat` (compat.py), never branched on by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import CancelledError
from .guidance import AUDIO, Branches, GuidanceMode
from .job import PreparedJob
from .windows import WINDOW_FRAMES
from .schedule import flow_sigmas
from .speed import step_tensors
from .windows import WINDOW_LATENTS, fuse_window_overlap, fusion_weights


@dataclass
class Conditioning:
    """A job's encoded conditions, on the compute device in the model dtype."""
    text: dict[str, torch.Tensor]  # "neg" / "pos" -> umT5 embedding [L, 4096]
    clip: torch.Tensor             # CLIP tokens of the reference [1, 257, 1280]
    y: torch.Tensor                # inpainting condition of a full window: mask + reference latents [1, 20, 21, h, w]
    audio: Sequence[torch.Tensor]  # wav2vec2 features per window [1, L_a, 768], indexed by Window.index


@dataclass(frozen=True)
class BranchBatch:
    """The DiT's conditioning inputs for one window, one row per guidance branch."""
    context: list[torch.Tensor]
    clip: torch.Tensor
    y: torch.Tensor
    audio_rows: torch.Tensor
    audio_index: list[int | None]


def state_dtype(job: PreparedJob) -> torch.dtype:
    """The dtype the latent state is kept in between window updates: official rounds it to bf16 after every
    update (a literal .to(torch.bfloat16), official L773/L778), fixed keeps float32."""
    return torch.bfloat16 if job.compat.round_state_bf16 else torch.float32


def initial_latents(job: PreparedJob, device: torch.device, model_dtype: torch.dtype) -> torch.Tensor:
    """The seed's noise [1, 16, T, H/8, W/8] as float32 on `device`. Drawn on the CPU so a seed gives the same
    video on any machine; official draws it in the model dtype (prepare_latents, official L363-381), so official
    mode rounds it through `model_dtype` first."""
    p = job.params
    noise = torch.randn(1, 16, job.num_latents, p.height // 8, p.width // 8,
                        generator=torch.Generator("cpu").manual_seed(p.seed))
    return noise.to(device, model_dtype if job.compat.round_state_bf16 else torch.float32).float()


def token_seq_len(job: PreparedJob) -> int | None:
    """Tokens the DiT pads each window to: official pads a shorter final window to 21 latent frames (official
    L737); fixed windows are always full, so no padding (None)."""
    if job.compat.exact_final_window:
        return None
    return WINDOW_LATENTS * (job.params.height // 16) * (job.params.width // 16)


def branch_batch(cond: Conditioning, plan: Branches, features: torch.Tensor, length: int) -> BranchBatch:
    """The batch of one window of `length` latents whose wav2vec2 features are `features`."""
    n = len(plan.text)
    rows = torch.cat([features if r == AUDIO else torch.zeros_like(features) for r in plan.audio_rows])
    return BranchBatch([cond.text[k] for k in plan.text], cond.clip.expand(n, -1, -1),
                       cond.y[:, :, :length].expand(n, -1, -1, -1, -1), rows, list(plan.audio_index))


def guided_velocity(dit, z: torch.Tensor, t: torch.Tensor, batch: BranchBatch, mode: GuidanceMode,
                    text_scale: float, audio_scale: float, *, model_dtype: torch.dtype,
                    seq_len: int | None = None) -> torch.Tensor:
    """The guided velocity [1, 16, F, h, w] (float32) of window latents `z`: every branch in one DiT forward at the
    branch timesteps `t` [branches], combined by `mode`."""
    n = len(batch.context)
    with torch.no_grad():
        out = dit(z.to(model_dtype).expand(n, -1, -1, -1, -1), t, batch.context, batch.clip, batch.y,
                  batch.audio_rows, batch.audio_index, seq_len=seq_len, audio_num_frames=WINDOW_FRAMES)
    return mode.combine(out.float().unbind(0), text_scale, audio_scale)[None]


@dataclass(frozen=True)
class StepPlan:
    """What every window step of a job shares, on the compute device: computed once before the loop."""
    plan: Branches
    keep: torch.dtype                  # state_dtype(job)
    seq_len: int | None
    dts: torch.Tensor                  # [steps] Euler step sizes
    ts: torch.Tensor                   # [steps, branches] branch timesteps
    weights: dict[int, torch.Tensor]   # fusion weights per overlap length
    fuse_at_step0: bool


def step_plan(job: PreparedJob, device: torch.device) -> StepPlan:
    p, mode = job.params, job.guidance
    sigmas, timesteps = flow_sigmas(p.steps, p.shift)
    # per-step scalars and fusion weights go to the device once: a blocking CPU->GPU copy inside the loop
    # synchronises the stream (once per step for dt, once per fused window for the weights)
    dts, ts = step_tensors(sigmas, timesteps, device, mode.num_branches)
    weights = {n: fusion_weights(n, p.overlap_weights).to(device) for n in {w.fuse for w in job.windows if w.fuse}}
    return StepPlan(mode.branches(job.compat), state_dtype(job), token_seq_len(job), dts, ts, weights,
                    job.compat.fuse_at_step0)


def window_step(dit, job: PreparedJob, cond: Conditioning, latents: torch.Tensor, win, i: int, sp: StepPlan, *,
                model_dtype: torch.dtype) -> torch.Tensor:
    """Window `win`'s stepped latents at step i, before fusion (float32 [1, 16, win.length, h, w]). Reads only
    `latents`, the state entering step i: every window of a step can run at once (window_parallel.py)."""
    p = job.params
    z = latents[:, :, win.start:win.end]
    batch = branch_batch(cond, sp.plan, cond.audio[win.index], win.length)
    v = guided_velocity(dit, z, sp.ts[i], batch, job.guidance, p.text_scale, p.audio_scale, model_dtype=model_dtype,
                        seq_len=sp.seq_len)
    return z + sp.dts[i] * v  # flow-matching Euler step in float32 (dt as diffusers' scheduler.step)


def place_window(pred: torch.Tensor, win, z_next: torch.Tensor, i: int, sp: StepPlan) -> None:
    """Blend window `win`'s stepped latents into `pred`, the state being built for step i+1. Must run in window
    order: the overlap blends with `pred`'s copy of the previous window's already fused result."""
    # official skips the fusion at step 0 (official L758: the later window overwrites the overlap)
    if win.fuse and (i > 0 or sp.fuse_at_step0):
        z_next = fuse_window_overlap(z_next, pred[:, :, win.start:win.start + win.fuse], sp.weights[win.fuse])
    pred[:, :, win.start:win.end] = z_next.to(sp.keep).float()


def denoise(dit, job: PreparedJob, cond: Conditioning, latents: torch.Tensor, start_step: int = 0, *,
            device: torch.device, model_dtype: torch.dtype,
            callback_on_step_end: Callable[[int, torch.Tensor], None] | None = None,
            should_cancel: Callable[[], bool] | None = None,
            on_window_done: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run steps `start_step`..steps-1 over every window from float32 `latents` [1, 16, T, h, w] on `device`;
    returns the denoised latents (float32 holding `state_dtype` values).

    callback_on_step_end(i, latents): after step i (0-based), with the state entering step i+1.
    should_cancel(): polled before every DiT call; True raises CancelledError.
    on_window_done(i, window_index): after each window of step i.
    """
    steps = job.params.steps
    sp = step_plan(job, device)
    for i in range(start_step, steps):
        pred = torch.zeros_like(latents)
        for win in job.windows:
            if should_cancel and should_cancel():
                raise CancelledError("cancelled", hint=f"{i} of {steps} steps were completed")
            place_window(pred, win, window_step(dit, job, cond, latents, win, i, sp, model_dtype=model_dtype), i, sp)
            if on_window_done:
                on_window_done(i, win.index)
        latents = pred
        if callback_on_step_end:
            callback_on_step_end(i, latents)
    return latents
