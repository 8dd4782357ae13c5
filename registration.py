"""Registering the extension's classes, handlers and timer with Blender (the package re-exports these)."""
import atexit
import os

import bpy
from bpy.app.handlers import persistent

from . import preferences
from .operators import (animate, backend_ops, feedback, install_ops, job_ops, paths, runtime, session_ops,
                        still_render, takes, undo_guard)
from .ui import panels, presets, props, takes_panel

CLASSES = (preferences.classes + props.classes + animate.classes + job_ops.classes + backend_ops.classes
           + install_ops.classes + session_ops.classes + takes.classes + feedback.classes + presets.classes
           + panels.classes + takes_panel.classes)


def _passive() -> bool:
    """In the background Blender that renders a camera still the extension must not touch jobs."""
    return os.environ.get(still_render.CHILD_ENV) == "1"


@persistent
def _on_load_post(*_args):
    if _passive():
        return
    undo_guard.clear()
    runtime.reattach()
    runtime.ensure_timer()


@persistent
def _on_save_pre(filepath="", *_args):
    if _passive() or paths.SAVING_COPY[0] or not filepath:
        return
    for line in paths.relocate_for_save(filepath):
        feedback.notify(line)


@persistent
def _on_undo_post(*_args):
    if not _passive():
        undo_guard.restore()


def _at_exit():
    install_ops.stop_installer()
    still_render.stop_all()
    runtime.stop_backend(timeout=5.0, settle=False)


HANDLERS = (("load_post", _on_load_post), ("save_pre", _on_save_pre), ("undo_post", _on_undo_post),
            ("redo_post", _on_undo_post))


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.stableavatar = bpy.props.PointerProperty(type=props.STABLEAVATAR_PG_settings)
    for name, fn in HANDLERS:
        getattr(bpy.app.handlers, name).append(fn)
    feedback.register()
    atexit.register(_at_exit)
    if _passive():
        return
    runtime.ensure_timer()
    # enabled with a file already open: pick up its jobs now. At startup bpy.data is still restricted here and
    # load_post does it when the startup file loads. (A one-shot timer for this made bpy 4.5 hang at exit.)
    if isinstance(bpy.data, bpy.types.BlendData):
        runtime.reattach()


def unregister():
    runtime.remove_timer()
    _at_exit()
    atexit.unregister(_at_exit)
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn in handlers:
            handlers.remove(fn)
    feedback.unregister()
    del bpy.types.Scene.stableavatar
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
