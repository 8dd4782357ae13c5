"""The parts of the Blender extension that do not need bpy.

Everything here imports without Blender (plain pytest can test it): the backend client, the job model,
the 25 fps -> scene fps mapping, the audio range maths. `compat` and `audio` are the exceptions: they
take bpy objects as arguments but never import bpy at module level.
"""
