"""The client against the real backend, inside real Blender (the bpy-free core is tests/test_addon_core.py)."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import queue
import time

import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS
from blender_addon import contract
from blender_addon.client import BackendClient, backend_command

pytestmark = pytest.mark.blender


def _next(events, kind, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if ev.get("type") == kind:
            return ev
        assert ev.get("type") != "exit", f"backend exited: {ev}"
    raise AssertionError(f"no {kind} event")


def test_client_talks_to_the_real_backend(tmp_path):
    events = queue.Queue()
    argv = backend_command(BACKEND_PYTHON, contract.EngineSettings(checkpoints=str(CHECKPOINTS), device="cpu"),
                           log_dir=str(tmp_path))
    client = BackendClient(argv, str(tmp_path / "backend.log"), events, cwd=str(tmp_path)).start()
    try:
        ready = _next(events, "ready")
        assert ready["protocol"] == 1 and ready["weights"]["found"] and ready["device"] == "cpu"
        assert client.send("status")
        status = _next(events, "status")
        assert status["running"] is None and status["queue"] == []
        with pytest.raises(contract.ContractError, match="unknown op"):  # refused before it is sent
            client.send("no_such_op")
        client.proc.stdin.write(b'{"op": "no_such_op"}\n')  # the worker refuses it too, and keeps serving
        client.proc.stdin.flush()
        err = _next(events, "error")
        assert err["category"] == "bad_request"
        client.stop(timeout=30)
        exit_event = _next(events, "exit")
        assert exit_event["returncode"] == 0
        assert not client.alive and not client.send("status")
    finally:
        client.kill()
