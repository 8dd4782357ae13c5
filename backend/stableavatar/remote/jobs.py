"""The jobs a RemoteBackend serves: where each one's folder is on both sides, how it is sent (inputs first), and
what every event of the remote worker does to it (paths made local, frames fetched as they are decoded, `done`
held back until every file is here and verified).

`Jobs` runs on the backend's driver thread and reaches the connection only through the backend: `request`
(a transfer request, answered in order by `reply`), `drain`, `send` (a plain request), `post` (an event for the
backend's user), `ready`, `retry_later`.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass

from .. import contract
from ..contract import JOB_FILES, input_name
from . import mirror

VIDEO = JOB_FILES["video"]
BUSY_RETRY_S = 120.0         # after a reconnect the dropped worker may hold the job's lock a little longer


def remote_name(local_job_dir: str) -> str:
    """The job folder's name under the remote jobs root: its local name plus a hash of where it lives, so two
    machines sharing one GPU box never meet in one folder, and a reopened .blend finds its folder again."""
    path = os.path.abspath(local_job_dir).rstrip("/\\")
    tag = hashlib.sha1(f"{socket.gethostname()}:{path}".encode()).hexdigest()[:8]
    return f"{os.path.basename(path)}-{tag}"


@dataclass
class RemoteJob:
    id: str
    local: str                      # the local job folder
    ref: str                        # the job folder as the remote worker is told (relative name or mapped path)
    request: dict | None            # image/audio/params/client until the remote accepted the job
    mapped: bool                    # shared storage: no copies
    remote_dir: str = ""            # absolute, from `accepted`
    frames_have: int = 0            # frames 0..n-1 are here, verified
    submitted: bool = False
    recovering: bool = False        # resubmitted after a reconnect
    busy_until: float = 0.0
    cancel: bool = False


class Jobs:
    def __init__(self, backend):
        self.b = backend
        self.by_id: dict[str, RemoteJob] = {}
        self.ended: set[str] = set()  # ids whose terminal event was posted: late events of theirs are dropped

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def add(self, job_id: str, job_dir: str, request: dict | None) -> RemoteJob:
        pm = self.b.pathmap
        local = os.path.abspath(job_dir)
        paths = [local] + ([request["image"], request["audio"]] if request else [])
        mapped = pm is not None and all(pm.to_remote(os.path.abspath(p)) for p in paths)
        job = RemoteJob(job_id, local, pm.to_remote(local) if mapped else remote_name(local), request, mapped)
        job.frames_have = mirror.local_frames(os.path.join(local, JOB_FILES["frames"]))
        self.by_id[job_id] = job
        self.ended.discard(job_id)
        return job

    def connected(self):
        """A connection is ready: every job not finished goes to it (submitted before, or waiting for it)."""
        for job in list(self.by_id.values()):
            job.recovering, job.busy_until = job.submitted, time.monotonic() + BUSY_RETRY_S
            self.start(job)

    def start(self, job: RemoteJob):
        """Send a job to the connected worker, inputs first. A job the remote already has is resubmitted by its
        folder (it resumes), or fetched when it finished while its results were still on their way."""
        if job.cancel:
            return self.terminal(job, {"type": "cancelled", "id": job.id, "resumable": job.submitted,
                                       "reason": "cancel"})
        self.b.drain()
        try:
            if job.request is None:
                state = self.remote_state(job)
                if state["finished"]:
                    return self.finish(job, state["frames"], state["video"])
                if not state["request"]:
                    job.request = request_from_mirror(job.local)
                    if job.request is None:
                        return self.fail(job, "bad_input", f"the remote has no job folder {job.ref} and "
                                         f"{job.local} holds no job.json to send again", "animate the strip again")
            if job.request is None:
                self.b.send("submit", id=job.id, job_dir=job.ref)
            else:
                req = dict(job.request)
                for kind in ("image", "audio"):
                    req[kind] = self.place_input(job, kind, req[kind])
                if job.cancel:
                    return self.terminal(job, {"type": "cancelled", "id": job.id, "resumable": False,
                                               "reason": "cancel"})
                self.b.send("submit", id=job.id, job_dir=job.ref, **{k: v for k, v in req.items() if v is not None})
            job.submitted = True
        except mirror.TransferError as exc:
            self.fail(job, exc.event.get("category", "internal"), str(exc), exc.event.get("hint"))

    def remote_state(self, job: RemoteJob) -> dict:
        """finished, frames, video, request: what the job folder on the remote holds."""
        if job.mapped:  # the same storage: look here
            names = set(os.listdir(job.local)) if os.path.isdir(job.local) else set()
            return {"finished": JOB_FILES["manifest"] in names, "video": VIDEO in names,
                    "request": JOB_FILES["request"] in names,
                    "frames": mirror.local_frames(os.path.join(job.local, JOB_FILES["frames"]))}
        self.b.request("files", job_dir=job.ref)
        ev = self.b.reply()
        if ev.get("type") != "files":
            return {"finished": False, "video": False, "request": False, "frames": 0}  # no such folder there
        return {"finished": ev["finished"], "video": VIDEO in ev["other"], "frames": len(ev["frames"]),
                "request": JOB_FILES["request"] in ev["other"]}

    def place_input(self, job: RemoteJob, kind: str, path: str) -> str:
        if job.mapped:
            return self.b.pathmap.to_remote(os.path.abspath(path))
        name = f"{JOB_FILES['inputs']}/{input_name(kind, os.path.splitext(path)[1])}"
        self.b.bytes["up"] += mirror.upload(self.b.request, self.b.reply, job.ref, path, name, lambda: job.cancel)
        return f"{job.ref}/{name}"

    def fetch(self, job: RemoteJob, names: list[str], fresh: bool = False):
        self.b.drain()
        items = [(n, os.path.join(job.local, *n.split("/"))) for n in names]
        self.b.bytes["down"] += mirror.download(self.b.request, self.b.reply, job.ref, items, fresh)

    def fetch_frames(self, job: RemoteJob, upto: int):
        if not job.mapped and upto > job.frames_have:
            self.fetch(job, [mirror.frame_name(i) for i in range(job.frames_have, upto)])
            job.frames_have = upto

    def finish(self, job: RemoteJob, frames: int, video: bool, event: dict | None = None):
        """Every result file here and verified (the manifest last: it marks a finished job folder), then done."""
        if not job.mapped:
            self.fetch_frames(job, frames)
            self.fetch(job, ([VIDEO] if video else []) + [JOB_FILES["manifest"]])
        self.terminal(job, {**(event or {}), "type": "done", "id": job.id, "job_dir": job.local,
                            "frames_dir": os.path.join(job.local, JOB_FILES["frames"]), "frames": frames,
                            "video": os.path.join(job.local, VIDEO) if video else None,
                            "manifest": os.path.join(job.local, JOB_FILES["manifest"])})

    def mirror_request(self, job: RemoteJob):
        """job.json here too, pointing at the inputs' local copies: the folder is the record on this side too."""
        self.fetch(job, [JOB_FILES["request"]], fresh=True)
        path = os.path.join(job.local, JOB_FILES["request"])
        try:
            with open(path, encoding="utf-8") as f:
                req = json.load(f)
            for kind in ("image", "audio"):
                req[kind] = self.local_path(job, req.get(kind))
            req["remote"] = {"host": self.b.target.label, "job_dir": job.remote_dir}
            mirror.write_json(path, req)
        except (OSError, ValueError, AttributeError):
            pass  # the worker's own copy arrived: still a valid record

    def local_path(self, job: RemoteJob, path):
        """A remote path of an event, as the local one."""
        if not isinstance(path, str) or not path:
            return path
        if job.remote_dir and (path == job.remote_dir or path.startswith(job.remote_dir + "/")):
            return os.path.join(job.local, *path[len(job.remote_dir) + 1:].split("/"))
        return (self.b.pathmap.to_local(path) if self.b.pathmap else None) or path

    def fail(self, job: RemoteJob, category: str, message: str, hint: str | None):
        self.terminal(job, contract.error_event(category, message, id=job.id, hint=hint))

    def terminal(self, job: RemoteJob, event: dict):
        self.by_id.pop(job.id, None)
        self.ended.add(job.id)
        self.b.post(event)

    def cancel(self, job_id: str):
        job = self.by_id.get(job_id)
        if job is None:
            return
        job.cancel = True
        if job.submitted and self.b.ready:
            self.b.send("cancel", id=job_id)
        elif not job.submitted and not self.b.ready:
            self.terminal(job, {"type": "cancelled", "id": job_id, "resumable": False, "reason": "cancel"})

    def on_event(self, ev: dict):
        """One event of the connected worker (not ready, not a transfer answer)."""
        job = self.by_id.get(ev.get("id")) if isinstance(ev.get("id"), str) else None
        if job is None:
            return None if ev.get("id") in self.ended else self.b.post(ev)
        try:
            self._job_event(job, ev)
        except mirror.TransferError as exc:  # its files cannot come back: stop it there, say why here
            self.b.send("cancel", id=job.id)
            self.fail(job, exc.event.get("category", "internal"), str(exc), exc.event.get("hint"))

    def _job_event(self, job: RemoteJob, ev: dict):
        kind = ev.get("type")
        if kind == "accepted":
            job.remote_dir, job.request, job.recovering, job.submitted = ev["job_dir"], None, False, True
            if not job.mapped:
                self.mirror_request(job)
            self.b.post({**ev, "job_dir": job.local})
        elif kind == "progress":
            self.b.post(ev)
            self.fetch_frames(job, ev.get("frames_written") or 0)
        elif kind == "preview":
            if not job.mapped:
                self.fetch(job, [JOB_FILES["preview"]], fresh=True)
            self.b.post({**ev, "path": self.local_path(job, ev["path"])})
        elif kind == "done":
            self.finish(job, ev["frames"], ev.get("video") is not None,
                        {k: self.local_path(job, v) for k, v in ev.items()})
        elif kind == "error" and ev.get("category") == "busy" and job.recovering and time.monotonic() < job.busy_until:
            self.b.retry_later(job.id, 2.0)  # the dropped worker is still stopping
        elif kind == "error":
            tb = ev.get("traceback")
            local_tb = self.local_path(job, tb)
            if tb and local_tb != tb and not job.mapped:
                try:
                    self.fetch(job, [tb[len(job.remote_dir) + 1:]], fresh=True)
                except (mirror.TransferError, mirror.LinkLost):
                    local_tb = f"{self.b.target.label}:{tb}"
            self.terminal(job, {**ev, "traceback": local_tb})
        elif kind == "cancelled":
            self.terminal(job, ev)
        else:
            self.b.post(ev)


def request_from_mirror(local: str) -> dict | None:
    """The submit that made a job, from its job.json here (the remote folder is gone): sent again as new."""
    try:
        with open(os.path.join(local, JOB_FILES["request"]), encoding="utf-8") as f:
            req = json.load(f)
        image, audio = req["image"], req["audio"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(image, str) and isinstance(audio, str) and os.path.isfile(image) and os.path.isfile(audio)):
        return None
    return {"image": image, "audio": audio, "params": req.get("params_requested") or req.get("params"),
            "client": req.get("client")}
