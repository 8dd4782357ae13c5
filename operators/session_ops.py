"""Sidebar buttons for the running backend: Release GPU (models reload with the next job)."""
import bpy

from . import runtime


class STABLEAVATAR_OT_release_gpu(bpy.types.Operator):
    """Free the GPU memory the backend's models hold; they load again with the next job (the backend stays up)"""
    bl_idname = "stableavatar.release_gpu"
    bl_label = "Release GPU"

    @classmethod
    def poll(cls, context):
        client = runtime.SESSION.client
        return client is not None and client.alive

    def execute(self, context):
        if not runtime.SESSION.client.send("release"):
            self.report({"ERROR"}, "the backend is not running")
            return {"CANCELLED"}
        self.report({"INFO"}, "releasing the GPU memory once the running job (if any) ends")
        return {"FINISHED"}


classes = (STABLEAVATAR_OT_release_gpu,)
