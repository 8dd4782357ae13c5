"""A real local Ray cluster for the farm tests (`ray start --head`, CPU only, 2 slots, a small object store),
started in its own session so that the teardown ends exactly the processes Ray started (raylet, GCS, workers
share that session id), even when a test fails. Not a conftest: tests/test_farm.py and the Blender farm test
import it by name."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

# A loopback test cluster without Ray's token authentication: Ray turns it on by itself when a token file exists
# in ~/.ray (any earlier local `ray.init` writes one), and then its own `ray status` is refused. Every process of
# the test run (the farm CLI, Blender's farm client) inherits the setting through os.environ.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}


def has_ray(python: str) -> bool:
    r = subprocess.run([python, "-c", "import ray"], capture_output=True, timeout=120)
    return r.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getsid(int(d.name)) == sid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@contextlib.contextmanager
def local_cluster(python: str, log_path: Path, env: dict | None = None):
    """Yields the head's address HOST:PORT. `python` must have ray; its workers import stableavatar from it
    (or from PYTHONPATH in `env`)."""
    os.environ.update({k: v for k, v in RAY_ENV.items() if k == "RAY_AUTH_MODE"})
    env = {**(env or os.environ), **RAY_ENV}
    port = _free_port()
    temp = f"/tmp/rsa-{os.getpid()}-{port}"  # Ray's socket paths must stay short
    ray = [python, "-m", "ray.scripts.scripts"]
    with open(log_path, "wb") as log:
        head = subprocess.Popen([*ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                 "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
                                 "--disable-usage-stats", "--object-store-memory", "80000000", "--temp-dir", temp,
                                 "--block"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                r = subprocess.run([*ray, "status", "--address", address], env=env, capture_output=True, text=True,
                                   timeout=60)
                if r.returncode == 0 and "CPU" in r.stdout:
                    break
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray did not start: {log_path.read_text()[-2000:]}")
                time.sleep(1)
            yield address
        finally:
            head.terminate()
            try:
                head.wait(5)
            except subprocess.TimeoutExpired:
                pass
            for pid in _session_pids(head.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            head.wait()
