"""Logging for the service: never stdout (that carries the protocol), always stderr + a rotating file,
plus each job's own `log` file for the duration of the job."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import threading
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
LOG_FILE = "worker.log"


def default_log_dir() -> Path:
    base = os.environ.get("STABLEAVATAR_LOG_DIR")
    if base:
        return Path(base).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".local" / "state"
    return Path(state) / "stableavatar" / "logs"


def setup(log_dir: str | os.PathLike | None, level: int = logging.INFO, file_name: str = LOG_FILE,
          stream=None) -> Path:
    """Configure the root logger once: stderr + RotatingFileHandler(log_dir/file_name). Returns the log dir."""
    log_dir = Path(log_dir).expanduser() if log_dir else default_log_dir()
    root = logging.getLogger()
    root.setLevel(level)
    fmt = logging.Formatter(FORMAT)
    err = logging.StreamHandler(stream)  # None -> sys.stderr
    err.setFormatter(fmt)
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(err)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        rot = logging.handlers.RotatingFileHandler(log_dir / file_name, maxBytes=5 << 20, backupCount=3,
                                                   encoding="utf-8")
        rot.setFormatter(fmt)
        root.addHandler(rot)
    except OSError as exc:  # an unwritable log folder must not stop the work: stderr still gets everything
        logging.getLogger("stableavatar.service").warning("no log file in %s (%s); logging to stderr only",
                                                          log_dir, exc.strerror or exc)
    logging.captureWarnings(True)
    return log_dir


class _ThreadFilter(logging.Filter):
    """A job's log gets the records of the thread running it, not the reader thread's other requests."""

    def __init__(self, ident: int):
        super().__init__()
        self.ident = ident

    def filter(self, record):
        return record.thread == self.ident


@contextlib.contextmanager
def job_log(path: Path):
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
