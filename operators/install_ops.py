"""Install Backend / Update Backend, Cancel, Open Log: the installer process (`blender_addon/installer.py`) run
from Blender's own Python, its progress shown in the preferences while Blender stays usable.

The preferences' Backend Python is changed only when the installer says the new environment works. The
installer reads its stdin: closing it (Blender quits, the extension is disabled) stops it and removes the
unfinished environment.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import bpy
from bpy.props import BoolProperty

from ..blender_addon import contract, install, locations
from ..blender_addon.install_state import STATE, running
from ..preferences import EXTENSION_DIR, prefs
from . import feedback

INSTALLER = os.path.join(EXTENSION_DIR, "blender_addon", "installer.py")


def online_refusal() -> str | None:
    if not bpy.app.online_access:
        return ("online access is disabled: allow it in Preferences > System > Network "
                "(or start Blender with --online-mode), then press the button again")
    return None


def start() -> str | None:
    """Start the installer; returns why not (None when it started)."""
    if running():
        return "the backend install is already running"
    wheel = install.bundled_wheel(EXTENSION_DIR)
    if wheel is None:
        return (f"this extension has no backend wheel in {install.WHEEL_DIR}/: install a built extension zip "
                "(`make extension` builds one), or set Backend Python to an environment of your own")
    p = prefs()
    backend = locations.backend_dir()
    plan = install.plan(sys.executable, backend, wheel, p.torch_backend, p.install_args)
    path = install.write_plan(plan, os.path.join(backend, "plan.json"))
    events = STATE["events"] = queue.Queue()
    proc = subprocess.Popen([sys.executable, INSTALLER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=contract.clean_env(), cwd=backend)
    STATE.update(proc=proc, phase="starting", package="", percent=0.0, result="", error="", log=plan["log"],
                 t0=time.monotonic(), seconds=0.0)

    def read():
        for raw in proc.stdout:
            try:
                events.put(json.loads(raw))
            except ValueError:
                events.put({"type": "log", "line": raw.decode("utf-8", "replace")})
        events.put({"type": "exit", "code": proc.wait()})

    threading.Thread(target=read, name="stableavatar-installer", daemon=True).start()
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=0.2, persistent=True)
    return None


def poll() -> float | None:
    """Apply the installer's reports (a timer while it runs; tests call it directly)."""
    q = STATE["events"]
    while True:
        try:
            ev = q.get_nowait()
        except queue.Empty:
            break
        kind = ev.get("type")
        if kind == "progress":
            STATE.update(phase=ev.get("phase", ""), package=ev.get("package", ""), percent=ev.get("percent", 0.0))
        elif kind == "done":
            v = ev.get("versions") or {}
            STATE.update(percent=100.0, phase="done", seconds=ev.get("seconds", 0.0),
                         result=f"installed in {ev.get('seconds', 0):.0f} s: stableavatar {v.get('stableavatar')}, "
                                f"torch {v.get('torch')} ({'CUDA ' + str(v['cuda']) if v.get('cuda') else 'CPU'}"
                                f"{', GPU visible' if v.get('gpu') else ''}); press Check Backend")
            prefs().python = ""  # the new environment works: use it
            feedback.notify("StableAvatar backend " + STATE["result"])
        elif kind == "failed":
            STATE.update(phase="failed", error=f"install failed while {ev.get('phase')}: {ev.get('reason')}")
            feedback.notify("StableAvatar: " + STATE["error"])
        elif kind == "cancelled":
            STATE.update(phase="cancelled", error="install cancelled; nothing was changed")
        elif kind == "exit" and STATE["phase"] not in ("done", "failed", "cancelled"):
            STATE.update(phase="failed", error=f"the installer ended unexpectedly (exit {ev.get('code')})")
    _redraw()
    return 0.2 if running() or not q.empty() else None


def _redraw():
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def cancel() -> None:
    proc = STATE["proc"]
    if proc is not None and proc.poll() is None:
        try:
            proc.stdin.write(b"cancel\n")
            proc.stdin.flush()
        except OSError:
            pass


def stop_installer(timeout: float = 5.0) -> None:
    """Blender quits or the extension goes: end of file on its stdin stops the installer."""
    proc = STATE["proc"]
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


class STABLEAVATAR_OT_install_backend(bpy.types.Operator):
    """Install the backend shipped with this extension into a new environment (needs online access); the one in
    use stays until the new one works"""
    bl_idname = "stableavatar.install_backend"
    bl_label = "Install Backend"

    update: BoolProperty(name="Update", description="Update Backend: the same install, because the backend's "
                                                    "version differs from the extension's")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self, width=640)

    def draw(self, context):
        col = self.layout.column(align=True)
        for line in install.install_what():
            col.label(text=line)

    def execute(self, context):
        reason = online_refusal() or start()
        if reason:
            self.report({"ERROR"}, reason)
            return {"CANCELLED"}
        self.report({"INFO"}, "installing the backend in the background; progress in the preferences")
        return {"FINISHED"}


class STABLEAVATAR_OT_cancel_install(bpy.types.Operator):
    """Stop the backend install; the environment in use stays as it was"""
    bl_idname = "stableavatar.cancel_install"
    bl_label = "Cancel Install"

    @classmethod
    def poll(cls, context):
        return running()

    def execute(self, context):
        cancel()
        return {"FINISHED"}


class STABLEAVATAR_OT_open_install_log(bpy.types.Operator):
    """Open the install log"""
    bl_idname = "stableavatar.open_install_log"
    bl_label = "Open Log"

    def execute(self, context):
        log = STATE["log"] or os.path.join(locations.backend_dir(), "install.log")
        if not os.path.isfile(log):
            self.report({"ERROR"}, f"no install log yet ({log})")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=log)
        return {"FINISHED"}


classes = (STABLEAVATAR_OT_install_backend, STABLEAVATAR_OT_cancel_install, STABLEAVATAR_OT_open_install_log)
