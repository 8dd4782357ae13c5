"""The driver side of the farm: connect to a Ray cluster, hand a batch of shots to the manager, follow it,
cancel it. What `stableavatar farm` runs (farm/cli.py)."""
from __future__ import annotations

import logging
import os
import sys
import time

from ..errors import UserInputError

POLL_S = 0.25


def _ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("the farm needs Ray, which is not installed in this Python",
                             hint="pip install 'stableavatar-backend[farm]'") from None
    return ray


def connect(address: str | None, local_cpus: int | None = None):
    """Join the cluster at `address` (or $RAY_ADDRESS). Without one, `local_cpus` starts a private local
    cluster for this process (`farm run` only); otherwise it is an error."""
    ray = _ray()
    address = address or os.environ.get("RAY_ADDRESS")
    from .manager import NAMESPACE

    kw = dict(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
    if address is None and local_cpus is None:
        raise UserInputError("no Ray cluster given", hint="pass --address HOST:PORT (printed by `ray start --head`) "
                                                          "or set RAY_ADDRESS")
    if address is not None and address != "auto":
        _reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=local_cpus, **kw)
        else:
            kw.pop("include_dashboard")
            ray.init(address=address, **kw)
    except ConnectionError as exc:
        raise UserInputError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}",
                             hint="start it with `ray start --head` (docs/scale.md) or fix --address") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """ray.init retries an unreachable head for minutes: check the address first, with a deadline."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                             hint="start it with `ray start --head` (docs/scale.md), or fix --address "
                                  "(HOST:PORT, the port `ray start --head` printed)") from None


def manager(create: bool):
    ray = _ray()
    from .manager import NAME, NAMESPACE, FarmManager

    if create:
        return FarmManager.options(name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                                   max_concurrency=64).remote()
    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        raise UserInputError("no farm is running on this cluster",
                             hint="submit shots first with `stableavatar farm submit SHOTS.json`") from None


def default_actors(engine_settings: dict, devices_per_shot: int) -> int:
    """One runner per `devices_per_shot` GPUs of the cluster (CPU slots without GPUs)."""
    ray = _ray()
    res = ray.cluster_resources()
    gpu = (engine_settings.get("device") or "cuda") == "cuda"
    total = int(res.get("GPU", 0) if gpu else res.get("CPU", 1))
    if gpu and total < devices_per_shot:
        raise UserInputError(f"the cluster has {total} GPUs, fewer than the {devices_per_shot} one shot needs",
                             hint="join GPU nodes (docs/scale.md), lower --devices-per-shot, or use --device cpu")
    return max(1, total // devices_per_shot)


def submit(shots: list[dict], engine_settings: dict, devices_per_shot: int, actors: int | None) -> dict:
    ray = _ray()
    m = manager(create=True)
    actors = actors or default_actors(engine_settings, devices_per_shot)
    return ray.get(m.submit.remote(shots, engine_settings, devices_per_shot, actors), timeout=120)


def status(batch: str | None) -> dict:
    ray = _ray()
    return ray.get(manager(create=False).status.remote(batch), timeout=60)


def cancel(ids: list[str], batch: str | None) -> dict:
    ray = _ray()
    return ray.get(manager(create=False).cancel.remote(ids, batch), timeout=60)


def follow(batch: str, on_event, timeout_s: float | None = None) -> dict:
    """Call on_event(line) for each event of `batch` as it happens; return the summary when every shot has
    finished. Raises UserInputError after `timeout_s` (None: no limit) or when the batch is unknown."""
    ray = _ray()
    m = manager(create=False)
    cursor, deadline = 0, None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        ans = ray.get(m.follow.remote(batch, cursor), timeout=60)
        if ans.get("missing"):
            raise UserInputError(f"no batch {batch!r} on this farm", hint="`stableavatar farm status` lists them")
        for ev in ans["events"]:
            on_event(ev)
        cursor = ans["cursor"]
        if ans["summary"] is not None:
            return ans["summary"]
        if deadline is not None and time.monotonic() > deadline:
            raise UserInputError(f"batch {batch} did not finish within {timeout_s:.0f} s",
                                 hint="it goes on: `stableavatar farm status` follows it")
        time.sleep(POLL_S)


class Bars:
    """tqdm bars, one per shot, for people watching `farm run`."""

    def __init__(self):
        self.bars = {}

    def __call__(self, ev: dict) -> None:
        from tqdm import tqdm

        shot = ev.get("id")
        bar = self.bars.get(shot)
        if bar is None:
            bar = self.bars[shot] = tqdm(total=100, desc=str(shot)[:24], position=len(self.bars), file=sys.stderr,
                                         bar_format="{desc:<24} {percentage:3.0f}%|{bar:30}| {postfix}", leave=True)
        kind = ev["type"]
        if kind == "shot":
            bar.set_postfix_str(ev["state"] + (f" (attempt {ev['attempt']})" if ev["attempt"] > 1 else ""))
        elif kind == "progress":
            bar.n = int(100 * ev["fraction"])
            eta = f" eta {ev['eta_s']:.0f}s" if ev.get("eta_s") is not None else ""
            bar.set_postfix_str(f"{ev['phase']} step {ev['step']}/{ev['steps']}{eta}")
        elif kind == "done":
            bar.n = 100
            bar.set_postfix_str(f"done: {ev['frames']} frames")
        elif kind in ("error", "cancelled"):
            bar.set_postfix_str(f"{ev.get('category', 'cancelled')}: {ev.get('message', '')}"[:60])
        bar.refresh()

    def close(self):
        for bar in self.bars.values():
            bar.close()
