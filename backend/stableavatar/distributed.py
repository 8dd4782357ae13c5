"""The ranks of one job on several devices (torch.distributed): how they start, how rank 0 talks to the others,
how tensors travel between them. The sampling itself is window_parallel.py.

Two ways to get ranks, the same code after that:

* `--devices N`: rank 0 is this process (the CLI, the worker, a farm actor); it hosts a TCPStore on loopback and
  spawns ranks 1..N-1 as `python -m stableavatar.rank_main` subprocesses. A rank that dies breaks the group;
  rank 0 notices at the next exchange, fails the job (category device_lost, its checkpoint kept) and spawns a
  fresh set before the next job.
* a launcher (`torchrun --nproc-per-node N [--nnodes ...] -m stableavatar generate ...`): every process joins
  from the usual RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT variables.

Commands (a job, exit) go from rank 0 through the store, so idle ranks wait without a collective deadline;
every collective has one (STABLEAVATAR_COLLECTIVE_TIMEOUT_S, default 1800 s: the first exchange of a job also
waits for the other ranks to load the DiT). Nothing here pickles: commands are JSON, tensors travel as bytes.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import StableAvatarError, UserInputError

log = logging.getLogger("stableavatar.distributed")
TIMEOUT_ENV = "STABLEAVATAR_COLLECTIVE_TIMEOUT_S"
IDLE_POLL_S = 5.0  # how often an idle rank checks that rank 0 is still there


class RankLostError(StableAvatarError):
    """Another rank of a multi-device job stopped answering; the job's last checkpoint is intact."""
    category = "device_lost"


def collective_timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))


def launched_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when a launcher such as torchrun started this process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))


def rank_device(device: str, local_rank: int) -> str:
    """The device of a rank: its own GPU (by local rank) on CUDA; every rank shares the CPU otherwise."""
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise UserInputError(f"rank {local_rank} has no GPU: {torch.cuda.device_count()} visible",
                                 hint="use --devices at most the number of GPUs (CUDA_VISIBLE_DEVICES)")
        return f"cuda:{local_rank}"
    return device


class Ranks:
    """This process's place in a group of `world` ranks. Rank 0 owns the job; the others follow its commands."""

    def __init__(self, rank: int, world: int, local_rank: int, device: str, store, *, followers=None,
                 spawn_argv: list[str] | None = None):
        self.rank, self.world, self.local_rank, self.device = rank, world, local_rank, torch.device(device)
        self.store = store
        self.followers: list[subprocess.Popen] = followers or []
        self.spawn_argv = spawn_argv  # how the followers were started (None: a launcher started them)
        self.broken = self.closed = False
        self._seq = 0    # commands sent / received
        self._xseq = 0   # tensor broadcasts, in the same order on every rank

    # ---- starting -----------------------------------------------------------------------------------------
    @classmethod
    def spawn(cls, n: int, device: str, follower_argv: list[str]) -> "Ranks":
        """Rank 0 of `n` in this process; ranks 1..n-1 as subprocesses running rank_main with `follower_argv`
        (the engine-setting flags)."""
        if device.startswith("cuda") and n > torch.cuda.device_count():
            raise UserInputError(f"--devices {n} asks for more GPUs than the {torch.cuda.device_count()} visible",
                                 hint="lower --devices, or check CUDA_VISIBLE_DEVICES")
        store = dist.TCPStore("127.0.0.1", 0, n, is_master=True, timeout=collective_timeout(),
                              wait_for_workers=False)
        env = dict(os.environ, TORCH_CPP_LOG_LEVEL=os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR"))
        env.pop("WORLD_SIZE", None)
        followers = [subprocess.Popen([sys.executable, "-m", "stableavatar.rank_main", "--rank", str(r),
                                       "--world", str(n), "--store-port", str(store.port), "--parent",
                                       str(os.getpid()), *follower_argv], env=env, stdin=subprocess.DEVNULL)
                     for r in range(1, n)]
        ranks = cls(0, n, 0, rank_device(device, 0), store, followers=followers, spawn_argv=follower_argv)
        atexit.register(ranks.close)
        try:
            ranks._await_followers()
            ranks._init_group()
        except BaseException:
            ranks.close()
            raise
        log.info("rank 0 of %d on %s; followers %s", n, ranks.device, [p.pid for p in followers])
        return ranks

    def _await_followers(self, timeout: float = 300.0) -> None:
        """Wait until every spawned rank has reached the store: a rank that dies while starting (a broken
        install, no GPU for it) fails here at once with its exit code instead of at the collective deadline."""
        deadline = time.monotonic() + timeout
        for r, p in enumerate(self.followers, start=1):
            while True:
                try:
                    self.store.wait([f"up/{r}"], timedelta(seconds=1))
                    break
                except RuntimeError:
                    pass
                if p.poll() is not None or time.monotonic() > deadline:
                    why = (f"exited with code {p.returncode}" if p.poll() is not None
                           else f"did not start in {timeout:.0f} s")
                    raise RankLostError(f"rank {r} of {self.world} {why}",
                                        hint="its error is above in this log; check that every GPU is visible "
                                             "(CUDA_VISIBLE_DEVICES) or use fewer --devices")

    @classmethod
    def join(cls, rank: int, world: int, store_port: int, device: str, host: str = "127.0.0.1") -> "Ranks":
        """A spawned follower joining rank 0's store."""
        store = dist.TCPStore(host, store_port, world, is_master=False, timeout=collective_timeout())
        ranks = cls(rank, world, rank, rank_device(device, rank), store)
        store.set(f"up/{rank}", "1")
        ranks._init_group()
        return ranks

    @classmethod
    def from_launcher(cls, device: str) -> "Ranks":
        """Join the group a launcher (torchrun) set up through the environment."""
        rank, world, local = launched_world()
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        # torchrun's agent already serves a store on MASTER_PORT; without an agent, rank 0 hosts it
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(host, port, world, is_master=rank == 0 and not agent, timeout=collective_timeout(),
                              wait_for_workers=False)
        ranks = cls(rank, world, local, rank_device(device, local), dist.PrefixStore("stableavatar", store))
        ranks._init_group()
        return ranks

    def _init_group(self) -> None:
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(backend, store=dist.PrefixStore("pg", self.store), rank=self.rank,
                                world_size=self.world, timeout=collective_timeout())

    def restart(self) -> None:
        """After a lost rank: stop the survivors and spawn a fresh set (spawned ranks only)."""
        if self.spawn_argv is None:
            raise RankLostError("a rank of this launcher-started job is gone",
                                hint="restart the launcher (torchrun) to continue from the last checkpoint")
        log.info("restarting the %d follower ranks", self.world - 1)
        self.close()
        fresh = Ranks.spawn(self.world, str(self.device), self.spawn_argv)
        atexit.unregister(fresh.close)
        self.__dict__.update(fresh.__dict__)

    def ensure(self) -> None:
        """Before a job: a fresh set of followers if one was lost (in an exchange, or since the last job)."""
        if self.broken or any(p.poll() is not None for p in self.followers):
            self.broken = True
            self.restart()

    # ---- commands (rank 0 -> the others, through the store) ----------------------------------------------
    def send(self, cmd: dict) -> None:
        self.store.set(f"cmd/{self._seq}", json.dumps(cmd))
        self._seq += 1

    def receive(self, parent_pid: int | None = None) -> dict:
        """The next command; raises RankLostError when rank 0 (or its store) is gone."""
        key = f"cmd/{self._seq}"
        while True:
            if parent_pid is not None and os.getppid() != parent_pid:
                raise RankLostError("rank 0 exited")
            try:
                self.store.wait([key], timedelta(seconds=IDLE_POLL_S))
                break
            except RuntimeError as exc:  # DistStoreError: a timeout (keep waiting) or a lost connection
                if "timeout" not in str(exc).lower():
                    raise RankLostError(f"rank 0 is gone ({_first_line(exc)})") from None
        self._seq += 1
        return json.loads(self.store.get(key))

    def put_text(self, key: str, text: str) -> None:
        self.store.set(f"text/{key}", text)

    def get_text(self, key: str) -> str:
        """A text another rank put, or "" when there is none (no wait)."""
        try:
            return self.store.get(f"text/{key}").decode() if self.store.check([f"text/{key}"]) else ""
        except RuntimeError:
            return ""

    # ---- collectives ------------------------------------------------------------------------------------
    def collective(self, what: str, fn, *args):
        """Run one collective; a failure means a rank is gone: the group is unusable from now on."""
        try:
            return fn(*args)
        except RuntimeError as exc:
            self.broken = True
            gone = self._exited(grace=2.0)
            who = f"rank {', '.join(map(str, gone))} exited" if gone else "a rank stopped answering"
            raise RankLostError(f"{who} during {what} ({_first_line(exc)})",
                                hint="the checkpoint of the last finished step is kept: submit the job again "
                                     "(or `stableavatar resume JOBDIR`) to continue from it") from None

    def _exited(self, grace: float) -> list[int]:
        """The ranks whose process has ended. A collective can fail a moment before a killed peer's exit is
        visible here, so wait up to `grace` seconds for one to show."""
        deadline = time.monotonic() + (grace if self.followers else 0.0)
        while True:
            gone = [i + 1 for i, p in enumerate(self.followers) if p.poll() is not None]
            if gone or time.monotonic() > deadline:
                return gone
            time.sleep(0.05)

    def broadcast_tensors(self, tensors: list[torch.Tensor] | None, what: str) -> list[torch.Tensor]:
        """Rank 0's `tensors` on every rank (on this rank's device, same dtypes and shapes; bytes, so any dtype
        goes through any backend). Other ranks pass None."""
        key = f"tensors/{self._xseq}"
        self._xseq += 1
        if self.rank == 0:
            header = [[str(t.dtype).removeprefix("torch."), list(t.shape)] for t in tensors]
            self.store.set(key, json.dumps(header))
        header = json.loads(self.collective(what, self.store.get, key))  # waits for rank 0's header
        out = []
        for k, (dtype, shape) in enumerate(header):
            dt = getattr(torch, dtype)
            if self.rank == 0:
                buf = tensors[k].detach().to(self.device).contiguous().view(-1).view(torch.uint8)
            else:
                numel = 1
                for s in shape:
                    numel *= s
                buf = torch.empty(numel * torch.empty((), dtype=dt).element_size(), dtype=torch.uint8,
                                  device=self.device)
            self.collective(what, dist.broadcast, buf, 0)
            out.append(buf.view(dt).view(shape))
        return out

    def all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        out = [torch.empty_like(tensor) for _ in range(self.world)]
        self.collective(what, dist.all_gather, out, tensor)
        return out

    # ---- stopping ---------------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Rank 0: tell the followers to exit and wait for them (killing stragglers); leave the group."""
        if self.closed:
            return
        self.closed = True
        if self.rank == 0 and not self.broken and self.world > 1:
            try:
                self.send({"op": "exit"})
            except RuntimeError:
                pass
        if self.rank == 0 and self.followers:
            deadline = time.monotonic() + timeout
            for p in self.followers:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.followers = []
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group may refuse a clean shutdown; the process moves on
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
