"""One job's windows spread over the ranks of a `distributed.Ranks` group, with the numbers of one process.

Within a denoising step every window's DiT forward reads only the state entering the step (sampler.window_step);
the overlap fusion that follows is a cheap elementwise pass that must run in window order, because window k
blends with window k-1's already fused result (sampler.place_window). So each step runs in rounds of `world`
windows: rank r steps window (round * world + r), the stepped latents (before fusion) are all-gathered, and every
rank fuses them in window order into its copy of the next state. The arithmetic of each window and of the
fusion is the one-process arithmetic on the same inputs, so the result is byte-identical to one process on the
same kind of device (tests/test_window_parallel.py; docs/scale.md has the cost model).

Rank 0 owns the job: it encodes the conditions, sends them with the state to the other ranks, reports progress,
checkpoints and decodes. The others hold only the DiT. A flag in every exchange carries cancel (rank 0) and
failure (any rank) so that all ranks leave a step together; a rank that dies fails the exchange on the others
(distributed.RankLostError), never hangs them past the collective deadline.
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
import torch

from . import sampler
from .distributed import Ranks
from .errors import CancelledError, StableAvatarError, describe
from .job import PreparedJob, plan_job
from .contract import GenerationParams

OK, CANCEL, FAILED = 0.0, 1.0, 2.0


class JobAborted(Exception):
    """A follower's view of a job that rank 0 cancelled or another rank failed: back to waiting for commands."""


def rounds(num_windows: int, world: int) -> list[list[int]]:
    """The windows of one step in rounds of `world`: rank r steps rounds[k][r] (when the last, partial round
    has one for it). Each rank gets floor or ceil(windows / world) windows per step."""
    return [list(range(s, min(s + world, num_windows))) for s in range(0, num_windows, world)]


# ---------------------------------------------------------------------------------------------- sharing a job
def share_job(ranks: Ranks, job: PreparedJob, cond: sampler.Conditioning, latents: torch.Tensor, start_step: int,
              attention: str) -> None:
    """Rank 0: send the job (parameters, wave, conditions, state) to the other ranks."""
    ranks.send({"op": "job", "params": job.params.to_dict(), "start": start_step, "attention": attention})
    ranks.broadcast_tensors([torch.from_numpy(np.ascontiguousarray(job.wave)), latents, cond.text["neg"],
                             cond.text["pos"], cond.clip, cond.y, *cond.audio], "the job's conditions")


def receive_job(ranks: Ranks, cmd: dict) -> tuple[PreparedJob, sampler.Conditioning, torch.Tensor]:
    """A follower: the job rank 0 shares (the same window plan from the same parameters and wave)."""
    wave, latents, neg, pos, clip, y, *audio = ranks.broadcast_tensors(None, "the job's conditions")
    job = plan_job(GenerationParams.from_dict(cmd["params"]), wave.cpu().numpy(), None)
    return job, sampler.Conditioning({"neg": neg, "pos": pos}, clip, y, audio), latents


# ---------------------------------------------------------------------------------------------- the steps
def denoise(ranks: Ranks, dit, job: PreparedJob, cond: sampler.Conditioning, latents: torch.Tensor,
            start_step: int = 0, *, device: torch.device, model_dtype: torch.dtype, attention: str = "native",
            callback_on_step_end: Callable[[int, torch.Tensor], None] | None = None,
            should_cancel: Callable[[], bool] | None = None,
            on_window_done: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Rank 0's sampler.denoise on all ranks (same arguments and result)."""
    ranks.ensure()  # a lost rank last time: a fresh set of followers
    share_job(ranks, job, cond, latents, start_step, attention)
    try:
        return run_steps(ranks, lambda: dit, job, cond, latents, start_step, device=device, model_dtype=model_dtype,
                         callback_on_step_end=callback_on_step_end, should_cancel=should_cancel,
                         on_window_done=on_window_done)
    except (StableAvatarError, JobAborted):
        raise  # every rank left the step together (or the group is marked broken)
    except BaseException:
        ranks.broken = True  # left in the middle of an exchange: the others cannot continue this group
        raise


def run_steps(ranks: Ranks, get_dit: Callable[[], object], job: PreparedJob, cond: sampler.Conditioning,
              latents: torch.Tensor, start_step: int, *, device: torch.device, model_dtype: torch.dtype,
              callback_on_step_end=None, should_cancel=None, on_window_done=None) -> torch.Tensor:
    """Every rank's loop. `get_dit()` is called at the first window this rank steps (a follower loads its DiT
    there, so a load failure is reported through the exchange like any other)."""
    steps, windows = job.params.steps, job.windows
    sp = sampler.step_plan(job, device)
    b, c, _, h, w = latents.shape
    slot = b * c * max(win.length for win in windows) * h * w
    dit = None
    for i in range(start_step, steps):
        pred = torch.zeros_like(latents)
        for rnd in rounds(len(windows), ranks.world):
            payload = torch.zeros(1 + slot, dtype=torch.float32, device=device)
            failure = None
            if ranks.rank == 0 and should_cancel and should_cancel():
                payload[0] = CANCEL
            elif ranks.rank < len(rnd):
                try:
                    dit = dit if dit is not None else get_dit()
                    z = sampler.window_step(dit, job, cond, latents, windows[rnd[ranks.rank]], i, sp,
                                            model_dtype=model_dtype)
                    payload[1:1 + z.numel()] = z.reshape(-1)
                except Exception as exc:  # noqa: BLE001 - told to every rank, raised on rank 0
                    failure = exc
                    payload[0] = FAILED
                    f = describe(exc)
                    ranks.put_text(f"failure/{ranks.rank}", json.dumps({"category": f.category, "message": f.message,
                                                                        "hint": f.hint}))
            gathered = ranks.all_gather(payload, f"step {i + 1} of {steps}")
            flags = [float(g[0]) for g in gathered]
            if any(flags):
                _leave_step(ranks, flags, failure, i, steps)
            for k, index in enumerate(rnd):  # fusion in window order, on every rank
                win = windows[index]
                z = gathered[k][1:1 + b * c * win.length * h * w].view(b, c, win.length, h, w)
                sampler.place_window(pred, win, z, i, sp)
                if on_window_done:
                    on_window_done(i, index)
        latents = pred
        if callback_on_step_end:
            callback_on_step_end(i, latents)
    return latents


def _leave_step(ranks: Ranks, flags: list[float], own: BaseException | None, i: int, steps: int):
    """Every rank saw the same flags: rank 0 raises what stopped the step, the others abort the job."""
    if ranks.rank != 0:
        raise JobAborted()
    if flags[0] == CANCEL:
        raise CancelledError("cancelled", hint=f"{i} of {steps} steps were completed")
    if own is not None:
        raise own
    r = next(k for k, f in enumerate(flags) if f == FAILED)
    told = json.loads(ranks.get_text(f"failure/{r}") or "{}")
    err = StableAvatarError(f"rank {r}: {told.get('message', 'failed')}", hint=told.get("hint"))
    err.category = told.get("category", "internal")
    raise err
