"""A backend on another machine, behind the interface of the local one (start, submit, cancel, stop, kill, alive,
argv, generation, returncode; events on a queue): what the add-on and `stableavatar remote` both drive.

One driver thread owns the connection and the jobs (jobs.py: inputs up before the submit, remote paths made
local, frames fetched as they are decoded, `done` only when every file is here and verified; with shared storage
only path translation). When the connection drops with jobs in flight (the remote worker sees EOF and checkpoints
them), it reconnects with back-off and gives each job to the new worker, where it resumes; setup failures (host
key, key, missing backend) end it at once with one line and a hint: `{"type": "exit", "message", "hint"}`.
While reconnecting it posts `{"type": "connection", "state": "reconnecting" | "connected", "message"}`.
"""
from __future__ import annotations

import itertools
import os
import queue
import subprocess
import threading
import time

from .. import contract
from ..contract import TRANSFER_OPS
from . import ssh
from .jobs import Jobs
from .link import Link
from .mirror import LinkLost

_generation = itertools.count(1)
REPLY_S = 120.0              # an answer to a transfer request takes longer: the link is stuck, drop it
REMOTE_KILL_S = 10.0
_REPLIES = {"stored", "chunk", "files"}


class RemoteBackend:
    def __init__(self, config, engine: contract.EngineSettings, log_path: str, events: queue.Queue):
        self.config, self.target, self.log_path, self.events = config, config.target(), log_path, events
        self.command = config.command.strip()
        self.argv = self.target.argv(ssh.remote_command(self.command, config.serve_args(engine)))
        self.pathmap = config.pathmap()
        self.generation = f"remote-{next(_generation)}"
        self.inbox: queue.Queue = queue.Queue()
        self.jobs = Jobs(self)                       # the driver thread's
        self.link: Link | None = None
        self.links = 0                               # connections made: the first, then reconnects
        self.info: dict | None = None                # the last `ready`
        self.returncode: int | None = None
        self.log_start = 0
        self.bytes = {"up": 0, "down": 0}            # file bytes moved
        self.ready = False
        self._refused: ssh.Failure | None = None     # the worker answered, but cannot serve remotely
        self._deferred: list = []
        self._outstanding = 0
        self._timers: list[tuple[float, str]] = []
        self._dropped_at, self._attempt = 0.0, 0
        self._stopping = threading.Event()
        self._done = threading.Event()

    # ---- the backend interface ----------------------------------------------------------------------------
    def start(self) -> "RemoteBackend":
        try:  # where this backend's part of the (appended) log begins, as for a local one
            self.log_start = os.path.getsize(self.log_path)
        except OSError:
            self.log_start = 0
        self._connect()
        threading.Thread(target=self._drive, name="stableavatar-remote", daemon=True).start()
        return self

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    @property
    def pid(self) -> int | None:
        return self.link.pid if self.link else None

    def submit(self, job_id: str, job_dir: str, image: str | None = None, audio: str | None = None,
               params: dict | None = None, client: dict | None = None) -> bool:
        request = {"image": image, "audio": audio, "params": params, "client": client} if image else None
        self.inbox.put(("submit", job_id, job_dir, request))
        return self.alive

    def cancel(self, job_id: str) -> bool:
        self.inbox.put(("cancel", job_id))
        return self.alive

    def stop(self, timeout: float = 5.0):
        """Shutdown (the remote worker checkpoints and exits), then wait; kill when it does not answer."""
        self._stopping.set()
        if self.link is not None:
            self.link.send("shutdown")
            self.link.close_stdin()
        if not self._done.wait(timeout):
            self.kill()
            self._done.wait(5.0)

    def kill(self):
        """Hard stop: the ssh process, and the remote worker by its pid over a second connection."""
        self._stopping.set()
        pid = (self.info or {}).get("pid")
        if isinstance(pid, int) and self.ready:
            threading.Thread(target=self._kill_remote, args=(pid,), daemon=True).start()
        if self.link is not None:
            self.link.kill()

    def _kill_remote(self, pid: int):
        try:
            subprocess.run(self.target.argv(f"kill -9 {pid}"), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=REMOTE_KILL_S, env=contract.clean_env())
        except (OSError, subprocess.SubprocessError):
            pass

    # ---- what Jobs uses -----------------------------------------------------------------------------------
    def post(self, event: dict):
        self.events.put({**event, "_client": self.generation})

    def send(self, op: str, **fields) -> bool:
        return self.link is not None and self.link.send(op, **fields)

    def request(self, op: str, **fields):
        """A transfer request; its answer comes in order (reply)."""
        if not self.send(op, **fields):
            raise LinkLost()
        self._outstanding += 1

    def reply(self) -> dict:
        """The next transfer answer. Other items wait for the driver (deferred, in order); a cancel is done now."""
        deadline = time.monotonic() + REPLY_S
        while True:
            try:
                item = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.link.kill()  # stuck: its exit follows
                raise LinkLost() from None
            if item[0] == "event" and item[1] is self.link and _is_reply(item[2]):
                self._outstanding -= 1
                return item[2]
            if item[0] == "cancel":
                self.jobs.cancel(item[1])
                continue
            self._deferred.append(item)
            if item[0] == "exit" and item[1] is self.link:
                raise LinkLost()

    def drain(self):
        """Answers still due from a transfer that failed half way must not be taken for the next one's."""
        while self._outstanding > 0:
            self.reply()

    def retry_later(self, job_id: str, delay: float):
        self._timers = sorted(self._timers + [(time.monotonic() + delay, job_id)])

    # ---- the driver ---------------------------------------------------------------------------------------
    def _connect(self):
        self.ready, self._outstanding, self.links = False, 0, self.links + 1
        self.link = Link(self.argv, self.log_path, self.inbox)
        try:
            self.link.start()
        except OSError as exc:  # no ssh program: the same path as any failed connection
            self.inbox.put(("exit", self.link, None, f"{self.argv[0]}: {exc.strerror or exc}"))

    def _next(self):
        if self._deferred:
            return self._deferred.pop(0)
        now = time.monotonic()
        if self._timers and self._timers[0][0] <= now:
            return ("retry", self._timers.pop(0)[1])
        try:
            return self.inbox.get(timeout=max(0.01, (self._timers[0][0] - now) if self._timers else 1.0))
        except queue.Empty:
            return None

    def _drive(self):
        try:
            while True:
                item = self._next()
                try:
                    if item is not None and self._handle(item):
                        break
                except LinkLost:
                    continue  # its exit is deferred: handled next
        except Exception as exc:  # noqa: BLE001 - a bug here must end in a message, not a silent thread
            self.kill()
            self.post({"type": "exit", "returncode": None, "log_tail": "", "category": "internal",
                       "message": f"the remote client failed: {type(exc).__name__}: {exc}",
                       "hint": "this is a bug; please report it with the backend log"})
        finally:
            self._done.set()

    def _handle(self, item) -> bool:
        kind = item[0]
        if kind == "submit":
            job = self.jobs.add(*item[1:])
            if self.ready:
                self.jobs.start(job)
        elif kind == "cancel":
            self.jobs.cancel(item[1])
        elif kind == "retry":
            job = self.jobs.by_id.get(item[1])
            if job is not None and self.ready:
                self.jobs.start(job)
        elif kind == "event" and item[1] is self.link:
            ev = item[2]
            if ev.get("type") == "ready":
                self._on_ready(ev)
            elif not _is_reply(ev):  # (an answer to a transfer that was given up is dropped)
                self.jobs.on_event(ev)
        elif kind == "exit" and item[1] is self.link:
            return self._on_exit(item[2], item[3])
        return False

    def _on_ready(self, ev: dict):
        self.info = ev
        ops = (ev.get("capabilities") or {}).get("ops") or []
        if not set(TRANSFER_OPS) <= set(ops) or not ev.get("jobs_root"):
            self._refused = ssh.Failure("not_backend", f"the backend on {self.target.label} is too old for remote "
                                        "use (it has no jobs root or file transfer)", "update the backend there to "
                                        "this add-on's version (docs/remote.md)", False)
            self._stopping.set()
            self.link.close_stdin()
            return
        self.ready = True
        self.post(ev)
        if self.links > 1:
            self.post({"type": "connection", "state": "connected", "message": f"reconnected to {self.target.label}"})
        self.jobs.connected()

    def _on_exit(self, returncode, stderr: str) -> bool:
        """The connection ended: reconnect (False), or end this backend with an exit event (True)."""
        was_ready, self.ready, self.returncode = self.ready, False, returncode
        exit_event = {"type": "exit", "returncode": returncode, "log_tail": stderr[-2000:]}
        if self._stopping.is_set() and self._refused is None:
            self.post(exit_event)
            return True
        failure = self._refused or ssh.classify(returncode, stderr, self.target, self.command, was_ready)
        if self.jobs and failure.retry and not self._stopping.is_set() and (was_ready or self.links > 1):
            if was_ready:
                self._dropped_at, self._attempt = time.monotonic(), 0
            self._attempt += 1
            delay = min(2.0 ** (self._attempt - 1), 30.0)
            if time.monotonic() + delay - self._dropped_at < self.config.reconnect_s:
                self.post({"type": "connection", "state": "reconnecting", "message":
                           f"{failure.message}; reconnecting in {delay:.0f} s (attempt {self._attempt})"})
                if self._stopping.wait(delay):
                    self.post(exit_event)
                    return True
                self._connect()
                return False
            failure = ssh.Failure(failure.kind, f"{failure.message}; gave up reconnecting after "
                                  f"{self.config.reconnect_s:.0f} s", "press Retry to resume the job", True)
        self.post({**exit_event, "category": "connection", "message": failure.message, "hint": failure.hint})
        return True


def _is_reply(ev: dict) -> bool:
    return ev.get("type") in _REPLIES or ev.get("type") == "error" and ev.get("op") in TRANSFER_OPS
