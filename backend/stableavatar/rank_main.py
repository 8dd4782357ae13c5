"""A follower rank (1..N-1) of a multi-device job: holds the DiT, steps the windows rank 0 gives it, until rank 0
says exit or is gone. Started by `distributed.Ranks.spawn` as `python -m stableavatar.rank_main`, or reached from
`stableavatar generate` when a launcher (torchrun) started this process with RANK > 0."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from . import settings, window_parallel
from .checkpoints import locate
from .cli_args import add_engine_args, engine_settings_from_args
from .distributed import RankLostError, Ranks
from .memory import resolve_memory_mode
from .speed import attention_context

log = logging.getLogger("stableavatar.rank")


def follower_engine(es, device: str):
    """An engine without the encoders and the VAE: a follower runs the DiT only. Memory modes apply per rank."""
    from .engine import Engine

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[es.dtype]
    mode = resolve_memory_mode(es.memory_mode, device, 480, 832, dtype)
    return Engine(locate(es.checkpoints), device, es.dtype, mode, es.transformer)


def follow(ranks: Ranks, es, parent_pid: int | None = None) -> int:
    """Serve rank 0's jobs until it sends exit (0) or is gone (1)."""
    engine = follower_engine(es, str(ranks.device))
    try:
        while True:
            cmd = ranks.receive(parent_pid)
            if cmd["op"] == "exit":
                return 0
            job, cond, latents = window_parallel.receive_job(ranks, cmd)
            with attention_context(cmd.get("attention")):
                dit = None

                def get_dit():
                    nonlocal dit
                    dit = engine.dit_for(job.params)
                    return dit

                try:
                    window_parallel.run_steps(ranks, lambda: _placed(engine, get_dit()), job, cond, latents,
                                              cmd["start"], device=ranks.device, model_dtype=engine.dtype)
                except window_parallel.JobAborted:
                    log.info("rank %d: job aborted by rank 0", ranks.rank)
                finally:
                    if dit is not None and engine.memory_mode == "model_offload":
                        dit.to("cpu")
            del job, cond, latents
    except RankLostError as exc:
        log.warning("rank %d: %s; exiting", ranks.rank, exc)
        return 1
    finally:
        ranks.close()


def _placed(engine, dit):
    """The DiT on this rank's device for the job (model_offload moves it in for the denoising phase)."""
    if engine.memory_mode == "model_offload" and engine.device.type == "cuda":
        dit.to(engine.device)
    return dit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stableavatar.rank_main", description=__doc__)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--store-port", type=int, required=True)
    p.add_argument("--parent", type=int, default=None, help="rank 0's pid: exit when it is gone")
    add_engine_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"rank {args.rank} %(levelname)s: %(message)s")
    es = settings.resolve(engine_settings_from_args(args))
    ranks = Ranks.join(args.rank, args.world, args.store_port, es.device)
    return follow(ranks, es, args.parent)


if __name__ == "__main__":
    sys.exit(main())
