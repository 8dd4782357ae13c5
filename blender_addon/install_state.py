"""The state of the backend install, shared by the installer's operators (which change it) and the preferences
(which draw it). No bpy."""
import queue

STATE = {"proc": None, "phase": "", "package": "", "percent": 0.0, "result": "", "error": "", "log": "",
         "events": queue.Queue(), "t0": 0.0, "seconds": 0.0,
         "update_needed": ""}  # why the running backend should be updated (its version differs), from `ready`


def running() -> bool:
    return STATE["proc"] is not None and STATE["proc"].poll() is None
