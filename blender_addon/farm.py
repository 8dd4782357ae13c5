"""Sending jobs to the shot farm (docs/scale.md) instead of the local backend, without bpy and without ray.

Blender never imports ray: it runs the backend's own CLI (`stableavatar farm submit|status --follow|cancel
--json`) as subprocesses, each on a thread with a deadline, and turns their JSON lines into the worker's job
events (progress, done, error, cancelled; a `shot` line becomes `accepted`), so job rows move exactly as they do
for the local backend (`rows.apply`). Paths cross a `PathMap`: the shared jobs folder as this machine sees it and
as the cluster's nodes see it.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import threading
from dataclasses import dataclass

from . import contract

SUBMIT_TIMEOUT_S = 180.0   # connecting to the cluster + creating runners
CANCEL_TIMEOUT_S = 90.0
PATH_FIELDS = ("job_dir", "frames_dir", "video", "manifest", "path", "traceback")
_ids = itertools.count(1)


@dataclass(frozen=True)
class PathMap:
    """The shared jobs folder here (`local`) and on the nodes (`node`); empty node: the same path."""
    local: str
    node: str = ""

    @staticmethod
    def _swap(path: str, src: str, dst: str) -> str:
        if not (path and src and dst):
            return path
        p, root = path.replace("\\", "/"), src.replace("\\", "/").rstrip("/")
        if p == root:
            return dst
        return dst.rstrip("/\\") + p[len(root):] if p.startswith(root + "/") else path

    def to_node(self, path: str) -> str:
        return self._swap(path, self.local, self.node)

    def to_local(self, path: str) -> str:
        return self._swap(path, self.node, self.local)


def shot_entry(job_id: str, job_dir: str, request: dict, paths: PathMap) -> dict:
    """One SHOTS.json entry (contract.SHOT) from a row's stored request, with node paths."""
    return {"id": job_id, "job_dir": paths.to_node(job_dir), "image": paths.to_node(request["image"]),
            "audio": paths.to_node(request["audio"]),
            # as first requested (a seed of -1 stays -1), so a resubmitted folder is the same request and resumes
            "params": request.get("params_requested", request.get("params")) or {},
            "client": request.get("client")}


def job_event(line: dict, paths: PathMap) -> dict | None:
    """The worker-style event for one `farm --json` line (None for lines that move no row)."""
    kind = line.get("type")
    if kind == "shot":
        if line.get("state") not in ("queued", "running"):
            return None  # the outcome comes as its own done / error / cancelled line
        return {"type": "accepted", "id": line.get("id"), "job_dir": paths.to_local(line.get("job_dir") or ""),
                "position": 0 if line["state"] == "running" else 1, "resumed": (line.get("attempt") or 0) > 1,
                "from_step": None, "_farm": True}
    if kind not in ("progress", "done", "error", "cancelled"):
        return None
    ev = dict(line, _farm=True)
    for k in PATH_FIELDS:
        if isinstance(ev.get(k), str):
            ev[k] = paths.to_local(ev[k])
    return ev


class FarmClient:
    """The farm as seen from Blender. Every result lands on `events` (the session's queue), marked `_farm`."""

    def __init__(self, python: str, address: str, engine_argv: list[str], paths: PathMap, events: queue.Queue,
                 work_dir: str):
        self.python, self.address, self.engine_argv, self.paths = python, address, engine_argv, paths
        self.events, self.work_dir = events, work_dir
        self.followers: dict[str, subprocess.Popen] = {}

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, "-u", "-m", "stableavatar", "farm", *args, "--address", self.address, "--json"]

    def _fail(self, ids, message: str, hint: str = "") -> None:
        for job_id in ids:
            self.events.put({"type": "error", "id": job_id, "category": "bad_input", "message": message,
                             "hint": hint or "check the farm address in the preferences (docs/scale.md)",
                             "_farm": True})

    def submit(self, shots: list[dict]) -> threading.Thread:
        """`farm submit` of `shots` (shot_entry dicts) on a thread, then follow the batch on another."""
        os.makedirs(self.work_dir, exist_ok=True)
        path = os.path.join(self.work_dir, f"shots-{os.getpid()}-{next(_ids)}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(shots, f)
        ids = [s["id"] for s in shots]

        def run():
            try:
                r = subprocess.run(self._cmd("submit", self.paths.to_node(path), *self.engine_argv),
                                   capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S, env=contract.clean_env())
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._fail(ids, f"farm submit failed: {exc}")
                return
            if r.returncode != 0:
                lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
                self._fail(ids, (lines[0] if lines else r.stderr.strip()[-300:] or "farm submit failed"),
                           lines[1][5:].strip() if len(lines) > 1 else "")
                return
            batch = json.loads(r.stdout.strip().splitlines()[-1])["batch"]
            self.events.put({"type": "farm_batch", "batch": batch, "ids": ids, "_farm": True})
            self.follow(batch)

        t = threading.Thread(target=run, name="farm-submit", daemon=True)
        t.start()
        return t

    def follow(self, batch: str) -> None:
        """Stream the batch's events until it finishes (a reader thread on `farm status --follow`)."""
        if batch in self.followers and self.followers[batch].poll() is None:
            return
        proc = subprocess.Popen(self._cmd("status", batch, "--follow"), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=contract.clean_env())
        self.followers[batch] = proc

        def read():
            for raw in proc.stdout:
                try:
                    ev = job_event(json.loads(raw), self.paths)
                except ValueError:
                    continue
                if ev is not None:
                    self.events.put(ev)
            proc.wait()
            self.events.put({"type": "farm_followed", "batch": batch, "returncode": proc.returncode, "_farm": True})

        threading.Thread(target=read, name=f"farm-follow-{batch}", daemon=True).start()

    def cancel(self, job_id: str) -> None:
        def run():
            try:
                subprocess.run(self._cmd("cancel", "--shot", job_id), capture_output=True, timeout=CANCEL_TIMEOUT_S,
                               env=contract.clean_env())
            except (OSError, subprocess.TimeoutExpired):
                pass  # the row keeps its deadline; the follower still reports the outcome

        threading.Thread(target=run, name="farm-cancel", daemon=True).start()

    def stop(self) -> None:
        for proc in self.followers.values():
            if proc.poll() is None:
                proc.terminate()
        self.followers.clear()
