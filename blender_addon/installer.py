"""The installer process: runs an install plan (`install.plan`) and reports on stdout as JSON lines. No bpy.

    python installer.py PLAN.json

Blender starts it with its own Python and reads its lines (`operators/install_ops.py`). It runs each step in
its own process group, logs everything to the plan's log, and reports `progress` (phase, package, percent),
then one of `done` (the new environment is in use), `failed` (the installer's own reason) or `cancelled`.
Its stdin is Blender's end of a pipe: a line `cancel`, or end of file (Blender quit or crashed), stops the step
running, removes the unfinished environment and ends the installer, so it never outlives Blender.
Only after the new environment imported torch and the backend does `current` point at it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

if __package__:
    from .install_progress import Progress
else:  # run as a script by path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from install_progress import Progress

_state = {"proc": None, "stop": False}


def emit(kind: str, **fields) -> None:
    sys.stdout.write(json.dumps({"type": kind, **fields}) + "\n")
    sys.stdout.flush()


def _watch_stdin() -> None:
    """A `cancel` line or end of file (the parent is gone): stop the running step."""
    for line in sys.stdin:
        if line.strip() == "cancel":
            break
    _state["stop"] = True
    proc = _state["proc"]
    if proc is not None and proc.poll() is None:
        _kill(proc)


def _kill(proc) -> None:
    try:
        if sys.platform == "win32":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_step(argv, env, log, progress: Progress) -> tuple[int, str]:
    """One step; its output goes to the log and the progress parser. Returns (exit code, its stdout)."""
    log.write(("$ " + " ".join(argv) + "\n").encode())
    log.flush()
    kw = {"start_new_session": True} if sys.platform != "win32" else {
        "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, **kw)
    _state["proc"] = proc
    if _state["stop"]:
        _kill(proc)
    out, last = [], 0.0
    for raw in proc.stdout:
        log.write(raw)
        line = raw.decode("utf-8", "replace")
        out.append(line)
        progress.feed(line)
        now = time.monotonic()
        if now - last > 0.25:  # a few lines a second are plenty for a progress bar
            emit("progress", **progress.as_dict())
            last = now
    code = proc.wait()
    log.flush()
    return code, "".join(out)


def main(plan_path: str) -> int:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP",
                                                            "VIRTUAL_ENV")}
    env.update(plan.get("env_vars") or {})
    threading.Thread(target=_watch_stdin, daemon=True).start()
    progress = Progress()
    os.makedirs(os.path.dirname(plan["log"]), exist_ok=True)
    t0 = time.monotonic()
    with open(plan["log"], "ab") as log:
        log.write(f"\n=== install {time.strftime('%Y-%m-%d %H:%M:%S')} into {plan['env']}\n".encode())
        verified = None
        for step in plan["steps"]:
            progress.step(step["phase"])
            emit("progress", **progress.as_dict())
            try:
                code, out = run_step(step["argv"], env, log, progress)
            except OSError as exc:
                code, out = 127, ""
                progress.errors.append(f"cannot run {step['argv'][0]}: {exc}")
            if _state["stop"]:
                _discard(plan["env"])
                emit("cancelled", seconds=round(time.monotonic() - t0, 1))
                return 130
            if code != 0:
                _discard(plan["env"])
                why = progress.reason() or (out.strip().splitlines() or [f"exit code {code}"])[-1][:400]
                emit("failed", phase=step["phase"], code=code, reason=why, log=plan["log"])
                return 1
            if step.get("verify"):
                verified = json.loads(out.strip().splitlines()[-1])
        _switch(plan)
        log.write(f"=== installed in {time.monotonic() - t0:.1f} s: {verified}\n".encode())
    emit("done", env=plan["env"], versions=verified, seconds=round(time.monotonic() - t0, 1))
    return 0


def _switch(plan: dict) -> None:
    """Point `current` at the new environment (atomically), then drop environments older than the previous one."""
    backend = plan["backend_dir"]
    pointer = os.path.join(backend, "current")
    tmp = pointer + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(plan["env"] + "\n")
        f.flush()
        os.fsync(f.fileno())
    previous = ""
    try:
        with open(pointer, encoding="utf-8") as f:
            previous = f.read().strip()
    except OSError:
        pass
    os.replace(tmp, pointer)
    envs = os.path.join(backend, "envs")
    keep = {os.path.normpath(plan["env"]), os.path.normpath(previous)}  # the previous one may still be running
    for name in os.listdir(envs):
        path = os.path.normpath(os.path.join(envs, name))
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _discard(env_dir: str) -> None:
    shutil.rmtree(env_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
