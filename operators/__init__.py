"""Blender operators and the job runtime (the timer tick that is the only writer of job data)."""
