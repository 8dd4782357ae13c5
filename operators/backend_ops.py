"""Preferences buttons: Check Backend, Stop Backend, Download Weights (Install Backend: install_ops.py).

Install and Download are the only network use of the extension. They run only when Blender's online
access is allowed, say what they fetch before they start, run in a background process (Blender never
waits) and log to the extension's user folder.
"""
from __future__ import annotations

import os
import subprocess
import threading

import bpy

from ..blender_addon import contract, install, rows
from ..preferences import EXTENSION_VERSION, prefs
from . import backend_config, runtime

TASK = {"name": "", "proc": None}  # one install/download at a time


def online_refusal() -> str | None:
    if not bpy.app.online_access:
        return ("online access is disabled: allow it in Preferences > System > Network "
                "(or start Blender with --online-mode), then press the button again")
    return None


def _run_task(name: str, steps: list[list[str]], log: str):
    """Run commands one after another in a thread; report through the event queue (the tick shows it)."""
    def work():
        with open(log, "ab") as out:
            for argv in steps:
                out.write(("$ " + " ".join(argv) + "\n").encode())
                out.flush()
                try:
                    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=contract.clean_env())
                except OSError as exc:
                    runtime.SESSION.events.put({"type": "task", "message": f"{name} failed: {exc} (log: {log})"})
                    break
                TASK["proc"] = proc
                if proc.wait() != 0:
                    runtime.SESSION.events.put({"type": "task", "message":
                                                f"{name} failed (exit {proc.returncode}); see {log}"})
                    break
            else:
                runtime.SESSION.events.put({"type": "task", "message": f"{name} finished; press Check Backend"})
        TASK["name"], TASK["proc"] = "", None

    TASK["name"] = name
    runtime.ensure_timer()
    threading.Thread(target=work, name=f"stableavatar-{name}", daemon=True).start()


class _ConfirmDownload:
    what: tuple = ()

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self, width=640)

    def draw(self, context):
        col = self.layout.column(align=True)
        for line in self.what:
            col.label(text=line)

    def refuse(self) -> bool:
        reason = online_refusal() or (f"{TASK['name']} is already running" if TASK["name"] else None)
        if reason:
            self.report({"ERROR"}, reason)
        return bool(reason)


class STABLEAVATAR_OT_download_weights(_ConfirmDownload, bpy.types.Operator):
    """Download the official weights into the checkpoints folder (needs online access)"""
    bl_idname = "stableavatar.download_weights"
    bl_label = "Download Weights"
    what = install.DOWNLOAD_WHAT

    def execute(self, context):
        if self.refuse():
            return {"CANCELLED"}
        python = backend_config.backend_python()
        if not os.path.isfile(python):
            self.report({"ERROR"}, "no backend Python yet: press Install Backend or set Backend Python first")
            return {"CANCELLED"}
        target = backend_config.checkpoints_path()  # default: the data folder, shared and kept when the extension goes
        _run_task("download weights", install.download_steps(python, target),
                  os.path.join(backend_config.user_dir("logs"), "download.log"))
        self.report({"INFO"}, f"downloading weights to {target} in the background")
        return {"FINISHED"}


class STABLEAVATAR_OT_check_backend(bpy.types.Operator):
    """Start the backend and show what it finds: Python, torch, CUDA, GPU, free memory, weights"""
    bl_idname = "stableavatar.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        running = runtime.SESSION.client is not None and runtime.SESSION.client.alive
        try:
            runtime.ensure_client()
        except backend_config.BackendConfigError as exc:
            prefs().backend_report = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if running and runtime.SESSION.info is not None:
            prefs().backend_report = rows.format_ready(runtime.SESSION.info, EXTENSION_VERSION) + "\n(already running)"
        else:  # the tick counts the seconds of the cold start, then shows the ready report or why it failed
            prefs().backend_report = rows.starting_text(0)
        return {"FINISHED"}


class STABLEAVATAR_OT_stop_backend(bpy.types.Operator):
    """Stop the backend (running jobs are checkpointed and can be retried)"""
    bl_idname = "stableavatar.stop_backend"
    bl_label = "Stop Backend"

    def execute(self, context):
        runtime.stop_backend()
        return {"FINISHED"}


classes = (STABLEAVATAR_OT_download_weights, STABLEAVATAR_OT_check_backend, STABLEAVATAR_OT_stop_backend)
