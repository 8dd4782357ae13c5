"""One connection: a subprocess (ssh running `serve --stdio` on the remote) speaking JSON lines.

Two threads: one reads stdout lines, checks them against the contract and posts `("event", link, dict)` to the
owner's inbox; one copies stderr (ssh's own messages and the remote worker's log lines) to the log file and keeps
its tail. When the process ends the owner gets `("exit", link, returncode, stderr_tail)` after every event.
"""
from __future__ import annotations

import os
import queue
import subprocess
import threading

from .. import contract

STDERR_TAIL = 8000


class Link(contract.ChildProcess):
    def __init__(self, argv: list[str], log_path: str, inbox: queue.Queue):
        self.argv, self.log_path, self.inbox = argv, log_path, inbox
        self.proc: subprocess.Popen | None = None
        self.stderr_tail = ""
        self.bytes_in = self.bytes_out = 0  # protocol bytes each way (bench/remote_overhead.py)
        self._lock = threading.Lock()

    def start(self) -> "Link":
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=contract.clean_env(), **contract.detached())
        err = threading.Thread(target=self._copy_stderr, name="stableavatar-link-stderr", daemon=True)
        err.start()
        threading.Thread(target=self._read, args=(err,), name="stableavatar-link-reader", daemon=True).start()
        return self

    def _copy_stderr(self):
        with open(self.log_path, "ab") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                self.stderr_tail = (self.stderr_tail + line.decode("utf-8", "replace"))[-STDERR_TAIL:]

    def _read(self, err: threading.Thread):
        while True:
            raw = contract.read_line(self.proc.stdout)
            if raw is None:
                break
            if isinstance(raw, contract.LineTooLong):
                self.inbox.put(("event", self, {"type": "log", "message": f"a line of {raw.size} bytes was dropped",
                                                "reason": "over the line limit"}))
                continue
            if not raw.strip():
                continue
            self.bytes_in += len(raw) + 1
            try:
                event = contract.parse_event(raw)
            except contract.ContractError as exc:  # a stray line: kept visible, never raised
                event = {"type": "log", "message": raw.decode("utf-8", "replace").strip()[:500], "reason": exc.message}
            self.inbox.put(("event", self, event))
        code = self.proc.wait()
        err.join(5)
        self.inbox.put(("exit", self, code, self.stderr_tail))

    def send(self, op: str, **fields) -> bool:
        """Write one request (checked against the contract); False when the connection is gone."""
        data = contract.encode(contract.request(op, **fields))
        with self._lock:
            if not self.alive or self.proc.stdin.closed:
                return False
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                self.bytes_out += len(data)
                return True
            except (OSError, ValueError):
                return False

    def close_stdin(self):
        with self._lock:
            try:
                if self.proc is not None:
                    self.proc.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
