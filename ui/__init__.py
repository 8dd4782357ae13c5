"""Blender UI classes: properties (props.py) and sequencer sidebar panels (panels.py)."""
