"""Registering the extension's classes, handlers and timer with Blender (the package re-exports these)."""
import atexit

import bpy
from bpy.app.handlers import persistent

from . import preferences
from .operators import animate, backend_ops, job_ops, runtime
from .ui import panels, props

CLASSES = (preferences.classes + props.classes + animate.classes + job_ops.classes + backend_ops.classes
           + panels.classes)


@persistent
def _on_load_post(*_args):
    runtime.reattach()
    runtime.ensure_timer()


def _reattach_once():
    """Enabling the extension with a file already open: pick up its jobs (bpy.data is off-limits in register)."""
    runtime.reattach()
    return None


def _at_exit():
    runtime.stop_backend(timeout=5.0, settle=False)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.stableavatar = bpy.props.PointerProperty(type=props.STABLEAVATAR_PG_settings)
    bpy.app.handlers.load_post.append(_on_load_post)
    atexit.register(_at_exit)
    runtime.ensure_timer()
    bpy.app.timers.register(_reattach_once, first_interval=0.5)


def unregister():
    if bpy.app.timers.is_registered(_reattach_once):
        bpy.app.timers.unregister(_reattach_once)
    runtime.remove_timer()
    runtime.stop_backend(timeout=5.0, settle=False)
    atexit.unregister(_at_exit)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    del bpy.types.Scene.stableavatar
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
