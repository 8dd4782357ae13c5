"""The farm's manager: a detached, named Ray actor that holds the shot queue and the pools of shot runners, so
`farm submit` can return at once and `farm status` / `farm cancel` work from any process that reaches the cluster.

Placement, restarts and retries are Ray's: runners are created with the resources of one shot (`num_gpus` =
devices per shot on GPUs, `num_cpus` on the CPU), `max_restarts` and `max_task_retries`. What is ours is the
FIFO hand-out of shots to free runners (an asyncio queue of actors) and the record of each shot.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import ray

from .. import contract
from ..contract import FINISHED_STATES
from .runner_actor import ShotRunner
from .shots import summary

NAME, NAMESPACE = "stableavatar-farm", "stableavatar"
RETRIES = 3            # restarts of a runner (and retries of its shot) after its process or node dies
PROGRESS_EVERY_S = 0.5  # progress lines kept per shot in the event log (the latest is always in the record)


class Pool:
    def __init__(self, key: str, make, size: int):
        self.key, self.make = key, make
        self.actors = [make() for _ in range(size)]
        self.free: asyncio.Queue = asyncio.Queue()
        for a in self.actors:
            self.free.put_nowait(a)

    def replace(self, dead):
        fresh = self.make()
        self.actors = [fresh if a is dead else a for a in self.actors]
        return fresh


@ray.remote(num_cpus=0)
class FarmManager:
    def __init__(self):
        self.shots: dict[str, dict] = {}          # id -> record
        self.batches: dict[str, list[str]] = {}   # batch -> shot ids in order
        self.events: dict[str, list[dict]] = {}   # batch -> event log (what --follow prints)
        self.pools: dict[str, Pool] = {}
        self.tasks: set = set()

    # ---- submitting -------------------------------------------------------------------------------------
    async def submit(self, shots: list[dict], engine_settings: dict, devices_per_shot: int, actors: int) -> dict:
        batch = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        pool = self._pool(engine_settings, devices_per_shot, actors)
        self.batches[batch], self.events[batch] = [], []
        active = [r for r in self.shots.values() if r["state"] not in FINISHED_STATES]
        busy = {r["job_dir"] for r in active} | {r["id"] for r in active}
        for shot in shots:
            shot_id = shot["id"]
            rec = {"id": shot_id, "batch": batch, "job_dir": shot["job_dir"], "state": "queued", "attempt": 0,
                   "pid": None, "node": None, "progress": None, "result": None, "actor": None,
                   "spec": shot, "logged_at": 0.0}
            self.shots[f"{batch}/{shot_id}"] = rec
            self.batches[batch].append(f"{batch}/{shot_id}")
            self._log(rec)
            if shot["job_dir"] in busy or shot_id in busy:
                self._finish(rec, contract.error_event(
                    "busy", f"shot {shot_id} ({shot['job_dir']}) is already queued or running on the farm",
                    id=shot_id, hint="wait for it, or cancel it with `stableavatar farm cancel`"))
                continue
            busy |= {shot["job_dir"], shot_id}
            task = asyncio.get_running_loop().create_task(self._run(rec, pool))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return {"batch": batch, "shots": [self.shots[k]["id"] for k in self.batches[batch]],
                "actors": len(pool.actors)}

    def _pool(self, engine_settings: dict, devices_per_shot: int, actors: int) -> Pool:
        key = json.dumps([engine_settings, devices_per_shot], sort_keys=True)
        pool = self.pools.get(key)
        if pool is not None and len(pool.actors) >= actors:
            return pool
        gpu = (engine_settings.get("device") or "cuda") == "cuda"
        options = {"num_gpus": devices_per_shot, "num_cpus": 1} if gpu else {"num_cpus": devices_per_shot}
        me = ray.get_runtime_context().current_actor
        make = lambda: ShotRunner.options(**options, max_restarts=RETRIES, max_task_retries=RETRIES,  # noqa: E731
                                          max_concurrency=2).remote(engine_settings, me)
        self.pools[key] = pool = Pool(key, make, actors)
        return pool

    async def _run(self, rec: dict, pool: Pool) -> None:
        actor = await pool.free.get()
        try:
            if rec["state"] != "queued":  # cancelled while waiting
                return
            rec["state"], rec["actor"] = "running", actor
            try:
                result = await actor.run.remote(rec["spec"])
            except ray.exceptions.RayActorError as exc:
                actor = pool.replace(actor)  # restarts used up: a fresh runner takes its place
                result = contract.error_event(
                    "device_lost", f"the shot's runner died {rec['attempt']} times ({type(exc).__name__})",
                    id=rec["id"], hint="its job folder keeps the checkpoint: submit the shot again to resume",
                    resumable=os.path.exists(os.path.join(rec["job_dir"], contract.JOB_FILES["state"])))
            except ray.exceptions.RayError as exc:
                result = contract.error_event("internal", f"{type(exc).__name__}: {exc}", id=rec["id"],
                                              hint="this is a bug; please report it")
            self._finish(rec, result)
        finally:
            rec["actor"] = None
            pool.free.put_nowait(actor)

    def _finish(self, rec: dict, result: dict) -> None:
        rec["result"] = result
        rec["state"] = {"done": "done", "cancelled": "cancelled"}.get(result.get("type"), "failed")
        self.events[rec["batch"]].append(result)
        self._log(rec)

    def _log(self, rec: dict) -> None:
        self.events[rec["batch"]].append(contract.event("shot", **{k: rec[k] for k in (
            "id", "batch", "state", "job_dir", "attempt", "pid", "node")}))

    # ---- what runners report ----------------------------------------------------------------------------
    def _latest(self, shot_id: str) -> dict | None:
        """The newest record of a shot id (at most one of them is active)."""
        return next((r for r in reversed(self.shots.values()) if r["id"] == shot_id), None)

    def report(self, msg: dict) -> None:
        rec = self._latest(msg.get("id"))
        if rec is None or rec["state"] in FINISHED_STATES:
            return
        if msg["type"] == "started":  # a (re)started runner took the shot
            rec["attempt"] += 1
            rec["pid"], rec["node"] = msg["pid"], msg["node"]
            self._log(rec)
            return
        last = rec["progress"]
        if last is not None and msg.get("fraction", 0) < last.get("fraction", 0):
            return  # reports from one runner may overtake each other
        rec["progress"] = msg
        now = time.monotonic()
        if last is None or last.get("phase") != msg.get("phase") or now - rec["logged_at"] >= PROGRESS_EVERY_S:
            rec["logged_at"] = now
            self.events[rec["batch"]].append(msg)

    # ---- asking and cancelling ----------------------------------------------------------------------------
    def status(self, batch: str | None = None) -> dict:
        batches = [batch] if batch else list(self.batches)
        missing = [b for b in batches if b not in self.batches]
        records = [self._public(self.shots[i]) for b in batches if b in self.batches for i in self.batches[b]]
        return {"batches": [b for b in batches if b in self.batches], "missing": missing, "shots": records}

    def follow(self, batch: str, cursor: int) -> dict:
        """Events of `batch` from `cursor` on, the next cursor, and the summary once every shot has finished."""
        if batch not in self.batches:
            return {"missing": True}
        log = self.events[batch]
        records = [self.shots[i] for i in self.batches[batch]]
        finished = all(r["state"] in FINISHED_STATES for r in records)
        return {"events": log[cursor:], "cursor": len(log),
                "summary": summary(batch, [self._public(r) for r in records]) if finished else None}

    def cancel(self, ids: list[str] | None = None, batch: str | None = None) -> dict:
        if batch:
            targets = [(self.shots[k]["id"], self.shots[k]) for k in self.batches.get(batch, [])]
        else:
            targets = [(i, self._latest(i)) for i in ids or []]
        out = {"cancelled": [], "cancelling": [], "finished": [], "unknown": [] if batch in self.batches or not batch
               else [batch]}
        for shot_id, rec in targets:
            if rec is None:
                out["unknown"].append(shot_id)
            elif rec["state"] == "queued":
                self._finish(rec, contract.event("cancelled", id=shot_id, reason="cancel", resumable=os.path.exists(
                    os.path.join(rec["job_dir"], contract.JOB_FILES["state"]))))
                out["cancelled"].append(shot_id)
            elif rec["state"] == "running" and rec["actor"] is not None:
                rec["actor"].cancel.remote(shot_id)
                out["cancelling"].append(shot_id)
            else:
                out["finished"].append(shot_id)
        return out

    @staticmethod
    def _public(rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k not in ("actor", "spec", "logged_at")}
