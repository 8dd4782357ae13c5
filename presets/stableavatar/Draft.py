import bpy
settings = (getattr(bpy.context, 'sequencer_scene', None) or bpy.context.scene).stableavatar

settings.steps = 10
settings.resolution = '512x512'
settings.width = 512
settings.height = 512
settings.shift = 5.0
settings.overlap = 5
settings.overlap_weights = 'uniform'
settings.text_scale = 3.0
settings.audio_scale = 5.0
settings.guidance = 'official'
settings.compat = 'fixed'
settings.fit = 'crop'
