"""StableAvatar for Blender: animate a character still with a voice strip from the Video Sequencer.

Registration only. The model runs in a separate backend process (`python -m stableavatar serve --stdio`);
this extension never imports torch. Layout: blender_addon/ (no bpy: the contract, protocol client, job rows,
job folders, timing and audio maths, version shims), preferences.py, operators/ and ui/ (bpy classes).
"""
if __package__:  # Blender imports the extension as a package; a test runner may import this file on its own
    from .registration import register, unregister  # noqa: F401
